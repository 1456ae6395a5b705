"""Fault injection: SIGKILL `train` mid-epoch, during validation and during a checkpoint write, then
`--resume`: the final weights equal an uninterrupted run's exactly (CPU, same seed). Damaged
checkpoints are detected and the previous good one is used; artifacts are never torn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_config

from src.checkpoint_files import load_checkpoint, save_checkpoint
from src.errors import PipelineError
from src.stage import main

ROOT = Path(__file__).resolve().parents[1]
EXTRA = {"train": {"epochs": 2, "batch_size": 16, "ema_decay": 0.9}}


def train(config: Path, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "PIPELINE_CRASH_AT"}
    if crash_at:
        env["PIPELINE_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "src.stage", "train", "--config", str(config), "--fold", "0", "--quiet", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def reference(tiny_imet_root, tmp_path_factory):
    root, _ = tiny_imet_root
    tmp = tmp_path_factory.mktemp("crash-ref")
    config = tiny_config(tmp, "imet", root, EXTRA, name="ref")
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    assert main(["train", "--config", str(config), "--fold", "0", "--quiet"]) == 0
    return load_checkpoint(tmp / "out" / "oof" / "ref" / "fold-0" / "last.pt")["model"]


# 150 images, 3 folds -> 100 train rows -> 6 batches of 16 per epoch; batch 9 is mid-epoch 2.
@pytest.mark.parametrize("crash_at", ["batch:9", "validation:2", "write_last.pt:2"])
@pytest.mark.slow
def test_killed_run_resumes_to_identical_weights(reference, tiny_imet_root, tmp_path, crash_at):
    root, _ = tiny_imet_root
    config = tiny_config(tmp_path, "imet", root, EXTRA, name="crashy")
    killed = train(config, crash_at=crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run_dir = tmp_path / "out" / "oof" / "crashy" / "fold-0"
    assert (run_dir / "last.pt").exists() or (run_dir / "last.prev.pt").exists()
    resumed = train(config, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    weights = load_checkpoint(run_dir / "last.pt")["model"]
    for key, value in reference.items():
        assert torch.equal(weights[key], value), key
    assert not list(run_dir.glob(".*.tmp"))


def test_damaged_checkpoint_is_detected_and_previous_used(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": torch.tensor(1)}, keep_previous=True)
    save_checkpoint(path, {"epoch": torch.tensor(2)}, keep_previous=True)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    messages = []
    assert int(load_checkpoint(path, fallback=True, log=messages.append)["epoch"]) == 1
    assert "damaged on disk" in messages[0]
    with pytest.raises(PipelineError, match="damaged checkpoint"):
        load_checkpoint(path)
    path.write_bytes(bytes(data[:100]))  # truncated
    with pytest.raises(PipelineError, match="size 100 bytes"):
        load_checkpoint(path)


def test_artifact_killed_mid_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "oof" / "thresholds.json"
    target.parent.mkdir(parents=True)
    target.write_text('{"old": true}')
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from src.atomic import write_text; "
        "write_text(sys.argv[2], '{\"new\": true, \"pad\": \"' + 'x' * 1_000_000 + '\"}')"
    )
    env = {**os.environ, "PIPELINE_CRASH_AT": "atomic_write:1"}
    killed = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), str(target)], env=env, capture_output=True, timeout=60
    )
    assert killed.returncode == -signal.SIGKILL
    assert target.read_text() == '{"old": true}'
    finished = subprocess.run([sys.executable, "-c", code, str(ROOT), str(target)], capture_output=True, timeout=60)
    assert finished.returncode == 0 and target.read_text().startswith('{"new": true')


def test_unwritable_output_is_one_clear_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    import errno

    from src import atomic

    target = tmp_path / "submission.csv"
    target.write_text("old")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full_disk)
    with pytest.raises(PipelineError, match=r"cannot write \(no space left on the device\)"):
        atomic.write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]


def test_a_submission_that_fails_validation_moves_no_file_into_place(tmp_path):
    from src.atomic import write_validated

    first, second = tmp_path / "category.csv", tmp_path / "attribute.csv"
    first.write_text("old category")
    checked = []

    def validate(temp: Path, final: Path) -> None:
        checked.append((final.name, temp.read_text()))
        if final == second:
            raise PipelineError(f"{final}: row 2: bad label")

    with pytest.raises(PipelineError, match="attribute.csv: row 2"):
        write_validated({first: "new category\n", second: "new attribute\n"}, validate)
    assert checked == [("category.csv", "new category\n"), ("attribute.csv", "new attribute\n")]  # temps validated
    assert first.read_text() == "old category" and not second.exists()  # neither moved, the old file kept
    assert [p.name for p in tmp_path.iterdir()] == ["category.csv"]  # no temp left behind

    assert write_validated({first: "a\n", second: "b\n"}, lambda temp, final: None) == [first, second]
    assert (first.read_text(), second.read_text()) == ("a\n", "b\n")


def test_atomic_folder_replaces_a_folder_whole_or_not_at_all(tmp_path):
    from src.atomic import atomic_folder

    report = tmp_path / "report"
    report.mkdir()
    (report / "index.html").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(report) as staging:
        (staging / "index.html").write_text("half")
        raise RuntimeError("the PDF was refused")
    assert [p.name for p in tmp_path.iterdir()] == ["report"] and (report / "index.html").read_text() == "old"

    with atomic_folder(report) as staging:
        (staging / "index.html").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["report"] and (report / "index.html").read_text() == "new"

    report.rename(tmp_path / ".report.old")  # killed between its two renames: no report, the old one aside
    with atomic_folder(report) as staging:
        assert (report / "index.html").read_text() == "new"  # back in place while the rebuild runs
        (staging / "index.html").write_text("newer")
    assert [p.name for p in tmp_path.iterdir()] == ["report"] and (report / "index.html").read_text() == "newer"
