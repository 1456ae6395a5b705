"""Folder per class: `train/<class>/<image>` for training, a flat `test/` folder, one label per image.

Classes are the folder names in natural order (`2` before `10`, so `0..58` keep their numeric order)
unless `classes` fixes the list. Images may be any size and mode (RGB, L, RGBA, CMYK, P; see
src/data/images.py). Submission: one CSV row per test image (by file name) with the predicted class
and its probability; the column names and file name are options (defaults `image,label,probability`
in `submission.csv`).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from src import demo_drawing as drawing
from src.atomic import write_validated
from src.errors import PipelineError
from src.formats import register
from src.formats.base import OS_JUNK_FILES, CompetitionFormat, HeadSpec, ImageTable, list_image_files, read_csv_rows

HEAD = "label"


class FolderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train_dir: str = "train"
    test_dir: str = "test"
    classes: list[str] | None = Field(None, description="the class folder names in label order; null = natural order")
    submission_file: str = "submission.csv"
    id_column: str = "image"
    label_column: str = "label"
    probability_column: str = "probability"
    id_with_extension: bool = Field(
        True, description="ids are file names with their suffix ('a.png'), else stems ('a')"
    )

    @model_validator(mode="after")
    def _distinct_columns(self) -> FolderOptions:
        columns = [self.id_column, self.label_column, self.probability_column]
        if len(set(columns)) != 3 or not all(columns):
            raise ValueError(f"submission columns {columns} must be three different non-empty names")
        return self


def natural_key(name: str) -> list:
    """Sort key that orders digit runs by value: '2' < '10', 'class2' < 'class10'."""
    return [int(part) if index % 2 else part.lower() for index, part in enumerate(re.split(r"(\d+)", name))]


@register
class FolderFormat(CompetitionFormat):
    name = "folder"
    main_metric = "accuracy"
    Options = FolderOptions
    # The course's zip: three files named after the student, spelled as the hand-out does (`rollNumber_06.ipynb`,
    # `rollNumber_06.csv`, `RollNumber_06.pdf`), + the code, weights and Readme the notebook runs from.
    course_package_names = {
        "submission": "{name_lower_first}.csv",
        "report": "{name_upper_first}.pdf",
        "notebook": "{name_lower_first}.ipynb",
    }
    demo_solution_names = ("solution.csv",)
    demo_margin_over_chance = 0.3

    @cached_property
    def class_names(self) -> list[str]:
        chosen = self.options.classes
        if chosen is None:
            return sorted(self._class_folders(), key=natural_key)
        duplicated = sorted({name for name in chosen if chosen.count(name) > 1})
        if duplicated:
            raise PipelineError(f"config format_options.classes: '{duplicated[0]}' listed twice; list each class once")
        if not (self.root / self.options.train_dir).is_dir():
            return list(chosen)  # predicting only (a course package's test images): the listed classes are the heads
        found = self._class_folders()
        unknown = [name for name in found if name not in chosen]
        if unknown:
            raise PipelineError(
                f"{self.root / self.options.train_dir / unknown[0]}: class folder '{unknown[0]}' is not in "
                "format_options.classes; add it there or remove the folder"
            )
        return list(chosen)

    def _class_folders(self) -> list[str]:
        train_dir = self.root / self.options.train_dir
        if not train_dir.is_dir():
            raise PipelineError(
                f"{train_dir}: folder not found; expected {self.options.train_dir}/<class>/<image> "
                "in the competition folder"
            )
        folders = []
        for entry in sorted(train_dir.iterdir()):
            if entry.name.startswith(".") or entry.name.lower() in OS_JUNK_FILES:
                continue
            if not entry.is_dir():
                raise PipelineError(
                    f"{entry}: a file directly in {train_dir}; put each image in its class folder "
                    f"{self.options.train_dir}/<class>/"
                )
            folders.append(entry.name)
        if not folders:
            raise PipelineError(f"{train_dir}: no class folders; expected {self.options.train_dir}/<class>/<image>")
        return folders

    def heads(self) -> list[HeadSpec]:
        return [HeadSpec(HEAD, "softmax", tuple(self.class_names))]

    def submission_names(self) -> list[str]:
        return [self.options.submission_file]

    def standalone_options(self) -> dict[str, Any]:
        return {"classes": list(self.class_names)}

    # --- reading -----------------------------------------------------------------------------
    def read_train(self) -> ImageTable:
        train_dir = self.root / self.options.train_dir
        ids, paths, labels = [], [], []
        found = set(self._class_folders())
        for label, class_name in enumerate(self.class_names):
            if class_name not in found:
                continue  # a class named in format_options.classes with no training images
            images = list_image_files(train_dir / class_name)
            if not images and self.options.classes is None:
                raise PipelineError(
                    f"{train_dir / class_name}: empty class folder; add its images or remove the folder"
                )
            for image in images:
                ids.append(f"{class_name}/{image.name}")
                paths.append(image)
                labels.append(label)
        return ImageTable(ids, paths, {HEAD: np.asarray(labels, dtype=np.int64)})

    def read_test(self) -> ImageTable:
        paths = self._test_images()
        return ImageTable(self._test_ids(paths), paths)

    def _test_images(self) -> list[Path]:
        images = list_image_files(self.root / self.options.test_dir)
        if not images:
            raise PipelineError(f"{self.root / self.options.test_dir}: no test images; nothing to predict")
        return images

    def _test_ids(self, paths: list[Path]) -> list[str]:
        ids = [path.name if self.options.id_with_extension else path.stem for path in paths]
        first: dict[str, Path] = {}
        for image_id, path in zip(ids, paths):
            if image_id in first:
                raise PipelineError(
                    f"{path}: id '{image_id}' also belongs to {first[image_id].name}; rename one "
                    "or set format_options.id_with_extension=true"
                )
            first[image_id] = path
        return ids

    # --- demo --------------------------------------------------------------------------------
    @classmethod
    def write_demo(cls, comp_dir: Path, answers_dir: Path, seed: int, n_train: int, n_test: int) -> None:
        """Write a folder-per-class demo into `comp_dir`, the test answers into `answers_dir`.

        Layout: train/<0..9>/<name>.{png,jpg}, test/<name>.{png,jpg} with mixed sizes (24..80 px a side)
        and modes RGB, L, RGBA (PNG) and CMYK (JPEG). Answers: solution.csv (image,label,probability).
        """
        pools = drawing.digit_pools(seed)
        names = drawing.hex_names(drawing.split_rng(seed, _DEMO_SALT, "train"), n_train + n_test, 12)
        answer_rows = []
        for split, split_names in (("train", names[:n_train]), ("test", names[n_train:])):
            for file_name, label, image in demo_digit_images(pools, seed, _DEMO_SALT, split, split_names):
                drawing.save_image(image, comp_dir / split / (str(label) if split == "train" else "") / file_name)
                if split == "test":
                    answer_rows.append(f"{file_name},{label},1.0")
        drawing.write_lines(answers_dir / "solution.csv", ["image,label,probability"] + sorted(answer_rows))

    # --- submission --------------------------------------------------------------------------
    def write_submission(
        self, out_dir: Path, ids: list[str], labels: dict[str, Any], probs: dict[str, np.ndarray]
    ) -> list[Path]:
        options, names = self.options, self.class_names
        predicted = np.asarray(labels[HEAD], dtype=np.int64)
        chosen = np.asarray(probs[HEAD], dtype=np.float64)[np.arange(len(ids)), predicted]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([options.id_column, options.label_column, options.probability_column])
        for image_id, label, probability in zip(ids, predicted, chosen):
            writer.writerow([image_id, names[label], f"{probability:.6f}"])
        return write_validated({Path(out_dir) / options.submission_file: buffer.getvalue()}, self._read)

    def read_submission(self, files: list[Path]) -> tuple[list[str], dict[str, Any]]:
        path = Path(files[0])
        ids, labels, _ = self._read(path, path)
        return ids, {HEAD: labels}

    def read_probabilities(self, path: Path) -> np.ndarray:
        """The probability column of a submission file (validated like the rest of it)."""
        return self._read(Path(path), Path(path))[2]

    def _read(self, path: Path, shown_as: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Check a submission: every test image once, in name order; a known class; a probability in [0, 1]."""
        options = self.options
        columns = [options.id_column, options.label_column, options.probability_column]
        rows = read_csv_rows(path, columns)
        extra = [key for key in rows[0] if key not in columns and key != "__line__"] if rows else []
        if extra:
            raise PipelineError(
                f"{shown_as} line 1: unexpected column '{extra[0]}'; the header must be {','.join(columns)}"
            )
        expected = self._test_ids(self._test_images())
        if len(rows) != len(expected):
            raise PipelineError(
                f"{shown_as}: {len(rows)} rows for {len(expected)} test images; predict every test image once"
            )
        index_of = {name: index for index, name in enumerate(self.class_names)}
        ids, labels, probabilities = [], [], []
        for row, want in zip(rows, expected):
            line = row["__line__"]
            if row[options.id_column] != want:
                raise PipelineError(
                    f"{shown_as} line {line}: {options.id_column} '{row[options.id_column]}' where "
                    f"'{want}' is expected; list the test images once each, sorted by file name"
                )
            label = row[options.label_column]
            if label not in index_of:
                raise PipelineError(
                    f"{shown_as} line {line}: {options.label_column} '{label}' is not a class "
                    f"(classes: {', '.join(self.class_names[:10])}{', ...' if len(index_of) > 10 else ''})"
                )
            try:
                probability = float(row[options.probability_column])
            except ValueError:
                probability = math.nan
            if not 0.0 <= probability <= 1.0:
                raise PipelineError(
                    f"{shown_as} line {line}: {options.probability_column} '{row[options.probability_column]}' "
                    "is not a number in [0, 1]"
                )
            ids.append(want)
            labels.append(index_of[label])
            probabilities.append(probability)
        return ids, np.asarray(labels, dtype=np.int64), np.asarray(probabilities)


# --- demo: one digit per image, mixed sizes, modes (RGB, L, RGBA, CMYK) and file types -----------------------

DEMO_MODES = ("RGB", "L", "RGBA", "CMYK")
_DEMO_SALT = 4


def demo_digit_images(
    pools: drawing.DigitPools, seed: int, salt: int, split: str, stems: list[str]
) -> Iterator[tuple[str, int, Image.Image]]:
    """(file name, label, image) per stem, in order: labels 0..9 and DEMO_MODES cycled then shuffled, so every class
    and every mode appears once there are 10 / 4 images; RGBA is a PNG, CMYK a JPEG, the others either."""
    split_draws = drawing.split_rng(seed, salt, split)
    labels = split_draws.permutation(np.arange(len(stems)) % drawing.N_DIGITS)
    modes = split_draws.permutation(np.arange(len(stems)) % len(DEMO_MODES))
    for index, (stem, label, mode_index) in enumerate(zip(stems, labels, modes)):
        rng = drawing.image_rng(seed, salt, split, index)
        image = drawing.one_digit_image(pools, split, int(label), DEMO_MODES[mode_index], rng)
        suffix = {"RGBA": ".png", "CMYK": ".jpg"}.get(image.mode) or (".png" if rng.random() < 0.5 else ".jpg")
        yield stem + suffix, int(label), image
