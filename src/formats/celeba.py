"""CelebA attributes: binary attributes, one logit each, scored by mean per-attribute accuracy.

Layout: `list_attr_celeba.txt` (line 1 a count, line 2 the attribute names, then rows
`<image> <v1> .. <vN>` of 1/-1 separated by one or more spaces; rows of test images may be missing),
`list_eval_partition.txt` (`<image> <0|1|2>`: 0 train, 1 valid, 2 test), images in `img_align_celeba/`.
Kaggle's copy of CelebA is read as well: `list_attr_celeba.csv` (header `image_id,<names>`, no count
line) and `list_eval_partition.csv` (header `image_id,partition`) stand in for a missing .txt, and
images in `img_align_celeba/img_align_celeba/` are found.
Submission: `predictions.txt`, one row per test image (partition 2, in that file's order):
`<image> <v1> .. <vN>` with 1/-1 for every attribute of the file, in the file's original order.
The course's new test set (released a week before the deadline, not the official partition 2):
`test_dir` names its folder (relative to the competition folder, or absolute); every image there that
the partition file does not list is predicted, rows in file-name order. `test_list` (a file of image
names, one per line) picks the images of `test_dir` to predict instead (still in file-name order).

Options: `attributes` trains on a subset by name; the other columns of predictions.txt then get
each attribute's majority value among the labelled training images (`other_attributes: majority`)
or -1 (`negative`). `fold_mode: official` trains on partition 0 and tunes on partition 1 (fold 0;
partition-0 rows are never held out); `kfold` makes data.n_folds stratified folds over 0 and 1.
"""

from __future__ import annotations

import difflib
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageFilter
from pydantic import BaseModel, ConfigDict, Field

from src import demo_drawing as drawing
from src.atomic import write_validated
from src.errors import PipelineError
from src.formats import register
from src.formats.base import (
    CompetitionFormat,
    HeadSpec,
    ImageTable,
    list_image_files,
    read_label_text,
    require_images,
    safe_child,
)
from src.objectives import ColumnAccuracy

HEAD = "attributes"
SUBMISSION_FILE = "predictions.txt"
TRAIN, VALID, TEST = 0, 1, 2
_VALUES = {"1": 1, "-1": 0}


class CelebAOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fold_mode: Literal["official", "kfold"] = "official"
    attributes: list[str] | None = Field(None, description="attribute names to train on; null = all of them")
    other_attributes: Literal["majority", "negative"] = Field(
        "majority", description="what predictions.txt holds for attributes outside `attributes`"
    )
    image_dir: str = "img_align_celeba"
    attr_file: str = "list_attr_celeba.txt"
    partition_file: str = "list_eval_partition.txt"
    test_dir: str | None = Field(
        None,
        description="folder of a new test set (not partition 2): every image there that "
        "the partition file does not list; null = partition 2",
    )
    test_list: str | None = Field(None, description="with test_dir: a file of the image names to predict, one per line")
    # What predicting needs of the attribute file, for a copy without it (the course package's notebook and Readme).
    attribute_names: list[str] | None = Field(
        None, description="every column of the attribute file, in its order; used only where that file is absent"
    )
    other_values: list[Literal[1, -1]] | None = Field(
        None, description="with attribute_names: the value predictions.txt writes for each column outside `attributes`"
    )


class _Labels:
    """list_attr_celeba.txt parsed: attribute names, image names, and a [n, N] 0/1 matrix (1 = attribute present)."""

    def __init__(self, names: list[str], images: list[str], values: np.ndarray, lines: list[str]):
        self.names, self.images, self.values, self.lines = names, images, values, lines
        self.row_of = {image: row for row, image in enumerate(images)}


@register
class CelebAFormat(CompetitionFormat):
    name = "celeba"
    main_metric = "mean_accuracy"
    Options = CelebAOptions
    # The course's zip: the PDF report, a folder with predictions.txt, the code, Readme.txt.
    course_package_names = {"submission": "predictions/{file}"}
    # The course asks for "not more than five A4 pages (Arial 10 font)".
    report_typography = ("arial", 10.0)
    demo_solution_names = (SUBMISSION_FILE,)
    demo_margin_over_chance = 0.05

    # --- files -------------------------------------------------------------------------------
    @property
    def _attr_path(self) -> Path:
        return _label_file(self.root / self.options.attr_file)

    @property
    def _partition_path(self) -> Path:
        return _label_file(self.root / self.options.partition_file)

    @cached_property
    def _partition(self) -> dict[str, tuple[int, str]]:
        """image -> (partition, line), in file order."""
        path = self._partition_path
        partition: dict[str, tuple[int, str]] = {}
        rows = _token_lines(path)
        if path.suffix.lower() == ".csv" and rows and rows[0][1][1:] == ["partition"]:
            rows = rows[1:]  # Kaggle's header: image_id,partition
        for line, tokens in rows:
            if len(tokens) != 2:
                raise PipelineError(
                    f"{path} line {line}: {len(tokens)} fields, expected 2 (<image> <0|1|2>); fix the row"
                )
            image, value = tokens
            if value not in ("0", "1", "2"):
                raise PipelineError(
                    f"{path} line {line}: partition '{value}' for {image}; use 0 (train), 1 (valid) or 2 (test)"
                )
            if image in partition:
                raise PipelineError(
                    f"{path} line {line}: duplicate image '{image}' (first on line {partition[image][1]}); "
                    "list each image once"
                )
            safe_child(self.root, image, path, line)
            partition[image] = (int(value), line)
        if not partition:
            raise PipelineError(f"{path}: no rows; expected `<image> <0|1|2>` per image")
        return partition

    @cached_property
    def _labels(self) -> _Labels:
        path = self._attr_path
        lines = iter(_token_lines(path))
        count = None
        if path.suffix.lower() == ".csv":  # Kaggle's copy: a header `image_id,<names>`, no count line
            names_line = next(lines, None)
            if names_line is None or len(names_line[1]) < 2:
                raise PipelineError(f"{path} line 1: expected the header image_id,<attribute names>; fix the header")
            names = names_line[1][1:]
        else:
            first = next(lines, None)
            if first is None or len(first[1]) != 1 or not first[1][0].isdigit():
                raise PipelineError(
                    f"{path} line 1: expected the image count alone on the first line "
                    f"(got {' '.join(first[1]) if first else 'nothing'}); fix the header"
                )
            count = int(first[1][0])
            names_line = next(lines, None)
            if names_line is None:
                raise PipelineError(f"{path} line 2: missing the line of attribute names")
            names = names_line[1]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise PipelineError(
                f"{path} line {names_line[0]}: attribute '{duplicated[0]}' named twice; names must be unique"
            )
        images, values, row_lines = [], [], []
        seen: dict[str, str] = {}
        for line, tokens in lines:
            if len(tokens) != len(names) + 1:
                raise PipelineError(
                    f"{path} line {line}: {len(tokens)} fields, expected {len(names) + 1} "
                    f"(<image> and {len(names)} values of 1/-1); fix the row"
                )
            image = tokens[0]
            if image in seen:
                raise PipelineError(
                    f"{path} line {line}: duplicate image '{image}' (first on line {seen[image]}); list each image once"
                )
            seen[image] = line
            values.append(_row_values(tokens[1:], names, f"{path} line {line}"))
            images.append(image)
            row_lines.append(line)
        if count is not None and count not in (len(images), len(self._partition)):
            raise PipelineError(f"{path} line 1: count {count} but {len(images)} image rows follow; fix the count")
        matrix = np.array(values, dtype=np.uint8).reshape(len(images), len(names))
        return _Labels(names, images, matrix, row_lines)

    @cached_property
    def _names(self) -> list[str]:
        """The attribute file's columns in order; from format_options.attribute_names where the file is absent."""
        if self._attr_path.exists() or self.options.attribute_names is None:
            return self._labels.names
        return list(self.options.attribute_names)

    def standalone_options(self) -> dict[str, Any]:
        """The columns and the values written for the ones not predicted: predicting then needs no attribute file."""
        other = [1 if value else -1 for value in self._other_values()]
        return {"attribute_names": self._names, "other_values": other}

    def test_input_files(self) -> list[Path]:
        listing = [] if self.options.test_dir is not None else [self._partition_path]
        return listing + list(self.read_test().paths)

    @cached_property
    def _columns(self) -> list[int]:
        """Columns of the attribute file the model is trained on (the chosen subset, in the chosen order)."""
        names = self._names
        chosen = self.options.attributes
        if chosen is None:
            return list(range(len(names)))
        if not chosen:
            raise PipelineError(
                "config format_options.attributes: empty list; name at least one attribute or use null for all"
            )
        for name in chosen:
            if name not in names:
                guess = difflib.get_close_matches(name, names, n=1)
                hint = f"did you mean '{guess[0]}'?" if guess else f"known: {', '.join(names)}"
                raise PipelineError(
                    f"config format_options.attributes: '{name}' is not an attribute of {self._attr_path}; {hint}"
                )
            if chosen.count(name) > 1:
                raise PipelineError(
                    f"config format_options.attributes: '{name}' is listed twice; list each attribute once"
                )
        return [names.index(name) for name in chosen]

    def all_attribute_names(self) -> list[str]:
        """Every attribute of the file, in its order (the columns of predictions.txt)."""
        return list(self._names)

    @classmethod
    def folds_scheme_of(cls, options: CelebAOptions) -> str:
        # The official split ignores K and the seed: its own file, never confused with K folds.
        return "official" if options.fold_mode == "official" else ""

    def heads(self) -> list[HeadSpec]:
        names = tuple(self._names[column] for column in self._columns)
        return [HeadSpec(HEAD, "multilabel", names, ColumnAccuracy())]

    def submission_names(self) -> list[str]:
        return [SUBMISSION_FILE]

    @cached_property
    def _image_folder(self) -> Path:
        folder = self.root / self.options.image_dir
        nested = folder / Path(self.options.image_dir).name
        return nested if nested.is_dir() else folder  # Kaggle's copy: img_align_celeba/img_align_celeba/

    def _image_path(self, image: str, source: Path, line: str) -> Path:
        return safe_child(self._image_folder, image, source, line)

    # --- reading -----------------------------------------------------------------------------
    def read_train(self) -> ImageTable:
        labels, partition_path = self._labels, self._partition_path
        for image, line in zip(labels.images, labels.lines):
            if image not in self._partition:
                raise PipelineError(
                    f"{self._attr_path} line {line}: image '{image}' is not in "
                    f"{partition_path.name}; add it there or remove the row"
                )
        ids, rows, split, lines = [], [], [], []
        for image, (part, line) in self._partition.items():
            if part == TEST:
                continue
            if image not in labels.row_of:
                raise PipelineError(
                    f"{partition_path} line {line}: image '{image}' (partition {part}) has no row in "
                    f"{self._attr_path.name}; add its labels or move it to partition 2"
                )
            ids.append(image)
            rows.append(labels.row_of[image])
            split.append(part)
            lines.append(line)
        if not ids:
            raise PipelineError(f"{partition_path}: no partition 0 or 1 images; nothing to train on")
        paths = [self._image_path(image, partition_path, line) for image, line in zip(ids, lines)]
        require_images(paths, partition_path, lines)
        targets = labels.values[np.asarray(rows)][:, self._columns]
        return ImageTable(ids, paths, {HEAD: targets}, split=np.asarray(split, dtype=np.int64))

    def read_test(self) -> ImageTable:
        if self.options.test_dir is not None:
            return ImageTable(
                list(self._test_folder_images), [self._test_folder / image for image in self._test_folder_images]
            )
        ids, lines = self._test_images()
        partition_path = self._partition_path
        paths = [self._image_path(image, partition_path, line) for image, line in zip(ids, lines)]
        require_images(paths, partition_path, lines)
        return ImageTable(ids, paths)

    def _test_images(self) -> tuple[list[str], list[str]]:
        """The test images in submission order, and where each is listed (partition lines, or none for a folder)."""
        if self.options.test_dir is not None:
            return list(self._test_folder_images), []
        test = [(image, line) for image, (part, line) in self._partition.items() if part == TEST]
        if not test:
            raise PipelineError(f"{self._partition_path}: no partition 2 (test) images; nothing to predict")
        return [image for image, _ in test], [line for _, line in test]

    @property
    def _test_source(self) -> str:
        """What fixes the test images and their order (for messages about predictions.txt)."""
        if self.options.test_dir is None:
            return self._partition_path.name
        return f"{self.options.test_list or self.options.test_dir} (file-name order)"

    @cached_property
    def _test_folder(self) -> Path:
        folder = self.root / self.options.test_dir
        if not folder.is_dir():
            raise PipelineError(
                f"config format_options.test_dir: {folder} is not a folder; point it at the new test "
                "images (relative to data.root, or absolute)"
            )
        return folder

    @cached_property
    def _test_folder_images(self) -> tuple[str, ...]:
        """test_dir's images in file-name order: those test_list names, else those the partition file does not list."""
        on_disk = [path.name for path in list_image_files(self._test_folder)]
        if self.options.test_list is not None:
            return tuple(sorted(self._listed_test_images(set(on_disk))))
        images = tuple(name for name in on_disk if name not in self._partition)
        if not images:
            where = "no images" if not on_disk else f"only images that {self._partition_path.name} lists"
            raise PipelineError(
                f"config format_options.test_dir: {self._test_folder} holds {where}; put the new test "
                "images there, or name them in format_options.test_list"
            )
        return images

    def _listed_test_images(self, on_disk: set[str]) -> list[str]:
        path = self.root / self.options.test_list
        if not path.is_file():
            raise PipelineError(
                f"config format_options.test_list: {path} not found; point it at a file of test image "
                "names (one per line), or set it to null"
            )
        names: dict[str, str] = {}
        for line, tokens in _token_lines(path):
            if len(tokens) != 1:
                raise PipelineError(f"{path} line {line}: {len(tokens)} fields; write one image name per line")
            name = tokens[0]
            if name in names:
                raise PipelineError(
                    f"{path} line {line}: '{name}' listed twice (first on line {names[name]}); list each image once"
                )
            if name not in on_disk:
                raise PipelineError(
                    f"{path} line {line}: image '{name}' is not in {self._test_folder}; "
                    "copy it there or remove the line"
                )
            names[name] = line
        if not names:
            raise PipelineError(f"{path}: no image names; list the test images to predict, one per line")
        return list(names)

    # --- folds -------------------------------------------------------------------------------
    def assign_folds(self, table: ImageTable, n_splits: int, seed: int) -> np.ndarray:
        """official: -1 (never held out) for partition 0, fold 0 for partition 1; kfold: stratified folds over both."""
        if self.options.fold_mode == "kfold":
            return super().assign_folds(table, n_splits, seed)
        if not np.any(table.split == VALID):
            raise PipelineError(
                f"{self._partition_path}: no partition 1 (valid) images for "
                "fold_mode official; add some or set format_options.fold_mode=kfold"
            )
        return np.where(table.split == VALID, 0, -1).astype(np.int64)

    # --- demo --------------------------------------------------------------------------------
    @classmethod
    def write_demo(cls, comp_dir: Path, answers_dir: Path, seed: int, n_train: int, n_test: int) -> None:
        """Write a CelebA-attributes-layout demo into `comp_dir`, the hidden test labels into `answers_dir`.

        Layout: img_align_celeba/NNNNNN.jpg (from 000001), list_attr_celeba.txt (count line, names line,
        then `<image> <v1> .. <v40>` right-aligned 1/-1 for partitions 0 and 1 only),
        list_eval_partition.txt (`<image> <0|1|2>`). `n_train` labelled images are split about 90/10 into
        partitions 0 (train) and 1 (valid); `n_test` images are partition 2. Answers: predictions.txt.
        """
        pools = drawing.digit_pools(seed)
        n_valid = int(round(n_train * DEMO_VALID_FRACTION)) if n_train > 1 else 0
        attr_rows, partition_rows, answer_rows = [], [], []
        number = 0
        for split, count in (("train", n_train), ("test", n_test)):
            for index in range(count):
                number += 1
                name = f"{number:06d}.jpg"
                image, values = _demo_image(pools, split, drawing.image_rng(seed, _DEMO_SALT, split, index))
                drawing.save_image(image, comp_dir / "img_align_celeba" / name)
                if split == "train":
                    partition = 0 if index < n_train - n_valid else 1
                    # The real file right-aligns each value in two characters: "  1" after "-1".
                    attr_rows.append(name + " " + " ".join(f"{v:2d}" for v in values))
                else:
                    partition = 2
                    answer_rows.append(name + " " + " ".join(str(v) for v in values))
                partition_rows.append(f"{name} {partition}")
        drawing.write_lines(
            comp_dir / "list_attr_celeba.txt", [str(len(attr_rows)), " ".join(DEMO_ATTRIBUTES)] + attr_rows
        )
        drawing.write_lines(comp_dir / "list_eval_partition.txt", partition_rows)
        drawing.write_lines(answers_dir / SUBMISSION_FILE, answer_rows)

    # --- submission --------------------------------------------------------------------------
    def _other_values(self) -> np.ndarray:
        """0/1 per attribute of the file for the columns the model does not predict."""
        if not self._attr_path.exists() and self.options.attribute_names is not None:
            saved = self.options.other_values or [-1] * len(self._names)
            if len(saved) != len(self._names):
                raise PipelineError(
                    f"config format_options.other_values: {len(saved)} values for {len(self._names)} attribute_names; "
                    "give one 1/-1 per attribute"
                )
            return (np.asarray(saved) > 0).astype(np.uint8)
        labels = self._labels
        if self.options.other_attributes == "negative":
            return np.zeros(len(labels.names), dtype=np.uint8)
        labelled = [
            labels.row_of[image]
            for image, (part, _) in self._partition.items()
            if part != TEST and image in labels.row_of
        ]
        share = labels.values[labelled].mean(axis=0) if labelled else np.zeros(len(labels.names))
        return (share > 0.5).astype(np.uint8)

    def write_submission(
        self, out_dir: Path, ids: list[str], labels: dict[str, Any], probs: dict[str, np.ndarray]
    ) -> list[Path]:
        predicted = np.asarray(labels[HEAD], dtype=bool)
        full = np.tile(self._other_values(), (len(ids), 1))
        full[:, self._columns] = predicted
        lines = [image + " " + " ".join("1" if value else "-1" for value in row) for image, row in zip(ids, full)]
        return write_validated({Path(out_dir) / SUBMISSION_FILE: "\n".join(lines) + "\n"}, self._read_predictions)

    def read_submission(self, files: list[Path]) -> tuple[list[str], dict[str, Any]]:
        path = Path(files[0])
        ids, values = self._read_predictions(path, path)
        return ids, {HEAD: values[:, self._columns].astype(bool)}

    def _read_predictions(self, path: Path, shown_as: Path) -> tuple[list[str], np.ndarray]:
        """Check a predictions.txt: the test images in submission order, one 1/-1 per attribute of the file."""
        names = self._names
        expected, _ = self._test_images()
        ids, values = [], []
        for line, tokens in _token_lines(path, shown_as):
            if len(tokens) != len(names) + 1:
                raise PipelineError(
                    f"{shown_as} line {line}: {len(tokens)} fields, expected {len(names) + 1} "
                    f"(<image> and a 1/-1 for each of the {len(names)} attributes)"
                )
            index = len(ids)
            if index >= len(expected):
                raise PipelineError(f"{shown_as} line {line}: more rows than the {len(expected)} test images")
            if tokens[0] != expected[index]:
                raise PipelineError(
                    f"{shown_as} line {line}: image '{tokens[0]}' where {self._test_source} has "
                    f"'{expected[index]}'; keep the test images and their order"
                )
            values.append(_row_values(tokens[1:], names, f"{shown_as} line {line}"))
            ids.append(tokens[0])
        if len(ids) != len(expected):
            raise PipelineError(
                f"{shown_as}: {len(ids)} rows for {len(expected)} test images; predict every test image"
            )
        return ids, np.array(values, dtype=np.uint8).reshape(len(ids), len(names))


def _row_values(tokens: list[str], names: list[str], where: str) -> list[int]:
    """A row's 1/-1 tokens (one per name) as 1/0; any other token is an error at `where` naming its column."""
    try:
        return [_VALUES[token] for token in tokens]
    except KeyError:
        column = next(i for i, token in enumerate(tokens) if token not in _VALUES)
        raise PipelineError(f"{where}: {names[column]} is '{tokens[column]}'; values must be 1 or -1") from None


def _label_file(path: Path) -> Path:
    """`path`, or its .csv sibling (Kaggle's copy of CelebA) when only that one exists."""
    csv_copy = path.with_suffix(".csv")
    return csv_copy if not path.exists() and csv_copy.is_file() else path


def _token_lines(path: Path, shown_as: Path | None = None) -> list[tuple[str, list[str]]]:
    """(1-based line number as text, tokens) of every non-blank line: split on commas in a .csv, else on
    runs of whitespace; BOM and CRLF accepted."""
    text = read_label_text(path, shown_as, kind="plain text")
    if path.suffix.lower() == ".csv":
        split = lambda line: [token.strip() for token in line.split(",")]  # noqa: E731
    else:
        split = str.split
    return [(str(number), split(line)) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


# --- demo: a 2x2 grid of digits, 40 +1/-1 attributes about digits, layout and style -------------------------

_CELLS = ("Top_Left", "Top_Right", "Bottom_Left", "Bottom_Right")
DEMO_ATTRIBUTES = (
    tuple(f"Has_Digit_{digit}" for digit in range(drawing.N_DIGITS))
    + tuple(f"{cell}_Occupied" for cell in _CELLS)
    + tuple(f"{cell}_Even" for cell in _CELLS)
    + tuple(f"{cell}_Large" for cell in _CELLS)
    + ("Top_Row_Full", "Bottom_Row_Full", "Left_Column_Full", "Right_Column_Full")
    + ("Single_Digit", "Many_Digits", "Has_Repeat", "Has_Prime", "All_Even")
    + ("Red_Background", "Blue_Background", "Photo_Background", "Striped_Background", "Framed")
    + ("Green_Digits", "Bold_Digits", "Blurry", "Noisy")
)
DEMO_VALID_FRACTION = 0.1
_DEMO_SALT = 3
_DEMO_SIZE = 64
_PRIMES = frozenset({2, 3, 5, 7})


def _demo_image(pools: drawing.DigitPools, split: str, rng: np.random.Generator) -> tuple[Image.Image, list[int]]:
    size, cell = _DEMO_SIZE, _DEMO_SIZE // 2
    occupied = rng.random(4) < 0.55
    if not occupied.any():
        occupied[rng.integers(4)] = True
    cell_digits: list[int | None] = [None] * 4
    for index in np.flatnonzero(occupied):
        earlier = [d for d in cell_digits if d is not None]
        # A bias towards repeats keeps Has_Repeat from being too rare to learn.
        repeat = earlier and rng.random() < 0.25
        cell_digits[index] = int(rng.choice(earlier)) if repeat else int(rng.integers(drawing.N_DIGITS))
    style = {
        name: rng.random() < 0.25
        for name in (
            "Photo_Background",
            "Striped_Background",
            "Framed",
            "Green_Digits",
            "Bold_Digits",
            "Blurry",
            "Noisy",
        )
    }
    background = rng.choice(3, p=(0.5, 0.25, 0.25))
    style["Red_Background"], style["Blue_Background"] = background == 1, background == 2

    canvas = np.empty((size, size, 3), dtype=np.float32)
    canvas[:] = ((0.12, 0.12, 0.12), (0.45, 0.08, 0.08), (0.08, 0.12, 0.45))[background]
    if style["Photo_Background"]:
        canvas = 0.55 * canvas + 0.4 * drawing.photo_crop(rng, size, size)
    if style["Striped_Background"]:
        canvas[:, (np.arange(size) // 4) % 2 == 0] += 0.2
    if style["Framed"]:
        canvas[:2], canvas[-2:], canvas[:, :2], canvas[:, -2:] = 0.85, 0.85, 0.85, 0.85
    color = (0.25, 1.0, 0.3) if style["Green_Digits"] else (0.95, 0.95, 0.95)
    for index, digit in enumerate(cell_digits):
        if digit is not None:
            top, left = (index // 2) * cell + 3, (index % 2) * cell + 3
            drawing.place_digit(
                canvas,
                drawing.pick_digit(pools, split, digit, rng),
                cell - 6,
                top,
                left,
                color,
                rng,
                bold=style["Bold_Digits"],
            )
    image = drawing.to_image(canvas)
    if style["Blurry"]:
        image = image.filter(ImageFilter.GaussianBlur(1.2))
    if style["Noisy"]:
        noisy = np.asarray(image, dtype=np.float32) / 255.0 + rng.normal(0.0, 0.1, size=canvas.shape)
        image = drawing.to_image(noisy.astype(np.float32))
    return image, [1 if value else -1 for value in _demo_truth(cell_digits, occupied, style).values()]


def _demo_truth(cell_digits: list[int | None], occupied: np.ndarray, style: dict[str, bool]) -> dict[str, bool]:
    """Every demo attribute's truth, in DEMO_ATTRIBUTES order."""
    present = [d for d in cell_digits if d is not None]
    truth: dict[str, bool] = {f"Has_Digit_{d}": d in present for d in range(drawing.N_DIGITS)}
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
    return {name: truth[name] for name in DEMO_ATTRIBUTES}
