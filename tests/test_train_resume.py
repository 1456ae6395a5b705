"""A run stopped after an epoch and resumed ends with exactly the weights of an uninterrupted run (CPU, same seed)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from helpers import tiny_config

from src.stage import main


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_resume_matches_uninterrupted(tiny_imet_root, tmp_path):
    root, _ = tiny_imet_root
    extra = {
        "train": {
            "epochs": 3,
            "ema_decay": 0.9,
            "accumulate_steps": 2,
            "callbacks": [{"name": "freeze", "epochs": 1, "rewarm": True}],
        },
        "augment": {"train": [{"name": "HorizontalFlip", "p": 0.5}, {"name": "RandomBrightnessContrast", "p": 0.5}]},
    }
    straight = tiny_config(tmp_path / "a", "imet", root, extra, name="straight")
    resumed = tiny_config(tmp_path / "b", "imet", root, extra, name="resumed")
    assert main(["folds", "--config", str(straight), "--quiet"]) == 0

    assert main(["train", "--config", str(straight), "--fold", "1", "--quiet"]) == 0
    assert main(["train", "--config", str(resumed), "--fold", "1", "--quiet", "--stop-after-epochs", "1"]) == 0
    # without --resume an existing run is refused, not overwritten
    assert main(["train", "--config", str(resumed), "--fold", "1", "--quiet"]) == 2
    assert main(["train", "--config", str(resumed), "--fold", "1", "--quiet", "--resume"]) == 0

    a = _weights(tmp_path / "a" / "out" / "oof" / "straight" / "fold-1" / "last.pt")
    b = _weights(tmp_path / "b" / "out" / "oof" / "resumed" / "fold-1" / "last.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    best_a = _weights(tmp_path / "a" / "out" / "oof" / "straight" / "fold-1" / "best.pt")
    best_b = _weights(tmp_path / "b" / "out" / "oof" / "resumed" / "fold-1" / "best.pt")
    for key in best_a:
        assert torch.equal(best_a[key], best_b[key]), key
    csv_a = (tmp_path / "a" / "out" / "oof" / "straight" / "fold-1" / "epochs.csv").read_text().splitlines()
    csv_b = (tmp_path / "b" / "out" / "oof" / "resumed" / "fold-1" / "epochs.csv").read_text().splitlines()
    strip = lambda lines: [",".join(line.split(",")[:-2]) for line in lines]  # drop seconds, images/s  # noqa: E731
    assert strip(csv_a) == strip(csv_b)


@pytest.mark.slow
def test_resume_matches_uninterrupted_with_every_fine_tuning_option_on(tiny_imet_root, tmp_path):
    root, _ = tiny_imet_root
    callbacks = [
        {"name": "freeze", "epochs": 1, "stages": 3, "gradual": True, "rewarm": True},
        {"name": "mixup", "mixup_alpha": 0.4, "cutmix_alpha": 1.0, "prob": 0.8, "seed": 5},
    ]
    # Every callback at once (SWA is the one weight provider EMA excludes: tests/test_swa.py resumes it).
    everything = [
        *callbacks,
        {"name": "progressive_resize", "sizes": {1: 24, 3: 32}},
        {"name": "checkpoint_average", "k": 2},
    ]
    extra = {
        "model": {"drop_path_rate": 0.2},
        "train": {
            "epochs": 3,
            "ema_decay": 0.9,
            "accumulate_steps": 2,
            "layer_decay": 0.7,
            "head_lr_mult": 5.0,
            "clip_grad_norm": 0.5,
            "compile": True,
            "early_stopping_patience": 5,
            "tensorboard": True,
            "sampler": {"name": "repeat_factor", "threshold": 0.3},
            "callbacks": everything,
        },
    }
    _assert_resume_is_exact(root, tmp_path, extra)
    # train_score (off while mixup mixes the targets) resumes exactly too
    _assert_resume_is_exact(
        root, tmp_path / "score", {"train": {"epochs": 2, "layer_decay": 0.7, "callbacks": callbacks[:1]}}
    )


def _assert_resume_is_exact(root, tmp_path, extra):
    straight = tiny_config(tmp_path / "a", "imet", root, extra, name="straight")
    resumed = tiny_config(tmp_path / "b", "imet", root, extra, name="resumed")
    assert main(["folds", "--config", str(straight), "--quiet"]) == 0
    assert main(["train", "--config", str(straight), "--fold", "1", "--quiet"]) == 0
    assert main(["train", "--config", str(resumed), "--fold", "1", "--quiet", "--stop-after-epochs", "1"]) == 0
    assert main(["train", "--config", str(resumed), "--fold", "1", "--quiet", "--resume"]) == 0
    for name in ("last.pt", "best.pt"):
        a = _weights(tmp_path / "a" / "out" / "oof" / "straight" / "fold-1" / name)
        b = _weights(tmp_path / "b" / "out" / "oof" / "resumed" / "fold-1" / name)
        assert a.keys() == b.keys() and not any("_orig_mod" in key for key in a)  # the bare model's keys
        assert all(torch.equal(a[key], b[key]) for key in a), name
    csv_a = pd.read_csv(tmp_path / "a" / "out" / "oof" / "straight" / "fold-1" / "epochs.csv")
    csv_b = pd.read_csv(tmp_path / "b" / "out" / "oof" / "resumed" / "fold-1" / "epochs.csv")
    pd.testing.assert_frame_equal(
        csv_a.drop(columns=["seconds", "images_per_s"]), csv_b.drop(columns=["seconds", "images_per_s"])
    )


def test_head_warmup_leaves_backbone_untouched_in_first_epoch(tiny_imet_root, tmp_path):
    root, _ = tiny_imet_root
    config = tiny_config(
        tmp_path,
        "imet",
        root,
        {"train": {"epochs": 2, "weight_decay": 0.0, "callbacks": [{"name": "freeze", "epochs": 1, "rewarm": True}]}},
    )
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    assert main(["train", "--config", str(config), "--fold", "0", "--quiet", "--stop-after-epochs", "1"]) == 0
    trained = torch.load(
        tmp_path / "out" / "oof" / "tiny" / "fold-0" / "last.pt", map_location="cpu", weights_only=True
    )["model"]
    initial = _initial_state(root)
    conv_keys = [k for k in trained if k.startswith("backbone.") and trained[k].ndim == 4]
    head_keys = [k for k in trained if k.startswith("heads.")]
    assert conv_keys and head_keys
    # Backbone convolutions keep their seeded initial values; the heads moved.
    assert all(torch.equal(trained[k], initial[k]) for k in conv_keys)
    assert any(not torch.equal(trained[k], initial[k]) for k in head_keys)


def _initial_state(root):
    from src.formats import create_format
    from src.model import build_model
    from src.runtime import seed_everything

    seed_everything(0)  # train.seed defaults to 0: the same initial weights the run started from
    return build_model("test_resnet", create_format("imet", root).heads()).state_dict()


def test_early_stopping_ends_the_run_when_the_metric_stalls(tiny_imet_root, tmp_path):
    import pandas as pd

    root, _ = tiny_imet_root
    # A learning rate this small leaves the weights as they are (only BatchNorm statistics move), so the
    # metric stalls within a few epochs and patience 1 ends the run early.
    config = tiny_config(
        tmp_path, "imet", root, {"train": {"epochs": 6, "lr": 1e-12, "early_stopping_patience": 1, "tensorboard": True}}
    )
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    assert main(["train", "--config", str(config), "--fold", "2", "--quiet"]) == 0
    epochs = pd.read_csv(tmp_path / "out" / "oof" / "tiny" / "fold-2" / "epochs.csv")
    assert len(epochs) < 6
    assert epochs["score"].iloc[-1] <= epochs["score"].iloc[:-1].max()  # the last epoch did not improve
    assert (
        main(["train", "--config", str(config), "--fold", "2", "--quiet", "--resume"]) == 0
    )  # finished: no more epochs
    assert len(pd.read_csv(tmp_path / "out" / "oof" / "tiny" / "fold-2" / "epochs.csv")) == len(epochs)
    assert list((tmp_path / "out" / "oof" / "tiny" / "fold-2" / "tensorboard").glob("events.out.tfevents.*"))


def test_unreadable_training_images_stop_the_run_or_are_skipped_and_counted(tiny_imet_root, tmp_path, capsys):
    import json
    import shutil

    source, _ = tiny_imet_root
    root = tmp_path / "copy"
    shutil.copytree(source, root)
    broken = sorted((root / "train").glob("*.png"))[0]
    broken.write_bytes(b"")  # a zero-byte image
    config = tiny_config(tmp_path, "imet", root, {"train": {"epochs": 1}})
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    assert main(["train", "--config", str(config), "--fold", "0", "--quiet"]) == 2
    assert f"{broken}: unreadable image" in capsys.readouterr().err
    assert not (tmp_path / "out" / "oof" / "tiny" / "fold-0").exists()  # nothing written
    assert main(["train", "--config", str(config), "--fold", "0", "--quiet", "data.skip_unreadable=true"]) == 0
    summary = json.loads((tmp_path / "out" / "oof" / "tiny" / "fold-0" / "summary.json").read_text())
    assert summary["skipped_unreadable"] == 1 and summary["skipped_files"] == [str(broken)]
    assert "skipped unreadable image" in capsys.readouterr().out


def test_batches_of_one_image_are_refused_before_training_with_a_batchnorm_model(tiny_imet_root, tmp_path, capsys):
    root, _ = tiny_imet_root
    config = tiny_config(tmp_path, "imet", root, {"train": {"epochs": 1, "batch_size": 1}})
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    assert main(["train", "--config", str(config), "--fold", "0", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert (
        "train.batch_size 1 over 1 process(es) gives batches of 1 image(s)" in error
        and "raise train.batch_size" in error
    )
    assert not (tmp_path / "out" / "oof" / "tiny" / "fold-0" / "last.pt").exists()


def test_time_budget_stops_after_a_whole_epoch_and_resume_finishes_the_same_run(tiny_imet_root, tmp_path, capsys):
    """A Kaggle-style run limit: the epoch that would pass train.time_budget_s is not started; --resume continues."""
    root, _ = tiny_imet_root
    extra = {"train": {"epochs": 3}}
    straight = tiny_config(tmp_path / "a", "imet", root, extra, name="straight")
    budgeted = tiny_config(tmp_path / "b", "imet", root, extra, name="budgeted")
    assert main(["folds", "--config", str(straight), "--quiet"]) == 0
    assert main(["train", "--config", str(straight), "--fold", "0", "--quiet"]) == 0

    assert main(["train", "--config", str(budgeted), "--fold", "0", "--quiet", "train.time_budget_s=0.001"]) == 0
    assert "another would pass train.time_budget_s 0.001 s; continue with --resume" in capsys.readouterr().out
    run_dir = tmp_path / "b" / "out" / "oof" / "budgeted" / "fold-0"
    assert len((run_dir / "epochs.csv").read_text().splitlines()) == 2  # header + the one whole epoch
    assert not (run_dir / "summary.json").exists()
    assert main(["train", "--config", str(budgeted), "--fold", "0", "--quiet", "--resume"]) == 0
    a = _weights(tmp_path / "a" / "out" / "oof" / "straight" / "fold-0" / "last.pt")
    b = _weights(run_dir / "last.pt")
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_head_warmup_epochs_names_its_new_spelling_in_one_line(tiny_imet_root, tmp_path, capsys):
    root, _ = tiny_imet_root
    config = tiny_config(tmp_path, "imet", root, {"train": {"head_warmup_epochs": 2}})
    assert main(["folds", "--config", str(config), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "train.head_warmup_epochs: has moved to the freeze callback" in error
    assert "train.callbacks: [{name: freeze, epochs: 2, rewarm: true}]" in error
    assert (
        main(["folds", "--config", str(config), "--quiet", "train.head_warmup_epochs=0"]) == 0
    )  # as saved configs hold


def test_the_time_budget_counts_the_whole_call_so_fold_all_does_not_start_a_run_it_cannot_fit(
    tiny_imet_root, tmp_path, capsys
):
    """`--fold all` in one Kaggle session: once the call's budget is spent, the next fold is not started (the budget
    was per run, so every fold got the whole session); --resume continues with the first unfinished one."""
    root, _ = tiny_imet_root
    config = tiny_config(tmp_path, "imet", root, {"train": {"epochs": 2}}, name="budget")
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    oof_dir = tmp_path / "out" / "oof" / "budget"

    assert main(["train", "--config", str(config), "--fold", "all", "--quiet", "train.time_budget_s=0.001"]) == 0

    out = capsys.readouterr().out
    assert "stopped after 1 epoch(s): another would pass train.time_budget_s 0.001 s" in out
    assert "fold-1 not started: its first epoch would pass this call's train.time_budget_s 0.001 s" in out
    assert len((oof_dir / "fold-0" / "epochs.csv").read_text().splitlines()) == 2  # header + one whole epoch
    assert not (oof_dir / "fold-1" / "last.pt").exists()
    assert main(["train", "--config", str(config), "--fold", "all", "--quiet", "--resume"]) == 0
    assert all((oof_dir / f"fold-{k}" / "summary.json").exists() for k in (0, 1))
