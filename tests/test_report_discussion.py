"""The report's generated sentences, the student's notes, the author line and the course's typography default."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from src.errors import PipelineError
from src.report import discussion
from src.report.build import method_label
from src.report.inputs import RunRecord


def run_record(name: str, train: list[float], valid: list[float] | None, **summary) -> RunRecord:
    epochs = {"epoch": range(1, len(train) + 1), "train_loss": train}
    if valid is not None:
        epochs["valid_loss"] = valid
    return RunRecord(name, 0, Path("."), epochs=pd.DataFrame(epochs), summary=summary)


def test_spread_names_the_best_and_worst_and_the_gap():
    rows = [
        {"class": "cat", "support": 10, "F1": 0.9},
        {"class": "dog", "support": 8, "F1": 0.4},
        {"class": "eel", "support": 0, "F1": 0.0},  # no positives: not the "worst class"
        {"class": "fox", "support": 5, "F1": 0.7},
    ]
    [sentence] = discussion.spread_sentences(rows, "class", "F1", ("class", "classes"))
    assert "best class is cat (F1 0.900)" in sentence and "worst dog (0.400)" in sentence
    assert "0.500 apart" in sentence and "1 of 3 classes are below the mean of 0.667" in sentence
    assert discussion.spread_sentences(rows[:1], "class", "F1", ("class", "classes")) == []


def test_threshold_gap_and_what_tuning_bought():
    rows = [
        {"method": "exact", "optimistic": 0.82, "honest": 0.79},
        {"method": "0.5 (no tuning)", "optimistic": 0.70, "honest": 0.70},
    ]
    first, second = discussion.threshold_sentences(rows, "exact", "F2")
    assert "0.8200" in first and "0.7900" in first and "+0.0300" in first
    assert "0.7000" in second and "+0.0900 on the honest figure" in second
    assert discussion.threshold_sentences(rows, "optuna", "F2") == [], "no sentence for a method not tuned"


def test_fold_spread_names_the_lowest_and_highest_fold():
    rows = [
        {"rows": "fold 0", "images": 10, "argmax": 0.81},
        {"rows": "fold 1", "images": 10, "argmax": 0.77},
        {"rows": "fold 2", "images": 10, "argmax": 0.84},
        {"rows": "overall", "images": 30, "argmax": 0.99},  # not a fold: never the highest
    ]
    [sentence] = discussion.fold_sentences(rows, "argmax", "accuracy")
    assert "from 0.7700 (fold 1) to 0.8400 (fold 2), 0.0700 apart" in sentence
    assert discussion.fold_sentences(rows[:1] + rows[-1:], "argmax", "accuracy") == [], "one fold: nothing to compare"


def test_overfitting_is_named_with_its_epoch_only_when_valid_loss_rose_while_train_loss_fell():
    overfit = run_record("fold-0", [1.0, 0.8, 0.6, 0.4, 0.3], [0.9, 0.7, 0.65, 0.75, 0.9])
    steady = run_record("fold-1", [1.0, 0.8, 0.6, 0.4, 0.3], [0.9, 0.7, 0.6, 0.55, 0.5])
    sentences = discussion.overfitting_sentences([overfit, steady])
    assert "fold-0: lowest at epoch 3 (0.6500), 0.9000 by epoch 5" in sentences[0]
    assert "fell from 0.6000 to 0.3000" in sentences[0]
    assert "fold-1" in sentences[1] and "fold-1" not in sentences[0]
    assert discussion.overfitting_sentences([steady]) == [
        "Validation loss did not rise while training loss fell in fold-1: no sign of overfitting."
    ]
    full_fit = run_record("full", [1.0, 0.5, 0.2], None)
    assert discussion.overfitting_sentences([full_fit]) == [], "no validation loss: nothing said"


def test_confusion_names_the_largest_off_diagonal_cells():
    matrix = np.array([[50, 2, 9], [0, 40, 1], [4, 0, 30]])
    [sentence] = discussion.confusion_sentences(matrix, ("a", "b", "c"))
    assert sentence.startswith("16 of 136 OOF images are confused")
    assert sentence.index("a taken for c (9 images, 15%)") < sentence.index("c taken for a (4 images, 12%)")
    assert "a taken for b (2 images" in sentence and "b taken for c" not in sentence
    assert "Every one of the 3" in discussion.confusion_sentences(np.eye(3, dtype=int), ("a", "b", "c"))[0]


def test_resources_sentence_sums_time_and_names_devices():
    runs = [
        run_record("fold-0", [1.0], None, train_seconds=30.0, device="cpu (2 threads)", peak_memory_mb=900.0),
        run_record("fold-1", [1.0], None, train_seconds=95.0, device="cpu (2 threads)", peak_memory_mb=1200.0),
    ]
    assert discussion.resource_sentences(runs) == [
        "Training took 2m 05s over 2 runs on cpu (2 threads), with a peak memory of 1,200 MB."
    ]
    assert discussion.resource_sentences([run_record("x", [1.0], None)]) == []


def test_notes_are_read_as_headings_and_paragraphs_and_a_missing_file_is_one_line(tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("# What worked\n\nFlips helped\nmore than mixup.\n\n- one\n- two\n", encoding="utf-8")
    assert discussion.read_notes(notes) == [
        ("h3", "What worked"),
        ("p", "Flips helped more than mixup."),
        ("p", "• one"),
        ("p", "• two"),
    ]
    with pytest.raises(PipelineError, match=r"^config report.notes: .*missing.md not found; point it at") as error:
        discussion.read_notes(tmp_path / "missing.md")
    assert "\n" not in str(error.value)


def test_notes_path_is_relative_to_the_config_file_first(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "notes.md").write_text("x")
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "configs" / "exp.yaml"
    assert discussion.resolve_notes("notes.md", config) == tmp_path / "configs" / "notes.md"
    (tmp_path / "mine.md").write_text("y")
    assert discussion.resolve_notes("mine.md", config) == Path("mine.md"), "else relative to the working directory"
    assert discussion.resolve_notes(None, config) is None


def test_the_label_count_rule_reads_as_words():
    assert method_label("global + labels per image in [0, None]") == "global, no labels-per-image limit (none helps)"
    assert method_label("global + labels per image in [1, 4]") == "global, at least 1 and at most 4 labels per image"
    assert method_label("global + labels per image in [0, 3]") == "global, at most 3 labels per image"
    assert method_label("exact") == "exact"


def test_celeba_defaults_to_arial_10_and_the_config_overrides_it():
    from src.formats import format_class
    from src.steps.report import report_typography

    def typography(name: str, font=None, size=None):
        exp = SimpleNamespace(
            fmt=format_class(name), config=SimpleNamespace(report=SimpleNamespace(font=font, font_size=size))
        )
        return report_typography(exp)

    assert (typography("celeba").font, typography("celeba").size) == ("arial", 10.0)
    assert (typography("folder").font, typography("folder").size) == ("dejavu", 8.5)
    assert (typography("celeba", "dejavu", 9).font, typography("celeba", "dejavu", 9).size) == ("dejavu", 9.0)


def test_report_config_keys_are_validated(tmp_path):
    from pydantic import ValidationError

    from src.config import PackageConfig, ReportConfig

    assert ReportConfig().font is None and ReportConfig().font_size is None and ReportConfig().notes is None
    assert PackageConfig().author is None
    with pytest.raises(ValidationError):
        ReportConfig(font_size=7.5)  # below the 8 pt floor
    with pytest.raises(ValidationError):
        ReportConfig(font="comic")


def test_the_freezing_schedule_says_what_unfreezing_brought():
    frozen = run_record("fold-0", [1.0, 0.8, 0.6, 0.5], [0.9, 0.8, 0.7, 0.6])
    frozen.epochs["trainable"] = ["heads", "all", "all", "all"]
    frozen.epochs["score"] = [0.41, 0.80, 0.93, 0.90]
    [sentence] = discussion.freezing_sentences([frozen], "accuracy")
    assert sentence == (
        "The freezing schedule, held-out accuracy: fold-0: 0.4100 after 1 epoch(s) training heads only, 0.9300 at "
        "epoch 3 with everything training (+0.5200)."
    )
    always = run_record("fold-1", [1.0, 0.8], [0.9, 0.8])
    always.epochs["trainable"], always.epochs["score"] = ["all", "all"], [0.5, 0.6]
    assert discussion.freezing_sentences([always], "accuracy") == [], "nothing frozen: nothing said"
