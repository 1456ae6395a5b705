"""The training kernel (src/kaggle/local/training_kernel.py, src/kaggle/on_kaggle/train.py, `kernel train` /
`kernel pull`): checked locally against the train stage, pushed through the REAL `kaggle` CLI to the fake server, which RUNS it
(network blocked), stopped after an epoch, resumed from the pulled last.pt, pulled back with its checksums,
config and folds file verified, and ending with the weights a local train makes."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_kaggle_server import FAKE_USER  # noqa: E402
from helpers import kaggle_demo_experiment  # noqa: E402

from src.artifacts import Experiment  # noqa: E402
from src.config import config_to_dict  # noqa: E402
from src.errors import PipelineError  # noqa: E402
from src.kaggle.local import kernel_script, training_kernel  # noqa: E402
from src.kaggle.on_kaggle.install_wheels import file_sha256  # noqa: E402
from src.steps import kernel as kernel_step  # noqa: E402
from src.steps import oof, submit, thresholds, train  # noqa: E402

pytestmark = pytest.mark.slow  # whole stage chains and kernels (the inner loop leaves them out)

COMPETITION = "demo-imet"
TRAIN_REF = f"{FAKE_USER}/tiny-train"


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> Experiment:
    """A tiny iMet demo with its folds file: 2 folds, 2 epochs."""
    return kaggle_demo_experiment(
        tmp_path_factory.mktemp("train-kernel"),
        COMPETITION,
        60,
        10,
        {
            "kaggle": {"username": FAKE_USER},
            "thresholds": {"optuna_trials": 2, "honest_folds": 2},
            "submit": {"checkpoint": "fold-0"},
        },
    )


def _run_files(run_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def _pulled_runs(exp: Experiment) -> dict[str, dict[str, bytes]]:
    return {path.name: _run_files(path) for _, path in exp.fold_run_dirs()}


def test_the_training_kernel_is_built_and_matches_a_local_train(exp, monkeypatch):
    monkeypatch.setattr(training_kernel, "CHECK_IMAGES", 20)  # the check trains a share, not the whole set
    logs: list[str] = []

    built = kernel_step.train(exp, fold="0", check=True, quiet=True, log=logs.append)

    metadata = json.loads((exp.train_kernel_dir / "kernel-metadata.json").read_text())
    assert (metadata["id"], metadata["code_file"], metadata["enable_gpu"], metadata["enable_internet"]) == (
        TRAIN_REF,
        "tiny-train.py",
        True,
        False,
    )
    assert metadata["dataset_sources"] == [f"{FAKE_USER}/tiny-wheels"] and metadata["competition_sources"] == [
        COMPETITION
    ]
    embedded = kernel_script.extract_archive(built.script_path.read_text())
    assert embedded["inputs/folds-k2-seed42.csv"] == exp.folds_path.read_bytes()
    shipped = embedded["inputs/config.yaml"].decode()
    assert str(exp.config.data.root) not in shipped and str(exp.config.output_dir) not in shipped
    assert "code/src/kaggle/on_kaggle/train.py" in embedded and "code/src/steps/train.py" in embedded
    assert any(line.startswith("training check: passed") for line in logs), logs
    assert "data.train_subset: 20 training images" in exp.train_check_log.read_text()  # the kernel's side of it
    assert not exp.oof_dir.exists()  # the check trains in scratch folders only


def test_run_folders_are_compared_by_content_not_timings():
    def checkpoint(weight: float, seconds: float) -> bytes:
        buffer = io.BytesIO()
        torch.save(
            {"model": {"w": torch.tensor([weight])}, "state": {"history": [{"loss": 1.0, "seconds": seconds}]}}, buffer
        )
        return buffer.getvalue()

    local = {"fold-0": {"last.pt": checkpoint(0.5, 1.0), "epochs.csv": b"epoch,loss,seconds\n1,0.5,1.0\n"}}
    same = {"fold-0": {"last.pt": checkpoint(0.5, 9.0), "epochs.csv": b"epoch,loss,seconds\n1,0.5,9.0\n"}}
    other = {"fold-0": {"last.pt": checkpoint(0.5000001, 1.0), "epochs.csv": b"epoch,loss,seconds\n1,0.6,1.0\n"}}

    assert training_kernel.compare_runs(same, local) == []
    assert training_kernel.compare_runs(other, local) == ["fold-0/epochs.csv differs", "fold-0/last.pt differs"]
    assert training_kernel.compare_runs({}, local) == ["the kernel wrote runs [], the local train ['fold-0']"]


def test_train_on_kaggle_stop_resume_pull_then_continue_here(exp, fake_kaggle, tmp_path):
    fake_kaggle.serve_competition_of(exp)
    logs: list[str] = []

    kernel_step.train(exp, fold="all", stop_after_epochs=1, push=True, check=False, log=logs.append)
    fake_kaggle.wait_for_runs()
    kernel_step.status(exp, log=logs.append)
    kernel_step.pull(exp, log=logs.append)

    assert f"training kernel {TRAIN_REF}: complete" in logs, fake_kaggle.kernel_logs.get(TRAIN_REF)
    [pushed] = fake_kaggle.rpc_bodies("SaveKernel")
    assert pushed["enableInternet"] is False and pushed["competitionDataSources"] == [COMPETITION]
    assert [p.name for _, p in exp.fold_run_dirs()] == ["fold-0", "fold-1"]
    assert (exp.run_dir(0) / "epochs.csv").read_text().count("\n") == 2  # stopped cleanly after one epoch
    assert not (exp.run_dir(0) / "summary.json").exists()

    kernel_step.train(exp, fold="all", resume=True, push=True, check=True, log=logs.append)  # checked from the state
    fake_kaggle.wait_for_runs()
    kernel_step.pull(exp, log=logs.append)

    assert sum(line.startswith("training check: passed") for line in logs) == 1
    assert fake_kaggle.datasets[f"{FAKE_USER}/tiny-train-state"].files  # the pulled last.pt went back
    assert "resuming from" in fake_kaggle.kernel_logs[TRAIN_REF]
    config = exp.config.model_copy(deep=True)
    config.output_dir = tmp_path / "local"
    local = Experiment(config, exp.config_path)
    train.run(local, "all", quiet=True, log=[].append)
    assert training_kernel.compare_runs(_pulled_runs(exp), _pulled_runs(local)) == []
    written_here = json.dumps(config_to_dict(exp.config), indent=2).encode()  # what a local train writes
    assert [files["config.json"] for files in _pulled_runs(exp).values()] == [written_here] * 2

    # Every fold finished on "Kaggle", so the kernel predicted the OOF rows there too: pulled, verified, and the
    # same bytes as the oof stage makes here from the pulled runs.
    assert any("OOF predicted on Kaggle (oof.npz, oof_scores.json, test_probs.kaggle.npz)" in line for line in logs)
    from_kaggle = exp.oof_path.read_bytes(), exp.oof_scores_path.read_bytes()
    oof.run(exp, quiet=True, log=[].append)  # the pulled runs carry on here
    assert (exp.oof_path.read_bytes(), exp.oof_scores_path.read_bytes()) == from_kaggle
    thresholds.run(exp, quiet=True, log=[].append)
    # fold-0 (submit.checkpoint) finished on "Kaggle": its test probabilities came with the pull and submit uses
    # them; predicted here instead they are the same numbers, so the same files.
    submitted: list[str] = []
    submit.run(exp, quiet=True, log=submitted.append)
    assert any(line.startswith("test probabilities: the training kernel's") for line in submitted), submitted
    from_kaggle = {path.name: path.read_bytes() for path in exp.submission_dir.iterdir() if path.is_file()}
    exp.kaggle_test_probs_path.rename(exp.kaggle_test_probs_path.with_suffix(".away"))
    submitted.clear()
    submit.run(exp, quiet=True, log=submitted.append)
    assert not any(line.startswith("test probabilities: the training kernel's") for line in submitted)
    assert {path.name: path.read_bytes() for path in exp.submission_dir.iterdir() if path.is_file()} == from_kaggle
    kernel_step.build(exp, check=False, quiet=True, log=[].append)
    assert (exp.kernel_dir / "dataset" / "model.pt").read_bytes() == (exp.run_dir(0) / "best.pt").read_bytes()


def test_pull_refuses_another_config_a_changed_file_and_a_local_run(exp, fake_kaggle):
    fake_kaggle.kernels[TRAIN_REF] = {"version": 1}
    fake_kaggle.kernel_status[TRAIN_REF] = ("COMPLETE", None)
    exp.train_push_path.write_text(json.dumps({"kernel_ref": TRAIN_REF}))
    outputs = {
        f"oof/tiny/{run}/{name}": data for run, files in _pulled_runs(exp).items() for name, data in files.items()
    }
    manifest = {
        "experiment": "tiny",
        "config": training_kernel.portable_config(json.loads(outputs["oof/tiny/fold-0/config.json"])),
        "folds_sha256": file_sha256(exp.folds_path),
        "runs": {
            run: {name: file_sha256(exp.oof_dir / run / name) for name in files}
            for run, files in _pulled_runs(exp).items()
        },
    }
    fake_kaggle.kernel_outputs[TRAIN_REF] = {**outputs, "kaggle-run.json": json.dumps(manifest).encode()}
    before = _pulled_runs(exp)

    other = exp.config.model_copy(deep=True)
    other.train.lr = 0.004
    with pytest.raises(PipelineError, match=r"trained with another config \(train.lr 0.003 there, 0.004 here"):
        kernel_step.pull(Experiment(other, exp.config_path), log=[].append)
    fake_kaggle.kernel_outputs[TRAIN_REF]["oof/tiny/fold-0/best.pt"] = b"not the weights"
    with pytest.raises(
        PipelineError, match=r"fold-0/best.pt: missing, or not the file the kernel wrote.*the download stays in"
    ):
        kernel_step.pull(exp, log=[].append)
    fake_kaggle.kernel_outputs[TRAIN_REF]["oof/tiny/fold-0/best.pt"] = outputs["oof/tiny/fold-0/best.pt"]
    (exp.run_dir(1) / "epochs.csv").write_text("epoch\n1\n")  # a run changed here since the pull
    with pytest.raises(PipelineError, match=r"fold-1: holds a run that did not come from this kernel"):
        kernel_step.pull(exp, log=[].append)
    before["fold-1"]["epochs.csv"] = b"epoch\n1\n"
    assert _pulled_runs(exp) == before  # nothing was replaced

    # A manifest cannot switch a check off or reach outside the run folders; unlisted files are not taken.
    def pull_with(change: dict, extra: dict | None = None) -> str:
        listed = json.loads(json.dumps(manifest))
        listed.update(change)
        fake_kaggle.kernel_outputs[TRAIN_REF] = {
            **outputs,
            **(extra or {}),
            "kaggle-run.json": json.dumps(listed).encode(),
        }
        with pytest.raises(PipelineError) as error:
            kernel_step.pull(exp, log=[].append)
        return str(error.value)

    assert "another folds file" in pull_with({"folds_sha256": None})
    absolute = {**manifest["runs"], "fold-0": {**manifest["runs"]["fold-0"], "/etc/hostname": "0" * 64}}
    assert "'/etc/hostname' is not a plain relative name" in pull_with({"runs": absolute})
    assert "fold-0/UNLISTED.bin: not listed in kaggle-run.json" in pull_with({}, {"oof/tiny/fold-0/UNLISTED.bin": b"x"})
    # The OOF files a kernel predicted: only their own names, each with its sha256.
    assert "predictions name '../oof.npz', not an OOF file" in pull_with({"predictions": {"../oof.npz": "0" * 64}})
    changed = pull_with({"predictions": {"oof.npz": "0" * 64}}, {"oof/tiny/oof.npz": b"not the predictions"})
    assert "oof/tiny/oof.npz: missing, or not the file whose sha256" in changed
    assert _pulled_runs(exp) == before


def test_the_pretrained_weights_dataset_travels_with_a_pretrained_config(exp, fake_kaggle, tmp_path, monkeypatch):
    import timm

    tag = "test_resnet.r160_in1k"
    folder = tmp_path / "input" / "weights" / tag  # where the weights stage puts them (relative to the current folder)
    folder.mkdir(parents=True)
    torch.save(timm.create_model("test_resnet").state_dict(), folder / "model.pth")
    (folder / "pretrained_cfg.json").write_text(json.dumps({"architecture": "test_resnet"}))
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "tag": tag,
                "file": "model.pth",
                "size": (folder / "model.pth").stat().st_size,
                "sha256": file_sha256(folder / "model.pth"),
            }
        )
    )
    monkeypatch.chdir(tmp_path)
    config = exp.config.model_copy(deep=True)
    config.model.pretrained = tag
    pretrained = Experiment(config, exp.config_path)
    logs: list[str] = []

    kernel_step.train(pretrained, fold="0", check=True, log=logs.append)  # the kernel trains from the attached copy

    dataset = f"{FAKE_USER}/timm-test-resnet-r160-in1k"
    metadata = json.loads((exp.train_kernel_dir / "kernel-metadata.json").read_text())
    assert metadata["dataset_sources"] == [f"{FAKE_USER}/tiny-wheels", dataset]
    assert any(line.startswith("training check: passed") for line in logs)
    with pytest.raises(
        PipelineError,
        match=rf"dataset {dataset} \(the pretrained weights {tag}\) is not on Kaggle: "
        "push it first with `python -m src.stage weights",
    ):
        kernel_step.train(pretrained, fold="0", push=True, check=False, log=logs.append)
    fake_kaggle.add_dataset(dataset, {p.name: p.read_bytes() for p in folder.iterdir()})
    kernel_step.train(pretrained, fold="0", push=True, check=False, log=logs.append)
    assert fake_kaggle.rpc_bodies("SaveKernel")[-1]["datasetDataSources"] == [f"{FAKE_USER}/tiny-wheels", dataset]
