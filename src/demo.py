"""Demo competitions built from real images that ship with scikit-learn, one per competition format.

The images are scikit-learn's handwritten digits (`load_digits`: 1797 real 8x8 scans, no download),
upsampled and composed into small scenes, over crops of the two shipped photos
(`load_sample_images`) where a texture helps. The digits are split into a train pool and a test pool,
so test images show handwriting the model never saw. Each builder writes a competition folder in that
competition's real on-disk layout and the test answers apart, in the competition's submission format,
so a submission is scored by reading the solution with the same reader.

Everything is a pure function of the seed: the same seed gives the same bytes.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

from src.demo_drawing import (N_DIGITS, DigitPools, bright_color, digit_mask, digit_pools, paste, photo_crop,
                              pick_digit, place_digit, to_image)
from src.errors import PipelineError

DEFAULT_N_TRAIN = 1200
DEFAULT_N_TEST = 300
MANIFEST_NAME = "demo.json"
_MANIFEST_VERSION = 1

IMET_LABELS = tuple(f"digit::{digit}" for digit in range(N_DIGITS)) + ("tag::single", "tag::many")
# iMet-like long tail: digit d is drawn with weight 1 / (d + 1), so 0 is common and 9 rare.
IMET_DIGIT_WEIGHTS = tuple(1.0 / (digit + 1) for digit in range(N_DIGITS))

DEEPFASHION_ATTRIBUTES = (
    "red_digit", "green_digit", "blue_digit",
    "warm_background", "cool_background", "photo_background",
    "horizontal_stripes", "vertical_stripes",
    "border", "underline", "corner_dot",
    "corner_digit_top_left", "corner_digit_bottom_right",
    "bold", "noise",
)

_CELLS = ("Top_Left", "Top_Right", "Bottom_Left", "Bottom_Right")
CELEBA_ATTRIBUTES = (
    tuple(f"Has_Digit_{digit}" for digit in range(N_DIGITS))
    + tuple(f"{cell}_Occupied" for cell in _CELLS)
    + tuple(f"{cell}_Even" for cell in _CELLS)
    + tuple(f"{cell}_Large" for cell in _CELLS)
    + ("Top_Row_Full", "Bottom_Row_Full", "Left_Column_Full", "Right_Column_Full")
    + ("Single_Digit", "Many_Digits", "Has_Repeat", "Has_Prime", "All_Even")
    + ("Red_Background", "Blue_Background", "Photo_Background", "Striped_Background", "Framed")
    + ("Green_Digits", "Bold_Digits", "Blurry", "Noisy")
)
CELEBA_VALID_FRACTION = 0.1

FOLDER_MODES = ("RGB", "L", "RGBA", "CMYK")


@dataclass(frozen=True)
class DemoPaths:
    """Where a demo competition lives: the competition folder and the held-apart test answers."""

    root: Path
    answers_root: Path
    solution_files: tuple[Path, ...]


@dataclass(frozen=True)
class _DemoFormat:
    write: Callable[..., None]
    solution_names: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Public API


def list_formats() -> tuple[str, ...]:
    """Names accepted by `build_demo`, sorted."""
    return tuple(sorted(_FORMATS))


def build_demo(
    format_name: str,
    dest_root: str | Path,
    answers_root: str | Path | None = None,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    overwrite: bool = False,
) -> DemoPaths:
    """Build the demo competition `format_name` into `dest_root`, its test answers into `answers_root`.

    `answers_root` defaults to the sibling folder `<dest_root>-answers`. Both folders are built under
    temporary names and renamed into place at the end, so a crash never leaves a half folder.
    A complete build with the same settings is left as it is (no-op) unless `overwrite` is true;
    an existing folder that is not such a build is an error unless `overwrite` is true.
    Returns the two folders and the solution files.
    """
    if format_name not in _FORMATS:
        raise PipelineError(
            f"unknown demo format {format_name!r}; choose one of: {', '.join(list_formats())}"
        )
    fmt = _FORMATS[format_name]
    seed = _check_count("seed", seed, minimum=0)
    n_train = _check_count("n_train", DEFAULT_N_TRAIN if n_train is None else n_train, minimum=1)
    n_test = _check_count("n_test", DEFAULT_N_TEST if n_test is None else n_test, minimum=1)
    dest_root = Path(dest_root).absolute()
    answers_root = (
        dest_root.with_name(dest_root.name + "-answers") if answers_root is None else Path(answers_root).absolute()
    )
    _check_apart(dest_root, answers_root)

    manifest = {
        "format": format_name, "seed": seed, "n_train": n_train, "n_test": n_test,
        "version": _MANIFEST_VERSION,
    }
    paths = DemoPaths(
        root=dest_root,
        answers_root=answers_root,
        solution_files=tuple(answers_root / name for name in fmt.solution_names),
    )
    if not overwrite:
        found = _read_manifest(answers_root)
        if dest_root.is_dir() and found == manifest and all(p.is_file() for p in paths.solution_files):
            return paths
        _refuse_to_clobber(dest_root, answers_root, found)

    _build_atomically(fmt, manifest, dest_root, answers_root)
    return paths


# --------------------------------------------------------------------------------------------
# Building folders atomically


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise PipelineError(f"demo {name}={value!r} is not an integer >= {minimum}; pass one")
    return int(value)


def _check_apart(dest_root: Path, answers_root: Path) -> None:
    if dest_root == answers_root or dest_root in answers_root.parents or answers_root in dest_root.parents:
        raise PipelineError(
            f"demo answers folder {answers_root} overlaps the competition folder {dest_root}; "
            "put the answers beside it, not inside (the default is <dest_root>-answers)"
        )


def _read_manifest(answers_root: Path) -> dict | None:
    try:
        return json.loads((answers_root / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _refuse_to_clobber(dest_root: Path, answers_root: Path, found_manifest: dict | None) -> None:
    if dest_root.exists():
        raise PipelineError(
            f"{dest_root} already exists and is not a complete demo build with these settings; "
            "pass overwrite=True to replace it or choose another folder"
        )
    # Answers without a competition folder are left over from a crashed build only if they carry our manifest.
    if answers_root.exists() and found_manifest is None:
        raise PipelineError(
            f"{answers_root} already exists and is not a demo answers folder; "
            "pass overwrite=True to replace it or choose another answers_root"
        )


def _build_atomically(fmt: _DemoFormat, manifest: dict, dest_root: Path, answers_root: Path) -> None:
    with contextlib.ExitStack() as cleanup:
        tmp_dest = _temp_dir_beside(dest_root, "tmp", cleanup)
        tmp_answers = _temp_dir_beside(answers_root, "tmp", cleanup)
        fmt.write(tmp_dest, tmp_answers, seed=manifest["seed"], n_train=manifest["n_train"], n_test=manifest["n_test"])
        (tmp_answers / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        # The competition folder goes away first and comes back last: whenever it exists, it is complete.
        _move_aside(dest_root, cleanup)
        _move_aside(answers_root, cleanup)
        tmp_answers.rename(answers_root)
        tmp_dest.rename(dest_root)


def _temp_dir_beside(final: Path, tag: str, cleanup: contextlib.ExitStack) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{tag}-", dir=final.parent))
    cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
    return tmp


def _move_aside(path: Path, cleanup: contextlib.ExitStack) -> None:
    if not path.exists():
        return
    trash = _temp_dir_beside(path, "old", cleanup)
    path.rename(trash / path.name)


# --------------------------------------------------------------------------------------------
# Per-image random generators, files


def _image_rng(seed: int, format_salt: int, split: str, index: int) -> np.random.Generator:
    # One generator per image: image i is the same whatever n_train / n_test are.
    return np.random.default_rng([seed, format_salt, 0 if split == "train" else 1, index])


def _split_rng(seed: int, format_salt: int, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, format_salt, 2 if split == "train" else 3])


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jpg":
        image.save(path, format="JPEG", quality=92)
    else:
        image.save(path, format="PNG")


def _hex_names(rng: np.random.Generator, count: int, n_chars: int) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        name = rng.bytes((n_chars + 1) // 2).hex()[:n_chars]
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")


def _join_ids(ids) -> str:
    return " ".join(str(i) for i in sorted(ids))


# --------------------------------------------------------------------------------------------
# iMet Collection 2019: mosaics of 1-4 digits, labels = which digits appear (+ two count tags)

_IMET_SALT = 1
_IMET_SIZE = 64
_IMET_COUNT_PROBS = (0.35, 0.3, 0.2, 0.15)


def write_imet(comp_dir: Path, answers_dir: Path, seed: int, n_train: int, n_test: int) -> None:
    """Write an iMet-2019-layout demo into the empty `comp_dir`, the test answers into `answers_dir`.

    Layout: train.csv (id,attribute_ids), labels.csv (attribute_id,attribute_name),
    sample_submission.csv, train/<id>.png, test/<id>.png. Answers: solution.csv (id,attribute_ids).
    """
    pools = digit_pools(seed)
    ids = _hex_names(_split_rng(seed, _IMET_SALT, "train"), n_train + n_test, 16)
    rows = {"train": [], "test": []}
    for split, split_ids in (("train", ids[:n_train]), ("test", ids[n_train:])):
        for index, image_id in enumerate(split_ids):
            image, labels = _imet_image(pools, split, _image_rng(seed, _IMET_SALT, split, index))
            _save(image, comp_dir / split / f"{image_id}.png")
            rows[split].append(f"{image_id},{_join_ids(labels)}")
    header = "id,attribute_ids"
    _write_lines(comp_dir / "train.csv", [header] + sorted(rows["train"]))
    _write_lines(comp_dir / "labels.csv", ["attribute_id,attribute_name"] + [f"{i},{n}" for i, n in enumerate(IMET_LABELS)])
    _write_lines(comp_dir / "sample_submission.csv", [header] + [f"{i},0 1 2" for i in sorted(ids[n_train:])])
    _write_lines(answers_dir / "solution.csv", [header] + sorted(rows["test"]))


def _imet_image(pools: DigitPools, split: str, rng: np.random.Generator) -> tuple[Image.Image, list[int]]:
    weights = np.asarray(IMET_DIGIT_WEIGHTS) / sum(IMET_DIGIT_WEIGHTS)
    count = int(rng.choice(len(_IMET_COUNT_PROBS), p=_IMET_COUNT_PROBS)) + 1
    digits = rng.choice(N_DIGITS, size=count, replace=False, p=weights)
    cells = rng.permutation(4)[:count]
    canvas = photo_crop(rng, _IMET_SIZE, _IMET_SIZE) * 0.3
    cell = _IMET_SIZE // 2
    for digit, cell_index in zip(digits, cells):
        top, left = (cell_index // 2) * cell + 3, (cell_index % 2) * cell + 3
        place_digit(canvas, pick_digit(pools, split, int(digit), rng), cell - 6, top, left, bright_color(rng), rng)
    labels = [int(d) for d in digits]
    if count == 1:
        labels.append(IMET_LABELS.index("tag::single"))
    if count >= 3:
        labels.append(IMET_LABELS.index("tag::many"))
    return to_image(canvas), labels


# --------------------------------------------------------------------------------------------
# DeepFashion (category + attributes): category = the large digit, 15 visible style attributes

_DEEPFASHION_SALT = 2
_DEEPFASHION_SIZE = 64
_DIGIT_COLORS = {
    None: (0.95, 0.95, 0.95), "red_digit": (1.0, 0.2, 0.15),
    "green_digit": (0.2, 1.0, 0.25), "blue_digit": (0.3, 0.45, 1.0),
}
_BACKGROUNDS = {None: (0.12, 0.12, 0.12), "warm_background": (0.45, 0.18, 0.05), "cool_background": (0.05, 0.15, 0.45)}
_INDEPENDENT_DEEPFASHION_P = 0.25


def write_deepfashion(comp_dir: Path, answers_dir: Path, seed: int, n_train: int, n_test: int) -> None:
    """Write a DeepFashion-category-and-attribute-layout demo into `comp_dir`, answers into `answers_dir`.

    Layout: train/NNNNNN.jpg, test/NNNNNN.jpg, train.csv (file_path,category_label,attribute_label),
    test.csv (file_path). Answers: category.csv (file_path,category_label), attribute.csv
    (file_path,attribute_label). attribute_label is space-separated ids into DEEPFASHION_ATTRIBUTES,
    empty when none.
    """
    pools = digit_pools(seed)
    train_rows, category_rows, attribute_rows, test_paths = [], [], [], []
    for split, count, offset in (("train", n_train, 0), ("test", n_test, n_train)):
        for index in range(count):
            image, category, attributes = _deepfashion_image(pools, split, _image_rng(seed, _DEEPFASHION_SALT, split, index))
            file_path = f"{split}/{offset + index:06d}.jpg"
            _save(image, comp_dir / file_path)
            if split == "train":
                train_rows.append(f"{file_path},{category},{_join_ids(attributes)}")
            else:
                test_paths.append(file_path)
                category_rows.append(f"{file_path},{category}")
                attribute_rows.append(f"{file_path},{_join_ids(attributes)}")
    _write_lines(comp_dir / "train.csv", ["file_path,category_label,attribute_label"] + train_rows)
    _write_lines(comp_dir / "test.csv", ["file_path"] + test_paths)
    _write_lines(answers_dir / "category.csv", ["file_path,category_label"] + category_rows)
    _write_lines(answers_dir / "attribute.csv", ["file_path,attribute_label"] + attribute_rows)


def _deepfashion_image(pools: DigitPools, split: str, rng: np.random.Generator) -> tuple[Image.Image, int, list[int]]:
    size = _DEEPFASHION_SIZE
    color_name = (None, "red_digit", "green_digit", "blue_digit")[rng.choice(4, p=(0.4, 0.2, 0.2, 0.2))]
    background_name = (None, "warm_background", "cool_background")[rng.choice(3, p=(0.5, 0.25, 0.25))]
    independent = [name for name in DEEPFASHION_ATTRIBUTES if name not in _DIGIT_COLORS and name not in _BACKGROUNDS]
    present = {name for name in independent if rng.random() < _INDEPENDENT_DEEPFASHION_P}
    present |= {name for name in (color_name, background_name) if name}

    canvas = np.empty((size, size, 3), dtype=np.float32)
    canvas[:] = _BACKGROUNDS[background_name]
    if "photo_background" in present:
        canvas = 0.55 * canvas + 0.4 * photo_crop(rng, size, size)
    if "horizontal_stripes" in present:
        canvas[(np.arange(size) // 4) % 2 == 0, :] += 0.2
    if "vertical_stripes" in present:
        canvas[:, (np.arange(size) // 4) % 2 == 0] += 0.2
    if "border" in present:
        canvas[:2], canvas[-2:], canvas[:, :2], canvas[:, -2:] = 0.85, 0.85, 0.85, 0.85
    if "underline" in present:
        canvas[53:56, 16:48] = (0.9, 0.9, 0.3)
    if "corner_dot" in present:
        yy, xx = np.mgrid[:size, :size]
        canvas[(yy - 7) ** 2 + (xx - 56) ** 2 <= 16] = (1.0, 0.9, 0.1)

    category = int(rng.integers(N_DIGITS))
    place_digit(
        canvas, pick_digit(pools, split, category, rng), 38, 13, 13, _DIGIT_COLORS[color_name], rng,
        bold="bold" in present,
    )
    for name, top, left in (("corner_digit_top_left", 1, 1), ("corner_digit_bottom_right", 50, 50)):
        if name in present:
            small = pick_digit(pools, split, int(rng.integers(N_DIGITS)), rng)
            paste(canvas, digit_mask(small, 13), (0.95, 0.95, 0.95), top, left)
    if "noise" in present:
        canvas += rng.normal(0.0, 0.12, size=canvas.shape).astype(np.float32)
    return to_image(canvas), category, [DEEPFASHION_ATTRIBUTES.index(n) for n in present]


# --------------------------------------------------------------------------------------------
# CelebA attributes: a 2x2 grid of digits, 40 +1/-1 attributes about digits, layout and style

_CELEBA_SALT = 3
_CELEBA_SIZE = 64
_PRIMES = frozenset({2, 3, 5, 7})


def write_celeba(comp_dir: Path, answers_dir: Path, seed: int, n_train: int, n_test: int) -> None:
    """Write a CelebA-attributes-layout demo into `comp_dir`, the hidden test labels into `answers_dir`.

    Layout: img_align_celeba/NNNNNN.jpg (from 000001), list_attr_celeba.txt (count line, names line,
    then `<image> <v1> .. <v40>` right-aligned 1/-1 for partitions 0 and 1 only),
    list_eval_partition.txt (`<image> <0|1|2>`). `n_train` labelled images are split about 90/10 into
    partitions 0 (train) and 1 (valid); `n_test` images are partition 2. Answers: predictions.txt.
    """
    pools = digit_pools(seed)
    n_valid = int(round(n_train * CELEBA_VALID_FRACTION)) if n_train > 1 else 0
    attr_rows, partition_rows, answer_rows = [], [], []
    number = 0
    for split, count in (("train", n_train), ("test", n_test)):
        for index in range(count):
            number += 1
            name = f"{number:06d}.jpg"
            image, values = _celeba_image(pools, split, _image_rng(seed, _CELEBA_SALT, split, index))
            _save(image, comp_dir / "img_align_celeba" / name)
            if split == "train":
                partition = 0 if index < n_train - n_valid else 1
                # The real file right-aligns each value in two characters: "  1" after "-1".
                attr_rows.append(name + " " + " ".join(f"{v:2d}" for v in values))
            else:
                partition = 2
                answer_rows.append(name + " " + " ".join(str(v) for v in values))
            partition_rows.append(f"{name} {partition}")
    _write_lines(comp_dir / "list_attr_celeba.txt", [str(len(attr_rows)), " ".join(CELEBA_ATTRIBUTES)] + attr_rows)
    _write_lines(comp_dir / "list_eval_partition.txt", partition_rows)
    _write_lines(answers_dir / "predictions.txt", answer_rows)


def _celeba_image(pools: DigitPools, split: str, rng: np.random.Generator) -> tuple[Image.Image, list[int]]:
    size, cell = _CELEBA_SIZE, _CELEBA_SIZE // 2
    occupied = rng.random(4) < 0.55
    if not occupied.any():
        occupied[rng.integers(4)] = True
    cell_digits: list[int | None] = [None] * 4
    for index in np.flatnonzero(occupied):
        earlier = [d for d in cell_digits if d is not None]
        # A bias towards repeats keeps Has_Repeat from being too rare to learn.
        cell_digits[index] = int(rng.choice(earlier)) if earlier and rng.random() < 0.25 else int(rng.integers(N_DIGITS))
    style = {name: rng.random() < 0.25 for name in (
        "Photo_Background", "Striped_Background", "Framed", "Green_Digits", "Bold_Digits", "Blurry", "Noisy")}
    background = rng.choice(3, p=(0.5, 0.25, 0.25))
    style["Red_Background"], style["Blue_Background"] = background == 1, background == 2

    canvas = np.empty((size, size, 3), dtype=np.float32)
    canvas[:] = ((0.12, 0.12, 0.12), (0.45, 0.08, 0.08), (0.08, 0.12, 0.45))[background]
    if style["Photo_Background"]:
        canvas = 0.55 * canvas + 0.4 * photo_crop(rng, size, size)
    if style["Striped_Background"]:
        canvas[:, (np.arange(size) // 4) % 2 == 0] += 0.2
    if style["Framed"]:
        canvas[:2], canvas[-2:], canvas[:, :2], canvas[:, -2:] = 0.85, 0.85, 0.85, 0.85
    color = (0.25, 1.0, 0.3) if style["Green_Digits"] else (0.95, 0.95, 0.95)
    for index, digit in enumerate(cell_digits):
        if digit is not None:
            top, left = (index // 2) * cell + 3, (index % 2) * cell + 3
            place_digit(canvas, pick_digit(pools, split, digit, rng), cell - 6, top, left, color, rng,
                         bold=style["Bold_Digits"])
    image = to_image(canvas)
    if style["Blurry"]:
        image = image.filter(ImageFilter.GaussianBlur(1.2))
    if style["Noisy"]:
        noisy = np.asarray(image, dtype=np.float32) / 255.0 + rng.normal(0.0, 0.1, size=canvas.shape)
        image = to_image(noisy.astype(np.float32))

    present = [d for d in cell_digits if d is not None]
    truth: dict[str, bool] = {f"Has_Digit_{d}": d in present for d in range(N_DIGITS)}
    for cell_name, digit in zip(_CELLS, cell_digits):
        truth[f"{cell_name}_Occupied"] = digit is not None
        truth[f"{cell_name}_Even"] = digit is not None and digit % 2 == 0
        truth[f"{cell_name}_Large"] = digit is not None and digit >= 5
    truth["Top_Row_Full"] = bool(occupied[0] and occupied[1])
    truth["Bottom_Row_Full"] = bool(occupied[2] and occupied[3])
    truth["Left_Column_Full"] = bool(occupied[0] and occupied[2])
    truth["Right_Column_Full"] = bool(occupied[1] and occupied[3])
    truth["Single_Digit"] = len(present) == 1
    truth["Many_Digits"] = len(present) >= 3
    truth["Has_Repeat"] = len(set(present)) < len(present)
    truth["Has_Prime"] = bool(_PRIMES & set(present))
    truth["All_Even"] = all(d % 2 == 0 for d in present)
    truth.update({name: bool(value) for name, value in style.items()})
    return image, [1 if truth[name] else -1 for name in CELEBA_ATTRIBUTES]


# --------------------------------------------------------------------------------------------
# Folder per class: one digit per image, mixed sizes, modes (RGB, L, RGBA, CMYK) and file types

_FOLDER_SALT = 4
_FOLDER_MIN_SIDE, _FOLDER_MAX_SIDE = 24, 80


def write_folder(comp_dir: Path, answers_dir: Path, seed: int, n_train: int, n_test: int) -> None:
    """Write a folder-per-class demo into `comp_dir`, the test answers into `answers_dir`.

    Layout: train/<0..9>/<name>.{png,jpg}, test/<name>.{png,jpg} with mixed sizes (24..80 px a side)
    and modes RGB, L, RGBA (PNG) and CMYK (JPEG). Answers: solution.csv (image,label,probability).
    """
    pools = digit_pools(seed)
    names = _hex_names(_split_rng(seed, _FOLDER_SALT, "train"), n_train + n_test, 12)
    answer_rows = []
    for split, split_names in (("train", names[:n_train]), ("test", names[n_train:])):
        split_rng = _split_rng(seed, _FOLDER_SALT, split)
        # Cycled then shuffled: every class and every mode appears once there are 10 / 4 images.
        labels = split_rng.permutation(np.arange(len(split_names)) % N_DIGITS)
        modes = split_rng.permutation(np.arange(len(split_names)) % len(FOLDER_MODES))
        for index, (stem, label, mode_index) in enumerate(zip(split_names, labels, modes)):
            rng = _image_rng(seed, _FOLDER_SALT, split, index)
            image = _folder_image(pools, split, int(label), FOLDER_MODES[mode_index], rng)
            suffix = {"RGBA": ".png", "CMYK": ".jpg"}.get(image.mode) or (".png" if rng.random() < 0.5 else ".jpg")
            file_name = stem + suffix
            _save(image, comp_dir / split / (str(label) if split == "train" else "") / file_name)
            if split == "test":
                answer_rows.append(f"{file_name},{label},1.0")
    _write_lines(answers_dir / "solution.csv", ["image,label,probability"] + sorted(answer_rows))


def _folder_image(pools: DigitPools, split: str, label: int, mode: str, rng: np.random.Generator) -> Image.Image:
    width = int(rng.integers(_FOLDER_MIN_SIDE, _FOLDER_MAX_SIDE + 1))
    height = int(np.clip(round(width * rng.uniform(0.75, 1.33)), _FOLDER_MIN_SIDE, _FOLDER_MAX_SIDE))
    if rng.random() < 0.5:
        canvas = photo_crop(rng, height, width) * 0.45
    else:
        canvas = np.empty((height, width, 3), dtype=np.float32)
        canvas[:] = rng.uniform(0.0, 0.35, size=3)
    side = int(min(width, height) * 0.8)
    digit8 = pick_digit(pools, split, label, rng)
    mask = digit_mask(digit8, side) * rng.uniform(0.85, 1.0)
    shift = rng.integers(-2, 3, size=2)
    top, left = (height - side) // 2 + int(shift[0]), (width - side) // 2 + int(shift[1])
    paste(canvas, mask, bright_color(rng), top, left)
    image = to_image(canvas)
    if mode == "RGBA":
        # Half-transparent background, opaque strokes; the RGB under the alpha is the full picture.
        alpha = np.full((height, width), 150, dtype=np.uint8)
        alpha[np.asarray(image.convert("L")) > 150] = 255
        image = image.convert("RGBA")
        image.putalpha(Image.fromarray(alpha, "L"))
        return image
    return image.convert(mode)


_FORMATS: dict[str, _DemoFormat] = {
    "imet": _DemoFormat(write_imet, ("solution.csv",)),
    "deepfashion": _DemoFormat(write_deepfashion, ("category.csv", "attribute.csv")),
    "celeba": _DemoFormat(write_celeba, ("predictions.txt",)),
    "folder": _DemoFormat(write_folder, ("solution.csv",)),
}
