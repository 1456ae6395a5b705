"""DeepFashion course competition: one network, a softmax `category` head and a sigmoid `attributes` head.

Layout: `train.csv` (file_path,category_label,attribute_label) with paths relative to the competition
folder (e.g. `train/000123.jpg`), category ids 0..n_categories-1 and space-separated attribute ids
0..n_attributes-1 (empty when an image has none; both counts come from the options, or else from the
largest ids train.csv uses); test images listed in `test.csv` (file_path) or,
when there is no test.csv, every image in `test/`. Submission: `category.csv` (file_path,category_label)
and `attribute.csv` (file_path,attribute_label), rows in test order. Score: the mean of category
accuracy and per-image attribute F1 averaged over images.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from src import demo_drawing as drawing
from src.atomic import write_validated
from src.errors import PipelineError
from src.formats import register
from src.formats.base import (
    CompetitionFormat,
    HeadSpec,
    ImageTable,
    list_image_files,
    parse_id_list,
    read_csv_rows,
    refuse_duplicates,
    require_images,
    safe_child,
)
from src.objectives import SamplesFbeta

CATEGORY, ATTRIBUTES = "category", "attributes"
PATH_COLUMN, CATEGORY_COLUMN, ATTRIBUTE_COLUMN = "file_path", "category_label", "attribute_label"
CATEGORY_FILE, ATTRIBUTE_FILE = "category.csv", "attribute.csv"


class DeepFashionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # How many ids (0..n-1) of each kind; null = len(<kind>_names), else the largest id in train.csv + 1.
    n_categories: int | None = Field(None, ge=2, description="how many categories; null = from the names or the data")
    n_attributes: int | None = Field(None, ge=1, description="how many attributes; null = from the names or the data")
    category_names: list[str] | None = Field(None, description="names for tables; null = the ids")
    attribute_names: list[str] | None = Field(None, description="names for tables; null = the ids")
    category_weight: float = Field(1.0, ge=0, description="weight of the category loss in the total")
    attribute_weight: float = Field(1.0, ge=0, description="weight of the attribute loss in the total")
    at_least_one_attribute: bool = Field(False, description="give every image its top attribute when none passes")
    empty_image_f1: float = Field(
        0.0, ge=0, le=1, description="F1 of an image with no true and no predicted attribute (sklearn's zero_division)"
    )

    @field_validator("category_names", "attribute_names")
    @classmethod
    def _one_name_per_class(cls, names: list[str] | None, info: ValidationInfo) -> list[str] | None:
        count_key = "n_categories" if info.field_name == "category_names" else "n_attributes"
        expected = info.data.get(count_key)
        if names is not None and expected is not None and len(names) != expected:
            raise ValueError(f"{len(names)} names but {count_key} is {expected}; give one name per class")
        return names


@register
class DeepFashionFormat(CompetitionFormat):
    name = "deepfashion"
    main_metric = "score"
    Options = DeepFashionOptions
    demo_solution_names = (CATEGORY_FILE, ATTRIBUTE_FILE)
    # The course's hand-out asks for the notebook by this name, beside the two prediction files.
    course_package_names = {"notebook": "assignment4.ipynb"}
    demo_margin_over_chance = 0.08

    @cached_property
    def class_counts(self) -> tuple[int, int]:
        """(categories, attributes): from the options when given, else from the ids train.csv uses."""
        options = self.options
        n_categories = options.n_categories or (len(options.category_names) if options.category_names else None)
        n_attributes = options.n_attributes or (len(options.attribute_names) if options.attribute_names else None)
        if n_categories is None or n_attributes is None:
            seen_categories, seen_attributes = self._ids_in_train_csv()
            if n_categories is None:
                n_categories = seen_categories
                if n_categories < 2:
                    raise PipelineError(
                        f"{self.root / 'train.csv'}: only category 0 is used; a category head needs at "
                        "least 2, so set format_options.n_categories"
                    )
            if n_attributes is None:
                n_attributes = seen_attributes
                if n_attributes < 1:
                    raise PipelineError(
                        f"{self.root / 'train.csv'}: no row has an attribute; set "
                        "format_options.n_attributes to the competition's count"
                    )
        return n_categories, n_attributes

    @cached_property
    def _train_rows(self) -> list[dict[str, str]]:
        """train.csv's rows, read once for the class counts and the training table."""
        return read_csv_rows(self.root / "train.csv", [PATH_COLUMN, CATEGORY_COLUMN, ATTRIBUTE_COLUMN])

    def _ids_in_train_csv(self) -> tuple[int, int]:
        """The largest category id + 1 and the largest attribute id + 1 in train.csv (0 when none)."""
        top = {CATEGORY_COLUMN: -1, ATTRIBUTE_COLUMN: -1}
        for row in self._train_rows:
            for column, texts in (
                (CATEGORY_COLUMN, [row[CATEGORY_COLUMN]]),
                (ATTRIBUTE_COLUMN, row[ATTRIBUTE_COLUMN].split()),
            ):
                for text in texts:
                    if not (text.isascii() and text.isdigit()):
                        raise PipelineError(
                            f"{self.root / 'train.csv'} line {row['__line__']}: {column} '{text}' is not "
                            "a non-negative integer id; fix the row"
                        )
                    top[column] = max(top[column], int(text))
        return top[CATEGORY_COLUMN] + 1, top[ATTRIBUTE_COLUMN] + 1

    def heads(self) -> list[HeadSpec]:
        options = self.options
        n_categories, n_attributes = self.class_counts
        categories = options.category_names or [str(i) for i in range(n_categories)]
        attributes = options.attribute_names or [str(i) for i in range(n_attributes)]
        return [
            HeadSpec(CATEGORY, "softmax", tuple(categories), loss_weight=options.category_weight),
            HeadSpec(
                ATTRIBUTES,
                "multilabel",
                tuple(attributes),
                SamplesFbeta(1.0, options.empty_image_f1),
                loss_weight=options.attribute_weight,
                min_labels=1 if options.at_least_one_attribute else 0,
            ),
        ]

    def submission_names(self) -> list[str]:
        return [CATEGORY_FILE, ATTRIBUTE_FILE]

    # --- reading -----------------------------------------------------------------------------
    def read_train(self) -> ImageTable:
        path, rows = self.root / "train.csv", self._train_rows
        ids, lines, paths = self._paths(rows, path)
        categories = np.array(
            [self._category(row[CATEGORY_COLUMN], path, row["__line__"]) for row in rows], dtype=np.int64
        )
        attributes = self._attribute_matrix([row[ATTRIBUTE_COLUMN] for row in rows], path, lines)
        require_images(paths, path, lines)
        return ImageTable(ids, paths, {CATEGORY: categories, ATTRIBUTES: attributes})

    def standalone_options(self) -> dict[str, Any]:
        n_categories, n_attributes = self.class_counts
        return {"n_categories": n_categories, "n_attributes": n_attributes}

    def test_input_files(self) -> list[Path]:
        listing = self.root / "test.csv"
        return ([listing] if listing.is_file() else []) + list(self.read_test().paths)

    def read_test(self) -> ImageTable:
        ids, lines, source = self._test_listing()
        paths = [self._resolve(image_id, source, line) for image_id, line in zip(ids, lines)]
        require_images(paths, source, lines)
        return ImageTable(ids, paths)

    def _test_listing(self) -> tuple[list[str], list[str], Path]:
        """Test file_paths in submission order, their lines and their source: test.csv, else test/ by name."""
        listing = self.root / "test.csv"
        if listing.is_file():
            rows = read_csv_rows(listing, [PATH_COLUMN])
            ids, lines, _ = self._paths(rows, listing)
            return ids, lines, listing
        folder = self.root / "test"
        if not folder.is_dir():
            raise PipelineError(
                f"{self.root}: neither test.csv nor a test/ folder; add one so the test images are known"
            )
        ids = [f"test/{image.name}" for image in list_image_files(folder)]
        return ids, [f"{index + 1} of the listing" for index in range(len(ids))], folder

    def _paths(self, rows: list[dict[str, str]], path: Path) -> tuple[list[str], list[str], list[Path]]:
        ids, lines = [row[PATH_COLUMN] for row in rows], [row["__line__"] for row in rows]
        for image_id, line in zip(ids, lines):
            if not image_id:
                raise PipelineError(f"{path} line {line}: empty {PATH_COLUMN}; every row needs an image path")
        refuse_duplicates(ids, path, lines)
        return ids, lines, [self._resolve(image_id, path, line) for image_id, line in zip(ids, lines)]

    def _resolve(self, image_id: str, path: Path, line: str) -> Path:
        # Paths written on Windows use backslashes; the id itself is kept exactly as given.
        return safe_child(self.root, image_id.replace("\\", "/"), path, line)

    def _category(self, text: str, path: Path, line: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise PipelineError(
                f"{path} line {line}: {CATEGORY_COLUMN} '{text}' is not an integer id; "
                f"use 0..{self.class_counts[0] - 1}"
            ) from None
        if not 0 <= value < self.class_counts[0]:
            raise PipelineError(
                f"{path} line {line}: {CATEGORY_COLUMN} {value} is outside 0..{self.class_counts[0] - 1}; "
                "fix the row or set format_options.n_categories"
            )
        return value

    def _attribute_matrix(self, cells: list[str], path: Path, lines: list[str]) -> np.ndarray:
        known = set(range(self.class_counts[1]))
        matrix = np.zeros((len(cells), self.class_counts[1]), dtype=np.uint8)
        for row_index, (cell, line) in enumerate(zip(cells, lines)):
            matrix[
                row_index,
                parse_id_list(
                    cell,
                    known,
                    path,
                    line,
                    ATTRIBUTE_COLUMN,
                    f"ids run 0..{len(known) - 1}: fix the row or set format_options.n_attributes",
                ),
            ] = 1
        return matrix

    # --- demo --------------------------------------------------------------------------------
    @classmethod
    def write_demo(cls, comp_dir: Path, answers_dir: Path, seed: int, n_train: int, n_test: int) -> None:
        """Write a DeepFashion-category-and-attribute-layout demo into `comp_dir`, answers into `answers_dir`.

        Layout: train/NNNNNN.jpg, test/NNNNNN.jpg, train.csv (file_path,category_label,attribute_label),
        test.csv (file_path). Answers: category.csv (file_path,category_label), attribute.csv
        (file_path,attribute_label). attribute_label is space-separated ids into DEMO_ATTRIBUTES,
        empty when none.
        """
        pools = drawing.digit_pools(seed)
        train_rows, category_rows, attribute_rows, test_paths = [], [], [], []
        for split, count, offset in (("train", n_train, 0), ("test", n_test, n_train)):
            for index in range(count):
                image, category, attributes = _demo_image(
                    pools, split, drawing.image_rng(seed, _DEMO_SALT, split, index)
                )
                file_path = f"{split}/{offset + index:06d}.jpg"
                drawing.save_image(image, comp_dir / file_path)
                if split == "train":
                    train_rows.append(f"{file_path},{category},{drawing.join_ids(attributes)}")
                else:
                    test_paths.append(file_path)
                    category_rows.append(f"{file_path},{category}")
                    attribute_rows.append(f"{file_path},{drawing.join_ids(attributes)}")
        drawing.write_lines(comp_dir / "train.csv", ["file_path,category_label,attribute_label"] + train_rows)
        drawing.write_lines(comp_dir / "test.csv", ["file_path"] + test_paths)
        drawing.write_lines(answers_dir / CATEGORY_FILE, ["file_path,category_label"] + category_rows)
        drawing.write_lines(answers_dir / ATTRIBUTE_FILE, ["file_path,attribute_label"] + attribute_rows)

    # --- submission --------------------------------------------------------------------------
    def write_submission(
        self, out_dir: Path, ids: list[str], labels: dict[str, Any], probs: dict[str, np.ndarray]
    ) -> list[Path]:
        category_lines = [f"{PATH_COLUMN},{CATEGORY_COLUMN}"]
        attribute_lines = [f"{PATH_COLUMN},{ATTRIBUTE_COLUMN}"]
        for image_id, category, attributes in zip(ids, labels[CATEGORY], labels[ATTRIBUTES]):
            category_lines.append(f"{image_id},{int(category)}")
            attribute_lines.append(f"{image_id},{' '.join(str(a) for a in np.flatnonzero(attributes))}")
        # Both files are validated before either is moved into place.
        return write_validated(
            {
                Path(out_dir) / CATEGORY_FILE: "\n".join(category_lines) + "\n",
                Path(out_dir) / ATTRIBUTE_FILE: "\n".join(attribute_lines) + "\n",
            },
            self._read_file,
        )

    def read_submission(self, files: list[Path]) -> tuple[list[str], dict[str, Any]]:
        """Read category.csv and attribute.csv (told apart by their header, in any order); validate both."""
        found: dict[str, tuple[Path, list[str], np.ndarray]] = {}
        for path in map(Path, files):
            head, ids, values = self._read_file(path, path)
            if head in found:
                raise PipelineError(
                    f"{path}: a second {head} file (first: {found[head][0]}); pass one {CATEGORY_FILE} and one {ATTRIBUTE_FILE}"
                )
            found[head] = (path, ids, values)
        missing = [
            name for head, name in ((CATEGORY, CATEGORY_FILE), (ATTRIBUTES, ATTRIBUTE_FILE)) if head not in found
        ]
        if missing:
            raise PipelineError(
                f"{Path(files[0]).parent if files else self.root}: no {missing[0]} among {', '.join(map(str, files))}; "
                f"a submission is {CATEGORY_FILE} + {ATTRIBUTE_FILE}"
            )
        ids = found[CATEGORY][1]
        return ids, {CATEGORY: found[CATEGORY][2], ATTRIBUTES: found[ATTRIBUTES][2].astype(bool)}

    def _read_file(self, path: Path, shown_as: Path) -> tuple[str, list[str], np.ndarray]:
        """(head, ids, labels) of one submission file; its ids must be the test images in test order."""
        rows = read_csv_rows(path, [PATH_COLUMN])
        header = [key for key in rows[0] if key != "__line__"] if rows else self._header(path)
        if header == [PATH_COLUMN, CATEGORY_COLUMN]:
            head = CATEGORY
        elif header == [PATH_COLUMN, ATTRIBUTE_COLUMN]:
            head = ATTRIBUTES
        else:
            raise PipelineError(
                f"{shown_as} line 1: header {','.join(header)}; expected {PATH_COLUMN},{CATEGORY_COLUMN} "
                f"({CATEGORY_FILE}) or {PATH_COLUMN},{ATTRIBUTE_COLUMN} ({ATTRIBUTE_FILE})"
            )
        ids, lines = [row[PATH_COLUMN] for row in rows], [row["__line__"] for row in rows]
        refuse_duplicates(ids, shown_as, lines)
        expected, _, _ = self._test_listing()
        if len(ids) != len(expected):
            raise PipelineError(
                f"{shown_as}: {len(ids)} rows for {len(expected)} test images; predict every test image"
            )
        for got, want, line in zip(ids, expected, lines):
            if got != want:
                raise PipelineError(
                    f"{shown_as} line {line}: {PATH_COLUMN} '{got}' where the test listing has '{want}'; "
                    "keep the test images and their order"
                )
        if head == CATEGORY:
            values = np.array(
                [self._category(row[CATEGORY_COLUMN], shown_as, row["__line__"]) for row in rows], dtype=np.int64
            )
        else:
            values = self._attribute_matrix([row[ATTRIBUTE_COLUMN] for row in rows], shown_as, lines)
        return head, ids, values

    @staticmethod
    def _header(path: Path) -> list[str]:
        first = path.read_bytes().decode("utf-8-sig").splitlines()[0]
        return [cell.strip() for cell in first.split(",")]


# --- demo: category = the large digit, 15 visible style attributes ------------------------------------------

DEMO_ATTRIBUTES = (
    "red_digit",
    "green_digit",
    "blue_digit",
    "warm_background",
    "cool_background",
    "photo_background",
    "horizontal_stripes",
    "vertical_stripes",
    "border",
    "underline",
    "corner_dot",
    "corner_digit_top_left",
    "corner_digit_bottom_right",
    "bold",
    "noise",
)
_DEMO_SALT = 2
_DEMO_SIZE = 64
_DIGIT_COLORS = {
    None: (0.95, 0.95, 0.95),
    "red_digit": (1.0, 0.2, 0.15),
    "green_digit": (0.2, 1.0, 0.25),
    "blue_digit": (0.3, 0.45, 1.0),
}
_BACKGROUNDS = {None: (0.12, 0.12, 0.12), "warm_background": (0.45, 0.18, 0.05), "cool_background": (0.05, 0.15, 0.45)}
_INDEPENDENT_ATTRIBUTE_P = 0.25


def _demo_image(pools: drawing.DigitPools, split: str, rng: np.random.Generator) -> tuple[Image.Image, int, list[int]]:
    size = _DEMO_SIZE
    color_name = (None, "red_digit", "green_digit", "blue_digit")[rng.choice(4, p=(0.4, 0.2, 0.2, 0.2))]
    background_name = (None, "warm_background", "cool_background")[rng.choice(3, p=(0.5, 0.25, 0.25))]
    independent = [name for name in DEMO_ATTRIBUTES if name not in _DIGIT_COLORS and name not in _BACKGROUNDS]
    present = {name for name in independent if rng.random() < _INDEPENDENT_ATTRIBUTE_P}
    present |= {name for name in (color_name, background_name) if name}

    canvas = np.empty((size, size, 3), dtype=np.float32)
    canvas[:] = _BACKGROUNDS[background_name]
    if "photo_background" in present:
        canvas = 0.55 * canvas + 0.4 * drawing.photo_crop(rng, size, size)
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

    category = int(rng.integers(drawing.N_DIGITS))
    drawing.place_digit(
        canvas,
        drawing.pick_digit(pools, split, category, rng),
        38,
        13,
        13,
        _DIGIT_COLORS[color_name],
        rng,
        bold="bold" in present,
    )
    for name, top, left in (("corner_digit_top_left", 1, 1), ("corner_digit_bottom_right", 50, 50)):
        if name in present:
            small = drawing.pick_digit(pools, split, int(rng.integers(drawing.N_DIGITS)), rng)
            drawing.paste(canvas, drawing.digit_mask(small, 13), (0.95, 0.95, 0.95), top, left)
    if "noise" in present:
        canvas += rng.normal(0.0, 0.12, size=canvas.shape).astype(np.float32)
    return drawing.to_image(canvas), category, [DEMO_ATTRIBUTES.index(n) for n in present]
