"""One label per image listed in a CSV, the most common Kaggle layout.

Layout: `train.csv` (`id,label`; the label is a class name or number, kept exactly as written), the images in
`train/` and `test/` named `<id>` plus an extension found by looking at the files (.jpg, .jpeg, .png, .webp, any
case; an id that already ends in an image extension names its file as it is), `sample_submission.csv` (`id,label`:
the test ids in submission order, and the header the submission must repeat). Classes are train.csv's labels in
natural order (`2` before `10`). One softmax head; accuracy (macro-F1 reported too). Submission: `submission.csv`
with sample_submission's header, its ids in its order, each image's predicted class as train.csv writes it.
Column and file names are options.
"""

from __future__ import annotations

import csv
import io
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from src.atomic import write_validated
from src.demo_drawing import digit_pools, hex_names, save_image, split_rng, write_lines
from src.errors import PipelineError
from src.formats import register
from src.formats.base import (
    IMAGE_SUFFIXES,
    CompetitionFormat,
    HeadSpec,
    ImageTable,
    read_csv_rows,
    refuse_duplicates,
    safe_child,
)
from src.formats.folder import demo_digit_images, natural_key

HEAD = "label"
# The extensions tried after an id that names no file as it is, in this order.
ID_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


class CsvOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train_file: str = "train.csv"
    sample_file: str = "sample_submission.csv"
    train_dir: str = "train"
    test_dir: str = "test"
    id_column: str = "id"
    label_column: str = "label"
    submission_file: str = "submission.csv"
    # The course package pins them, so predicting needs no train.csv (the notebook runs from the zip alone).
    classes: list[str] | None = Field(
        None, description="the class names in order; null = train.csv's labels, natural order"
    )

    @model_validator(mode="after")
    def _distinct_columns(self) -> CsvOptions:
        if self.id_column == self.label_column or not self.id_column or not self.label_column:
            raise ValueError(
                f"id_column '{self.id_column}' and label_column '{self.label_column}' must be two "
                "different non-empty names"
            )
        return self


@register
class CsvFormat(CompetitionFormat):
    name = "csv"
    main_metric = "accuracy"
    Options = CsvOptions
    demo_solution_names = ("solution.csv",)
    demo_sizes = (400, 100)
    demo_margin_over_chance = 0.3

    @cached_property
    def _train_rows(self) -> list[dict[str, str]]:
        """train.csv's rows (read once for the classes and the training table); ids and labels present, ids unique."""
        path, options = self.root / self.options.train_file, self.options
        rows = read_csv_rows(path, [options.id_column, options.label_column])
        for row in rows:
            _require_cell(row, options.id_column, path, "every row needs an image id")
            _require_cell(row, options.label_column, path, "give every training image its class")
        refuse_duplicates([row[options.id_column] for row in rows], path, [row["__line__"] for row in rows])
        if not rows:
            raise PipelineError(
                f"{path}: no rows; list each training image as {options.id_column},{options.label_column}"
            )
        return rows

    @cached_property
    def class_names(self) -> list[str]:
        """format_options.classes, else train.csv's distinct labels in natural order ('2' before '10')."""
        if self.options.classes is not None:
            return list(self.options.classes)
        return sorted({row[self.options.label_column] for row in self._train_rows}, key=natural_key)

    def heads(self) -> list[HeadSpec]:
        return [HeadSpec(HEAD, "softmax", tuple(self.class_names))]

    def standalone_options(self) -> dict[str, Any]:
        return {"classes": list(self.class_names)}

    def test_input_files(self) -> list[Path]:
        return [self._sample_path, *self.read_test().paths]

    def submission_names(self) -> list[str]:
        return [self.options.submission_file]

    # --- reading -----------------------------------------------------------------------------
    def read_train(self) -> ImageTable:
        rows, options = self._train_rows, self.options
        index_of = {name: index for index, name in enumerate(self.class_names)}
        train_csv = self.root / options.train_file
        unknown = next((row for row in rows if row[options.label_column] not in index_of), None)
        if unknown is not None:
            raise PipelineError(
                f"{train_csv} line {unknown['__line__']}: {options.label_column} '{unknown[options.label_column]}' is "
                "not in format_options.classes; add it there, or set classes to null"
            )
        paths = _ImageFolder(self.root / options.train_dir).paths(rows, options.id_column, train_csv)
        labels = np.asarray([index_of[row[options.label_column]] for row in rows], dtype=np.int64)
        return ImageTable([row[options.id_column] for row in rows], paths, {HEAD: labels})

    def read_test(self) -> ImageTable:
        rows = self._sample_rows
        paths = _ImageFolder(self.root / self.options.test_dir).paths(rows, self.options.id_column, self._sample_path)
        return ImageTable([row[self.options.id_column] for row in rows], paths)

    @property
    def _sample_path(self) -> Path:
        return self.root / self.options.sample_file

    @cached_property
    def _sample_header(self) -> list[str]:
        """sample_submission.csv's header: the id and label columns, in the order the submission must repeat."""
        rows = self._sample_rows
        header = [key for key in rows[0] if key != "__line__"]
        expected = {self.options.id_column, self.options.label_column}
        if set(header) != expected:
            raise PipelineError(
                f"{self._sample_path} line 1: header {','.join(header)}; expected the two columns "
                f"{self.options.id_column},{self.options.label_column} (or set "
                "format_options.id_column / label_column)"
            )
        return header

    @cached_property
    def _sample_rows(self) -> list[dict[str, str]]:
        """sample_submission.csv's rows: the test ids (present, unique) in submission order."""
        path, id_column = self._sample_path, self.options.id_column
        rows = read_csv_rows(path, [id_column, self.options.label_column])
        for row in rows:
            _require_cell(row, id_column, path, "every row needs a test image id")
        refuse_duplicates([row[id_column] for row in rows], path, [row["__line__"] for row in rows])
        if not rows:
            raise PipelineError(f"{path}: no rows; nothing to predict")
        return rows

    # --- submission --------------------------------------------------------------------------
    def write_submission(
        self, out_dir: Path, ids: list[str], labels: dict[str, Any], probs: dict[str, np.ndarray]
    ) -> list[Path]:
        header, names = self._sample_header, self.class_names
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        for image_id, label in zip(ids, np.asarray(labels[HEAD], dtype=np.int64)):
            cells = {self.options.id_column: image_id, self.options.label_column: names[label]}
            writer.writerow([cells[column] for column in header])
        return write_validated({Path(out_dir) / self.options.submission_file: buffer.getvalue()}, self._read)

    def read_submission(self, files: list[Path]) -> tuple[list[str], dict[str, Any]]:
        path = Path(files[0])
        ids, labels = self._read(path, path)
        return ids, {HEAD: labels}

    def _read(self, path: Path, shown_as: Path) -> tuple[list[str], np.ndarray]:
        """Check a submission: sample_submission's header, its ids in its order, a known class on every row."""
        options, header = self.options, self._sample_header
        rows = read_csv_rows(path, header)
        found = [key for key in rows[0] if key != "__line__"] if rows else header
        if found != header:
            raise PipelineError(
                f"{shown_as} line 1: header {','.join(found)}; write {','.join(header)} as "
                f"{self._sample_path.name} does"
            )
        expected = [row[options.id_column] for row in self._sample_rows]
        if len(rows) != len(expected):
            raise PipelineError(
                f"{shown_as}: {len(rows)} rows, {self._sample_path.name} has {len(expected)}; "
                "predict every test image once"
            )
        index_of = {name: index for index, name in enumerate(self.class_names)}
        labels = []
        for row, want in zip(rows, expected):
            line, got, label = row["__line__"], row[options.id_column], row[options.label_column]
            if got != want:
                raise PipelineError(
                    f"{shown_as} line {line}: {options.id_column} '{got}' where "
                    f"{self._sample_path.name} has '{want}'; keep its ids and their order"
                )
            if label not in index_of:
                shown = ", ".join(self.class_names[:10]) + (", ..." if len(index_of) > 10 else "")
                raise PipelineError(
                    f"{shown_as} line {line}: {options.label_column} '{label}' is not a class of "
                    f"{options.train_file} (classes: {shown}); write one of them"
                )
            labels.append(index_of[label])
        return expected, np.asarray(labels, dtype=np.int64)

    # --- demo --------------------------------------------------------------------------------
    @classmethod
    def write_demo(cls, comp_dir: Path, answers_dir: Path, seed: int, n_train: int, n_test: int) -> None:
        """Write a train.csv-layout demo into `comp_dir`, the test answers into `answers_dir`.

        Layout: train.csv (id,label; labels the digits' names, 'zero'..'nine'), train/<id>.{png,jpg},
        test/<id>.{png,jpg} (the folder demo's mixed sizes and modes, ids without the extension),
        sample_submission.csv (id,label, ids sorted). Answers: solution.csv in the submission format.
        """
        pools = digit_pools(seed)
        stems = hex_names(split_rng(seed, _DEMO_SALT, "train"), n_train + n_test, 12)
        labelled: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
        for split, split_stems in (("train", stems[:n_train]), ("test", stems[n_train:])):
            for file_name, label, image in demo_digit_images(pools, seed, _DEMO_SALT, split, split_stems):
                save_image(image, comp_dir / split / file_name)
                labelled[split].append((Path(file_name).stem, DEMO_CLASSES[label]))
        test = sorted(labelled["test"])
        write_lines(comp_dir / "train.csv", ["id,label"] + [f"{stem},{name}" for stem, name in labelled["train"]])
        sample_rows = [f"{stem},{DEMO_CLASSES[0]}" for stem, _ in test]
        write_lines(comp_dir / "sample_submission.csv", ["id,label"] + sample_rows)
        write_lines(answers_dir / "solution.csv", ["id,label"] + [f"{stem},{name}" for stem, name in test])


DEMO_CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_DEMO_SALT = 5


def _require_cell(row: dict[str, str], column: str, path: Path, fix: str) -> None:
    if not row[column]:
        raise PipelineError(f"{path} line {row['__line__']}: {column} is empty; {fix}")


class _ImageFolder:
    """A folder's image files found by id: the id as it is when it has an image extension, else `<id><ext>`."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._listings: dict[Path, dict[str, list[str]]] = {}

    def paths(self, rows: list[dict[str, str]], id_column: str, source: Path) -> list[Path]:
        """Each row's image path; one line naming `source`, the row and the fix for a missing or ambiguous image."""
        if not self.folder.is_dir():
            raise PipelineError(f"{self.folder}: folder not found; the images of {source.name} belong there")
        return [self._find(row[id_column], source, row["__line__"]) for row in rows]

    def _find(self, image_id: str, source: Path, line: str) -> Path:
        named = safe_child(self.folder, image_id, source, line)
        by_stem = self._listing(named.parent)
        if Path(image_id).suffix.lower() in IMAGE_SUFFIXES and named.name in by_stem.get(named.stem, ()):
            return named
        found = [name for name in by_stem.get(named.name, []) if Path(name).suffix.lower() in ID_EXTENSIONS]
        if len(found) > 1:
            raise PipelineError(
                f"{source} line {line}: id '{image_id}' matches {' and '.join(sorted(found))} in "
                f"{named.parent}; keep one file per id"
            )
        if not found:
            raise PipelineError(
                f"{source} line {line}: no image for id '{image_id}' in {named.parent} (looked for "
                f"{'/'.join(ID_EXTENSIONS)}); restore the file or remove the row"
            )
        return named.parent / found[0]

    def _listing(self, folder: Path) -> dict[str, list[str]]:
        """File stem -> the image file names with that stem (one directory listing per folder)."""
        if folder not in self._listings:
            listing: dict[str, list[str]] = {}
            entries = sorted(folder.iterdir()) if folder.is_dir() else []
            for entry in entries:
                if entry.suffix.lower() in IMAGE_SUFFIXES:
                    listing.setdefault(entry.stem, []).append(entry.name)
            self._listings[folder] = listing
        return self._listings[folder]
