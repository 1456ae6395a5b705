"""Fine-tuning controls: freezing (frozen parameters and BatchNorm statistics unchanged, gradual unfreezing, DDP),
layer-wise lr decay as timm computes it, the head lr multiplier, mixup / cutmix targets for each head kind and never
in validation, gradient clipping between unscaling and the step, compile's fallback line, train_score."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import run_torchrun, tiny_config, tiny_training

from src.config import TrainConfig, load_config
from src.engine import Batch, build_optimizer, create_callbacks, param_groups
from src.engine.callbacks.mixup import mix_targets
from src.errors import PipelineError
from src.formats.base import HeadSpec
from src.losses import MultiHeadLoss
from src.model import backbone_stages, build_model
from src.stage import main

ROOT = Path(__file__).resolve().parents[1]
HEADS = [HeadSpec("attributes", "multilabel", tuple("abcde")), HeadSpec("category", "softmax", tuple("xyz"))]


def _initial_state(root) -> dict[str, torch.Tensor]:
    from src.formats import create_format
    from src.runtime import seed_everything

    seed_everything(0)  # train.seed defaults to 0: the weights the run started from
    return build_model("test_resnet", create_format("imet", root).heads()).state_dict()


def _run(tmp_path: Path, name: str = "tiny", fold: int = 0) -> Path:
    return tmp_path / "out" / "oof" / name / f"fold-{fold}"


# ---- parameter groups ---------------------------------------------------------------------------


def test_layer_decay_gives_each_parameter_timms_lr_and_the_heads_their_multiplier():
    import timm
    from timm.optim import param_groups_layer_decay

    heads = HEADS[:1]
    model = build_model("test_resnet", heads)
    names = {id(p): name for name, p in model.named_parameters()}
    ours = {
        names[id(p)]: (group["lr"], group["weight_decay"], group["group"])
        for group in param_groups(model, 0.05, lr=1e-3, layer_decay=0.75, head_lr_mult=10.0)
        for p in group["params"]
    }

    reference = timm.create_model("test_resnet", num_classes=5)  # the same network with timm's own classifier (fc)
    reference_names = {id(p): name for name, p in reference.named_parameters()}
    expected = {}
    for group in param_groups_layer_decay(reference, 0.05, layer_decay=0.75):
        for p in group["params"]:
            name = reference_names[id(p)]
            expected[name] = (
                1e-3 * group["lr_scale"] * (10.0 if name.startswith("fc.") else 1.0),
                group["weight_decay"],
            )

    renamed = {
        name.replace("backbone.", "", 1) if name.startswith("backbone.") else "fc." + name.split(".")[-1]: value
        for name, value in ours.items()
    }
    assert renamed.keys() == expected.keys()
    for name, (lr, decay) in expected.items():
        assert renamed[name][:2] == pytest.approx((lr, decay), rel=1e-12), name
    scales = sorted({round(lr / 1e-3, 12) for lr, _, group in ours.values() if group != "heads"})
    assert scales == pytest.approx([0.75**k for k in range(5, 0, -1)])  # stem ... layer4: 0.75^5 .. 0.75^1
    assert {group for _, _, group in ours.values()} == {"depth0", "depth1", "depth2", "depth3", "depth4", "heads"}


def test_default_groups_are_unchanged_and_the_head_multiplier_alone_changes_only_the_heads():
    model = build_model("test_resnet", HEADS)
    default = param_groups(model, 0.05)
    assert [(g["part"], g["weight_decay"], len(g["params"])) for g in default] == [
        ("backbone", 0.05, 15),
        ("backbone", 0.0, 30),
        ("heads", 0.05, 2),
        ("heads", 0.0, 2),
    ]
    assert all(set(g) == {"params", "weight_decay", "part"} for g in default)  # no lr of their own: AdamW's lr
    optimizer = build_optimizer(model, MultiHeadLoss(HEADS, TrainConfig().loss), TrainConfig(lr=1e-3))
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3] * 4

    optimizer = build_optimizer(model, MultiHeadLoss(HEADS, TrainConfig().loss), TrainConfig(lr=1e-3, head_lr_mult=10))
    assert [(g["part"], g["lr"]) for g in optimizer.param_groups] == [
        ("backbone", 1e-3),
        ("backbone", 1e-3),
        ("heads", 1e-2),
        ("heads", 1e-2),
    ]


# ---- freezing -----------------------------------------------------------------------------------


def test_frozen_stages_and_their_batchnorm_statistics_stay_unchanged_then_unfreeze_a_stage_per_epoch(
    tiny_imet_root, tmp_path
):
    root, _ = tiny_imet_root
    freeze = {"name": "freeze", "epochs": 1, "stages": 2, "gradual": True}
    config = tiny_config(
        tmp_path,
        "imet",
        root,
        {"train": {"epochs": 3, "weight_decay": 0.05, "layer_decay": 0.8, "callbacks": [freeze]}},
    )
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    assert main(["train", "--config", str(config), "--fold", "0", "--quiet", "--stop-after-epochs", "1"]) == 0
    after_one = torch.load(_run(tmp_path) / "last.pt", map_location="cpu", weights_only=True)["model"]
    initial = _initial_state(root)
    frozen = ("backbone.conv1.", "backbone.layer1.")  # test_resnet's stem and layer1: its first two stages
    frozen_keys = [k for k in initial if k.startswith(frozen)]
    assert any(k.endswith("running_mean") for k in frozen_keys) and any(k.endswith("weight") for k in frozen_keys)
    # Weights (weight decay 0.05 would have moved any parameter that got a gradient) and BatchNorm statistics.
    assert all(torch.equal(after_one[k], initial[k]) for k in frozen_keys)
    trained = [k for k in initial if k.startswith("backbone.layer2.") and k.endswith("running_mean")]
    assert trained and all(not torch.equal(after_one[k], initial[k]) for k in trained)
    assert not torch.equal(after_one["backbone.layer2.0.conv1.weight"], initial["backbone.layer2.0.conv1.weight"])

    assert main(["train", "--config", str(config), "--fold", "0", "--quiet", "--resume"]) == 0
    epochs = pd.read_csv(_run(tmp_path) / "epochs.csv")
    assert list(epochs["trainable"]) == [
        "layer2.0+layer3.0+layer4.0+heads",
        "layer1.0+layer2.0+layer3.0+layer4.0+heads",
        "all",
    ]
    assert list(epochs["lr_depth0"] > 0) == [False, False, True] and list(epochs["lr_depth1"] > 0) == [
        False,
        True,
        True,
    ]
    assert (epochs["lr_heads"] > epochs["lr_depth4"]).all() and (epochs["lr_depth4"] > epochs["lr_depth3"]).all()
    assert epochs["train_score"].between(0, 1).all()
    summary = json.loads((_run(tmp_path) / "summary.json").read_text())
    assert summary["best_train_score"] == pytest.approx(epochs["train_score"].iloc[summary["best_epoch"] - 1])


def test_without_freeze_bn_frozen_weights_stay_but_their_batchnorm_statistics_move(tiny_imet_root, tmp_path):
    root, _ = tiny_imet_root
    config = tiny_config(
        tmp_path,
        "imet",
        root,
        {"train": {"epochs": 1, "callbacks": [{"name": "freeze", "epochs": 1, "freeze_bn": False}]}},
    )
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    assert main(["train", "--config", str(config), "--fold", "0", "--quiet"]) == 0
    trained = torch.load(_run(tmp_path) / "last.pt", map_location="cpu", weights_only=True)["model"]
    initial = _initial_state(root)
    backbone = [k for k in initial if k.startswith("backbone.")]
    assert all(
        torch.equal(trained[k], initial[k])
        for k in backbone
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert not torch.equal(trained["backbone.conv1.1.running_mean"], initial["backbone.conv1.1.running_mean"])
    assert pd.read_csv(_run(tmp_path) / "epochs.csv")["trainable"].tolist() == ["heads"]


@pytest.mark.ddp
def test_freezing_under_ddp_rewraps_the_model_so_both_ranks_train_what_is_unfrozen(tiny_imet_root, tmp_path):
    root, _ = tiny_imet_root
    config = tiny_config(
        tmp_path,
        "imet",
        root,
        {"train": {"epochs": 2, "clip_grad_norm": 1.0, "callbacks": [{"name": "freeze", "epochs": 1}]}},
    )
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    result = run_torchrun("train", "--config", str(config), "--fold", "0", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    epochs = pd.read_csv(_run(tmp_path) / "epochs.csv")
    assert epochs["trainable"].tolist() == ["heads", "all"] and epochs["train_score"].between(0, 1).all()


# ---- mixup and cutmix ---------------------------------------------------------------------------


def _mixing(options: dict):
    callback = create_callbacks([{"name": "mixup", **options}])[0]
    run = SimpleNamespace(model=build_model("test_resnet", HEADS))
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 16, 16, generator=generator)
    targets = {
        "attributes": (torch.rand(6, 5, generator=generator) > 0.5).to(torch.uint8),
        "category": torch.tensor([0, 1, 2, 0, 1, 2]),
    }
    return callback, run, images, targets


def _mixed(callback, run, images, targets):
    """(images, targets, mixed_by) after the callback's on_batch on a fresh batch of `images` and `targets`."""
    batch = Batch(images, targets, 0)
    callback.on_batch(run, batch)
    return batch.images, batch.targets, batch.mixed_by


def test_mixup_mixes_images_and_every_heads_targets_with_one_lam():
    callback, run, images, targets = _mixing({"mixup_alpha": 0.4})
    mixed_images, mixed, by = _mixed(callback, run, images, targets)
    assert by == "mixup"
    one_hot = torch.nn.functional.one_hot(targets["category"], 3).float()
    lam = float(mixed["category"][0, 0])  # image 0 is class 0 mixed with image 5 (class 2)
    assert 0 < lam < 1 and torch.allclose(mixed_images, lam * images + (1 - lam) * images.flip(0))
    assert torch.allclose(mixed["category"], lam * one_hot + (1 - lam) * one_hot.flip(0))
    assert torch.allclose(mixed["category"].sum(1), torch.ones(6))  # softmax rows stay distributions
    multi = targets["attributes"].float()
    assert torch.allclose(mixed["attributes"], lam * multi + (1 - lam) * multi.flip(0))  # convex mix of multi-hots
    assert mixed["attributes"].min() >= 0 and mixed["attributes"].max() <= 1


def test_cutmix_pastes_a_box_and_mixes_the_targets_by_its_area():
    callback, run, images, targets = _mixing({"mixup_alpha": 0.0, "cutmix_alpha": 1.0})
    for _ in range(5):
        mixed_images, mixed, _ = _mixed(callback, run, images, targets)
        kept = (mixed_images == images).all(dim=1).float().mean(dim=(1, 2))  # per image: pixels left as they were
        lam = 1 - float((mixed_images[0] != images[0]).any(dim=0).float().mean())
        assert torch.allclose(kept, torch.full((6,), lam)) or lam == 1.0
        swapped = mixed_images != images
        assert torch.equal(mixed_images[swapped], images.flip(0)[swapped])
        one_hot = torch.nn.functional.one_hot(targets["category"], 3).float()
        assert torch.allclose(mixed["category"], lam * one_hot + (1 - lam) * one_hot.flip(0), atol=1e-6)
        assert torch.allclose(mixed["category"].sum(1), torch.ones(6))


def test_mixing_probability_and_switch_and_option_errors():
    callback, run, images, targets = _mixing({"prob": 0.0})
    returned, returned_targets, by = _mixed(callback, run, images, targets)
    assert returned is images and returned_targets is targets and by is None  # never mixed, so train_score keeps it
    callback, run, images, targets = _mixing({"prob": 0.5})
    flags = []
    for _ in range(40):
        returned, _, by = _mixed(callback, run, images, targets)
        flags.append(by is not None)
        assert (returned is images) != flags[-1]  # handed back as it was exactly when it was not mixed
    assert 10 < sum(flags) < 30
    callback, run, images, targets = _mixing({"mixup_alpha": 0.3, "cutmix_alpha": 1.0, "switch_prob": 1.0})
    mixed_images, _, _ = _mixed(callback, run, images, targets)
    assert ((mixed_images == images) | (mixed_images == images.flip(0))).all()  # CutMix: pixels swapped, not blended
    with pytest.raises(PipelineError) as error:
        create_callbacks([{"name": "mixup", "mixup_alpha": 0.0}])
    assert str(error.value).startswith(
        "config train.callbacks[0].cutmix_alpha: Value error, mixup_alpha and cutmix_alpha are both 0"
    )
    with pytest.raises(PipelineError) as error:
        create_callbacks([{"name": "freeze", "stages": 0}])
    assert str(error.value).startswith("config train.callbacks[0].stages: Input should be greater than or equal to 1")
    assert torch.allclose(mix_targets({"c": torch.tensor([1])}, {"c": 3}, 0.5)["c"], torch.tensor([[0.0, 1.0, 0.0]]))


def test_mixing_only_touches_training_batches_and_skips_train_score(tiny_imet_root, tmp_path):
    from src.data.cache import decode_table
    from src.engine import RunInputs, build_run, callbacks_for
    from src.engine.loop import run_epochs
    from src.formats import create_format
    from src.predict_loop import predict_probs

    root, _ = tiny_imet_root
    config = load_config(
        tiny_config(
            tmp_path,
            "imet",
            root,
            {"train": {"epochs": 1, "callbacks": [{"name": "mixup", "mixup_alpha": 0.4, "cutmix_alpha": 1.0}]}},
        )
    )
    fmt = create_format("imet", root)
    table = fmt.read_train()
    lines: list[str] = []
    images, _ = decode_table(
        table.paths, config.data.image_size, tmp_path / "cache", False, True, lines.append, "train"
    )
    callbacks = callbacks_for(config.train)
    mixup = next(callback for callback in callbacks if callback.name == "mixup")
    calls = []
    original = mixup.on_batch
    mixup.on_batch = lambda run, batch: calls.append(len(batch)) or original(run, batch)
    rows = np.arange(len(table))
    inputs = RunInputs(config, fmt, images, table.targets, rows[rows % 3 != 0], rows[rows % 3 == 0], tmp_path / "run")
    run = build_run(inputs, callbacks, quiet=True, log=lines.append)
    run.callbacks.call("setup", run)
    run_epochs(run)
    assert sum(calls) == len(run.train_data.loader) * 16  # once per training batch, never while validating
    _, valid_loss = predict_probs(
        run.eval_model, run.valid_data.loader, run.heads, run.runtime, loss_fn=run.training.loss_fn, quiet=True
    )
    assert run.state.history[0]["valid_loss"] == pytest.approx(valid_loss, rel=1e-6)  # validation saw unmixed targets
    assert math.isnan(run.state.history[0]["train_score"])  # every batch mixed (prob 1): nothing to score
    assert (
        f"train_score: over the training batches no callback mixed (mixup mixed {len(run.train_data.loader)} of "
        "this rank's batches this epoch; none kept means no train_score)" in lines
    )


# ---- clipping and compile -----------------------------------------------------------------------


def _batches(heads, count: int) -> list:
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.rand(4, 3, 32, 32, generator=generator),
            {"attributes": (torch.rand(4, len(heads[0].class_names), generator=generator) > 0.5).float()},
            torch.arange(4),
        )
        for _ in range(count)
    ]


def test_train_score_scores_exactly_the_batches_no_callback_mixed(tiny_imet_root, tmp_path):
    from src.distributed import DistributedContext
    from src.engine import CallbackList, train_one_epoch
    from src.engine.callbacks.train_score import TrainOutputs
    from src.formats import create_format

    root, _ = tiny_imet_root
    training, heads, runtime = tiny_training(root, tmp_path, 10)
    fmt = create_format("imet", root)
    mixup, train_score = create_callbacks([{"name": "mixup", "prob": 0.5, "seed": 3}, {"name": "train_score"}])
    mixed, original = [], mixup.on_batch
    mixup.on_batch = lambda run, batch: (original(run, batch), mixed.append(batch.mixed_by is not None))[0]
    run = SimpleNamespace(heads=heads, fmt=fmt, distributed=DistributedContext(), log=print, model=training.model)
    train_score.on_fit_start(run)
    train_score.on_epoch_start(run)
    train_one_epoch(training, _batches(heads, 10), runtime, callbacks=CallbackList([mixup, train_score]), run=run)
    row = {}
    train_score.on_train_epoch_end(run, row)
    assert 0 < sum(mixed) < 10 and len(train_score.outputs.probs["attributes"]) == mixed.count(False)
    assert train_score.mixed == {"mixup": sum(mixed)} and 0 <= row["train_score"] <= 1
    assert row["train_score"] == train_score.outputs.score(fmt, DistributedContext())
    assert math.isnan(TrainOutputs(heads).score(fmt, DistributedContext()))  # no batch kept


@pytest.mark.filterwarnings("ignore:Seems like .optimizer.step... has been overridden")
def test_clipping_sees_unscaled_gradients_just_before_the_step(tiny_imet_root, tmp_path):
    from src.engine import CallbackList, train_one_epoch

    root, _ = tiny_imet_root
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)  # a scaled loss: clipping before unscaling shows
    training, heads, runtime = tiny_training(root, tmp_path, 10, scaler)
    clipping = CallbackList(create_callbacks([{"name": "clip_grad_norm", "max_norm": 0.01}]))
    optimizer = training.optimizer
    norms = []
    step = optimizer.step
    optimizer.step = lambda *a, **k: (
        norms.append(
            float(
                torch.nn.utils.get_total_norm(
                    [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
                )
            )
        )
        or step(*a, **k)
    )
    train_one_epoch(training, _batches(heads, 3), runtime, callbacks=clipping, run=SimpleNamespace(training=training))
    assert len(norms) == 3 and all(norm == pytest.approx(0.01, rel=1e-4) for norm in norms)  # not 0.01 / 4096


def test_compile_where_the_platform_cannot_is_one_line_then_trains_uncompiled(
    tiny_imet_root, tmp_path, capsys, monkeypatch
):
    import torch._inductor.config as inductor

    monkeypatch.setattr(inductor.cpp, "cxx", ("/nonexistent/c++",))  # no working C++ compiler for inductor
    root, _ = tiny_imet_root
    config = tiny_config(tmp_path, "imet", root, {"train": {"epochs": 1, "compile": True}})
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--fold", "0", "--quiet"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("train.compile:")]
    assert len(lines) == 1 and lines[0].startswith("train.compile: torch.compile cannot compile on this platform (")
    assert lines[0].endswith("); training uncompiled") and "C++ compiler" in lines[0]
    assert (_run(tmp_path) / "best.pt").is_file() and len(pd.read_csv(_run(tmp_path) / "epochs.csv")) == 1


def test_backbone_stages_are_timms_coarse_groups_input_first():
    stages = backbone_stages(build_model("resnet18", HEADS).backbone)
    assert [name for name, _ in stages] == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert sum(len(params) for _, params in stages) == len(list(build_model("resnet18", HEADS).backbone.parameters()))


def test_a_held_group_waits_at_lr_0_then_warms_up_from_0_and_joins_the_cosine():
    from src.engine import WarmupCosine
    from src.engine.build import hold_group

    model = build_model("test_resnet", HEADS)
    optimizer = build_optimizer(model, MultiHeadLoss(HEADS, TrainConfig().loss), TrainConfig(lr=1e-3))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [WarmupCosine(100, 10) for _ in optimizer.param_groups])
    backbone = [index for index, group in enumerate(optimizer.param_groups) if group["part"] == "backbone"]
    for index in backbone:
        hold_group(scheduler, index, 20)
    held, free = scheduler.lr_lambdas[backbone[0]], scheduler.lr_lambdas[-1]
    assert optimizer.param_groups[backbone[0]]["lr"] == 0.0  # the first step already runs at 0
    assert [held(step) for step in (0, 19)] == [0.0, 0.0]
    assert [held(step) for step in (20, 24, 29)] == pytest.approx([0.1, 0.5, 1.0])  # warm-up from 0 over 10 steps
    assert [free(step) for step in (0, 9)] == pytest.approx([0.1, 1.0])  # the heads' schedule is untouched
    assert held(100) == pytest.approx(free(100)) == pytest.approx(0.01)  # both end at the floor
