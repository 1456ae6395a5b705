"""iMet Collection 2019: 1103-class multi-label, `id,attribute_ids`, metric = F2 per image averaged.

Layout: `labels.csv` (attribute_id,attribute_name), `train.csv` (id,attribute_ids), `train/<id>.png`,
`sample_submission.csv` (id,attribute_ids), `test/<id>.png`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict

from src import demo_drawing as drawing
from src.atomic import write_validated
from src.errors import PipelineError
from src.formats import register
from src.formats.base import (
    CompetitionFormat,
    HeadSpec,
    ImageTable,
    parse_id_list,
    read_csv_rows,
    refuse_duplicates,
    require_images,
)
from src.objectives import SamplesFbeta

HEAD = "attributes"


class ImetOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_ext: str = ".png"
    beta: float = 2.0


def _check_id(image_id: str, path: Path, line: str) -> None:
    """An id names a file inside train/ or test/: no empty ids, no path separators, no `..`."""
    if not image_id:
        raise PipelineError(f"{path} line {line}: empty id; every row needs an image id")
    if "/" in image_id or "\\" in image_id or image_id in (".", "..") or "\x00" in image_id:
        raise PipelineError(
            f"{path} line {line}: id '{image_id}' is not a plain file name (paths may not leave the competition folder)"
        )


@register
class ImetFormat(CompetitionFormat):
    name = "imet"
    main_metric = "f2"
    Options = ImetOptions
    demo_solution_names = ("solution.csv",)
    # demo_margin_over_chance stays None: tests/test_stages_imet.py runs this demo's chain stage by stage.

    def __init__(self, root: Path, options: dict[str, Any] | None = None):
        super().__init__(root, options)
        self._class_ids: list[int] | None = None
        self._class_names: list[str] | None = None

    def _load_labels(self) -> None:
        if self._class_ids is not None:
            return
        path = self.root / "labels.csv"
        rows = read_csv_rows(path, ["attribute_id", "attribute_name"])
        ids = []
        for row in rows:
            try:
                ids.append(int(row["attribute_id"]))
            except ValueError:
                raise PipelineError(
                    f"{path} line {row['__line__']}: attribute_id '{row['attribute_id']}' is not an integer"
                ) from None
        refuse_duplicates([str(i) for i in ids], path, [row["__line__"] for row in rows])
        order = np.argsort(ids, kind="stable")
        self._class_ids = [ids[i] for i in order]
        self._class_names = [rows[i]["attribute_name"] for i in order]

    @property
    def class_ids(self) -> list[int]:
        self._load_labels()
        return list(self._class_ids)

    def heads(self) -> list[HeadSpec]:
        self._load_labels()
        objective = SamplesFbeta(self.options.beta)
        return [HeadSpec(HEAD, "multilabel", tuple(self._class_names), objective)]

    def read_train(self) -> ImageTable:
        path = self.root / "train.csv"
        rows = read_csv_rows(path, ["id", "attribute_ids"])
        ids, lines = [row["id"] for row in rows], [row["__line__"] for row in rows]
        for row in rows:
            _check_id(row["id"], path, row["__line__"])
        refuse_duplicates(ids, path, lines)
        targets = self._ids_to_matrix([row["attribute_ids"] for row in rows], path, lines)
        paths = [self.root / "train" / f"{image_id}{self.options.image_ext}" for image_id in ids]
        require_images(paths, path, lines)
        return ImageTable(ids, paths, {HEAD: targets})

    def test_input_files(self) -> list[Path]:
        # labels.csv names the head's classes; sample_submission.csv lists the test ids the validator expects.
        return [self.root / "labels.csv", self.root / "sample_submission.csv", *self.read_test().paths]

    def read_test(self) -> ImageTable:
        path = self.root / "sample_submission.csv"
        rows = read_csv_rows(path, ["id", "attribute_ids"])
        ids = [row["id"] for row in rows]
        for row in rows:
            _check_id(row["id"], path, row["__line__"])
        refuse_duplicates(ids, path, [row["__line__"] for row in rows])
        paths = [self.root / "test" / f"{image_id}{self.options.image_ext}" for image_id in ids]
        require_images(paths, path, [row["__line__"] for row in rows])
        test_dir = self.root / "test"
        extra = sorted({p.stem for p in test_dir.glob(f"*{self.options.image_ext}")} - set(ids))
        if extra:
            raise PipelineError(
                f"{test_dir}: {len(extra)} image(s) not in {path.name} (e.g. {extra[0]}{self.options.image_ext}); "
                "the test folder must match the sample submission"
            )
        return ImageTable(ids, paths)

    @classmethod
    def write_demo(cls, comp_dir: Path, answers_dir: Path, seed: int, n_train: int, n_test: int) -> None:
        """Write an iMet-2019-layout demo into the empty `comp_dir`, the test answers into `answers_dir`.

        Layout: train.csv (id,attribute_ids), labels.csv (attribute_id,attribute_name),
        sample_submission.csv, train/<id>.png, test/<id>.png. Answers: solution.csv (id,attribute_ids).
        """
        pools = drawing.digit_pools(seed)
        ids = drawing.hex_names(drawing.split_rng(seed, _DEMO_SALT, "train"), n_train + n_test, 16)
        rows = {"train": [], "test": []}
        for split, split_ids in (("train", ids[:n_train]), ("test", ids[n_train:])):
            for index, image_id in enumerate(split_ids):
                image, labels = _demo_image(pools, split, drawing.image_rng(seed, _DEMO_SALT, split, index))
                drawing.save_image(image, comp_dir / split / f"{image_id}.png")
                rows[split].append(f"{image_id},{drawing.join_ids(labels)}")
        header = "id,attribute_ids"
        drawing.write_lines(comp_dir / "train.csv", [header] + sorted(rows["train"]))
        label_rows = [f"{index},{name}" for index, name in enumerate(DEMO_LABELS)]
        drawing.write_lines(comp_dir / "labels.csv", ["attribute_id,attribute_name"] + label_rows)
        drawing.write_lines(
            comp_dir / "sample_submission.csv", [header] + [f"{i},0 1 2" for i in sorted(ids[n_train:])]
        )
        drawing.write_lines(answers_dir / "solution.csv", [header] + sorted(rows["test"]))

    def _ids_to_matrix(self, cells: list[str], path: Path, lines: list[str]) -> np.ndarray:
        column_of = {class_id: column for column, class_id in enumerate(self.class_ids)}
        known = set(column_of)
        matrix = np.zeros((len(cells), len(column_of)), dtype=np.uint8)
        for row_index, (cell, line) in enumerate(zip(cells, lines)):
            for class_id in parse_id_list(cell, known, path, line, "attribute_ids"):
                matrix[row_index, column_of[class_id]] = 1
        return matrix

    # --- submission ------------------------------------------------------------------------
    def write_submission(
        self, out_dir: Path, ids: list[str], labels: dict[str, Any], probs: dict[str, np.ndarray]
    ) -> list[Path]:
        class_ids = np.asarray(self.class_ids)
        lines = ["id,attribute_ids"]
        for image_id, row in zip(ids, labels[HEAD]):
            lines.append(f"{image_id},{' '.join(str(c) for c in np.sort(class_ids[np.flatnonzero(row)]))}")
        return write_validated({Path(out_dir) / "submission.csv": "\n".join(lines) + "\n"}, self._validate)

    def read_submission(self, files: list[Path]) -> tuple[list[str], dict[str, Any]]:
        path = Path(files[0])
        ids, matrix = self._validate(path, path)
        return ids, {HEAD: matrix.astype(bool)}

    def _validate(self, path: Path, shown_as: Path) -> tuple[list[str], np.ndarray]:
        """Check a submission against sample_submission.csv: same ids in the same order, known class ids."""
        rows = read_csv_rows(path, ["id", "attribute_ids"])
        expected = [row["id"] for row in read_csv_rows(self.root / "sample_submission.csv", ["id", "attribute_ids"])]
        ids = [row["id"] for row in rows]
        lines = [row["__line__"] for row in rows]
        for row in rows:
            if not row["id"]:
                raise PipelineError(f"{shown_as} line {row['__line__']}: empty id")
        refuse_duplicates(ids, shown_as, lines)
        if len(ids) != len(expected):
            raise PipelineError(
                f"{shown_as}: {len(ids)} rows, sample_submission.csv has {len(expected)}; predict every test image"
            )
        for index, (got, want) in enumerate(zip(ids, expected)):
            if got != want:
                raise PipelineError(
                    f"{shown_as} line {index + 2}: id '{got}' where sample_submission.csv has '{want}'; keep its ids and order"
                )
        matrix = self._ids_to_matrix([row["attribute_ids"] for row in rows], shown_as, lines)
        return ids, matrix


# --- demo: mosaics of 1-4 digits, labels = which digits appear (+ two count tags) ---------------------------

DEMO_LABELS = tuple(f"digit::{digit}" for digit in range(drawing.N_DIGITS)) + ("tag::single", "tag::many")
# iMet-like long tail: digit d is drawn with weight 1 / (d + 1), so 0 is common and 9 rare.
DEMO_DIGIT_WEIGHTS = tuple(1.0 / (digit + 1) for digit in range(drawing.N_DIGITS))
_DEMO_SALT = 1
_DEMO_SIZE = 64
_DEMO_COUNT_PROBS = (0.35, 0.3, 0.2, 0.15)


def _demo_image(pools: drawing.DigitPools, split: str, rng: np.random.Generator) -> tuple[Image.Image, list[int]]:
    weights = np.asarray(DEMO_DIGIT_WEIGHTS) / sum(DEMO_DIGIT_WEIGHTS)
    count = int(rng.choice(len(_DEMO_COUNT_PROBS), p=_DEMO_COUNT_PROBS)) + 1
    digits = rng.choice(drawing.N_DIGITS, size=count, replace=False, p=weights)
    cells = rng.permutation(4)[:count]
    canvas = drawing.photo_crop(rng, _DEMO_SIZE, _DEMO_SIZE) * 0.3
    cell = _DEMO_SIZE // 2
    for digit, cell_index in zip(digits, cells):
        top, left = (cell_index // 2) * cell + 3, (cell_index % 2) * cell + 3
        drawing.place_digit(
            canvas,
            drawing.pick_digit(pools, split, int(digit), rng),
            cell - 6,
            top,
            left,
            drawing.bright_color(rng),
            rng,
        )
    labels = [int(d) for d in digits]
    if count == 1:
        labels.append(DEMO_LABELS.index("tag::single"))
    if count >= 3:
        labels.append(DEMO_LABELS.index("tag::many"))
    return drawing.to_image(canvas), labels
