"""The engine's callback hooks: every one in its order with the whole run in view, a batch changed before the
forward pass, evaluation weights a callback provides; callbacks found by name with validated options, shorthand
train.* keys, duplicates refused; a callback's state resumes exactly."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import tiny_config, tiny_training
from torch import nn

from src.config import TrainConfig
from src.engine import (
    Callback,
    CallbackList,
    CallbackOptions,
    callbacks_for,
    create_callbacks,
    register_callback,
    train_one_epoch,
)
from src.errors import PipelineError
from src.stage import main


@register_callback
class ShiftAndOnes(Callback):
    """Adds `shift` to the images and makes every multilabel target 1."""

    name = "test_shift_and_ones"

    class Options(CallbackOptions):
        shift: float = 1.0

    def __init__(self, options):
        super().__init__(options)
        self.batches = 0

    def on_batch(self, run, batch):
        self.batches += 1
        batch.images = batch.images + self.options.shift
        batch.targets = {name: torch.ones_like(value) for name, value in batch.targets.items()}


@register_callback
class Recorder(Callback):
    """Appends every hook call to EVENTS, with what the run context says at that point."""

    name = "test_recorder"
    EVENTS: list[tuple] = []

    def setup(self, run):
        self.EVENTS.append(("setup", run.epochs, run.config.train.epochs, [head.name for head in run.heads]))

    def on_fit_start(self, run):
        self.EVENTS.append(("fit_start", run.state.next_epoch))

    def on_epoch_start(self, run):
        self.EVENTS.append(("start", run.epoch))

    def on_batch(self, run, batch):
        self.EVENTS.append(("batch", batch.index))

    def on_before_optimizer_step(self, run):
        grads = [p.grad for p in run.model.parameters() if p.grad is not None]
        self.EVENTS.append(("before_step", run.step + 1, bool(grads)))

    def on_after_optimizer_step(self, run):
        self.EVENTS.append(("step", run.step))

    def on_batch_end(self, run, batch):
        self.EVENTS.append(("batch_end", batch.outputs is not None and batch.loss is not None))

    def on_train_epoch_end(self, run, row):
        self.EVENTS.append(("train_end", "train_score" in row, "valid_loss" in row))

    def on_validation_start(self, run):
        self.EVENTS.append(("valid_start",))

    def on_validation_end(self, run, row):
        self.EVENTS.append(("valid_end", "valid_loss" in row))

    def on_epoch_end(self, run, row):
        self.EVENTS.append(("end", run.epoch, row["epoch"], run.state.next_epoch, run.state.finished))

    def on_fit_end(self, run):
        self.EVENTS.append(("fit_end", run.state.finished))


@register_callback
class Noise(Callback):
    """Gaussian noise on the images from its own generator: its state must resume for a run to repeat."""

    name = "test_noise"

    class Options(CallbackOptions):
        scale: float = 0.1
        seed: int = 0

    def __init__(self, options):
        super().__init__(options)
        self.generator = torch.Generator().manual_seed(options.seed)
        self.batches = 0

    def on_batch(self, run, batch):
        self.batches += 1
        noise = torch.randn(batch.images.shape, generator=self.generator)
        batch.images = batch.images + self.options.scale * noise.to(batch.images.device)

    def state_dict(self):
        return {"generator": self.generator.get_state(), "batches": self.batches}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])
        self.batches = state["batches"]


class Spy(nn.Module):
    """Records what the wrapped module is called with."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, *args):
        self.calls.append(args)
        return self.inner(*args)


def test_on_batch_changes_what_the_forward_pass_and_the_loss_see(tiny_imet_root, tmp_path):
    root, _ = tiny_imet_root
    training, heads, runtime = tiny_training(root, tmp_path, 3, wrap=Spy)
    generator = torch.Generator().manual_seed(1)
    batches = [
        (
            torch.rand(4, 3, 32, 32, generator=generator),
            {"attributes": torch.zeros(4, len(heads[0].class_names))},
            torch.arange(4),
        )
        for _ in range(3)
    ]
    callback = create_callbacks([{"name": "test_shift_and_ones", "shift": 2.0}])[0]
    loss_sum, seen = train_one_epoch(training, batches, runtime, callbacks=CallbackList([callback]))
    assert callback.batches == 3 and seen == 12 and math.isfinite(loss_sum)
    for (images, _, _), (forward_input,), (_, loss_targets) in zip(
        batches, training.trained.calls, training.loss_fn.calls
    ):
        assert torch.equal(forward_input, images + 2.0)
        assert torch.equal(loss_targets["attributes"], torch.ones(4, len(heads[0].class_names)))


def test_hooks_run_in_order_with_the_epoch_and_once_per_optimizer_step(tiny_imet_root, tmp_path):
    root, _ = tiny_imet_root
    config = tiny_config(
        tmp_path,
        "imet",
        root,
        {"train": {"epochs": 2, "accumulate_steps": 4, "callbacks": [{"name": "test_recorder"}]}},
    )
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    Recorder.EVENTS.clear()
    assert main(["train", "--config", str(config), "--fold", "0", "--quiet"]) == 0
    summary = json.loads((tmp_path / "out" / "oof" / "tiny" / "fold-0" / "summary.json").read_text())
    batches = summary["train_images"] // 16  # batch 16, the last partial batch dropped
    expected, step = [("setup", 2, 2, ["attributes"]), ("fit_start", 0)], 0
    for epoch in range(2):
        expected.append(("start", epoch))
        for index in range(batches):
            expected.append(("batch", index))
            if (index + 1) % 4 == 0 or index + 1 == batches:  # a partial group at the end steps too
                step += 1
                expected += [("before_step", step, True), ("step", step)]
            expected.append(("batch_end", True))
        expected += [
            ("train_end", True, False),
            ("valid_start",),
            ("valid_end", True),
            ("end", epoch, epoch + 1, epoch + 1, epoch == 1),
        ]
    expected.append(("fit_end", True))
    assert step == 2 * math.ceil(batches / 4)
    assert Recorder.EVENTS == expected


def test_an_unknown_callback_or_a_bad_option_is_one_line_naming_the_item(tiny_imet_root, tmp_path, capsys):
    cases = [
        (
            [{"name": "test_nosie"}],
            "config train.callbacks[0].name: unknown callback 'test_nosie'; did you mean 'test_noise'?",
        ),
        ([{"scale": 1.0}], "config train.callbacks[0]: no 'name'; write each item as {name: <callback>"),
        (
            [{"name": "test_recorder"}, {"name": "test_noise", "scael": 0.1}],
            "config train.callbacks[1].scael: unknown option for callback 'test_noise'; did you mean 'scale'?",
        ),
        ([{"name": "test_noise", "scale": "big"}], "config train.callbacks[0].scale: Input should be a valid number"),
    ]
    for items, message in cases:
        with pytest.raises(PipelineError) as error:
            create_callbacks(items)
        assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert "for callback 'test_noise'; fix the value" in str(error.value)

    root, _ = tiny_imet_root
    config = tiny_config(tmp_path, "imet", root, {"train": {"callbacks": [{"name": "no_such_trick"}]}})
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    assert main(["train", "--config", str(config), "--fold", "0", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: config train.callbacks[0].name: unknown callback 'no_such_trick'; known callbacks:")
    assert error.count("\n") == 1 and "test_noise" in error
    assert not (tmp_path / "out" / "oof" / "tiny" / "fold-0").exists()  # refused before anything was written


def test_a_callback_with_state_resumes_exactly(tiny_imet_root, tmp_path, capsys):
    root, _ = tiny_imet_root
    extra = {"train": {"epochs": 2, "callbacks": [{"name": "test_noise", "scale": 0.5, "seed": 7}]}}
    straight = tiny_config(tmp_path / "a", "imet", root, extra, name="straight")
    resumed = tiny_config(tmp_path / "b", "imet", root, extra, name="resumed")
    assert main(["folds", "--config", str(straight), "--quiet"]) == 0
    assert main(["train", "--config", str(straight), "--fold", "1", "--quiet"]) == 0
    assert main(["train", "--config", str(resumed), "--fold", "1", "--quiet", "--stop-after-epochs", "1"]) == 0
    run_b = tmp_path / "b" / "out" / "oof" / "resumed" / "fold-1"
    after_one = torch.load(run_b / "last.pt", map_location="cpu", weights_only=True)["callbacks"]
    assert main(["train", "--config", str(resumed), "--fold", "1", "--quiet", "--resume"]) == 0

    a = torch.load(
        tmp_path / "a" / "out" / "oof" / "straight" / "fold-1" / "last.pt", map_location="cpu", weights_only=True
    )
    b = torch.load(run_b / "last.pt", map_location="cpu", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [item["name"] for item in b["callbacks"]] == ["train_score", "test_noise"]
    assert (
        b["callbacks"][1]["state"]["batches"] == 2 * after_one[1]["state"]["batches"] > 0
    )  # counted on, not restarted
    assert torch.equal(a["callbacks"][1]["state"]["generator"], b["callbacks"][1]["state"]["generator"])

    # Resuming with other callbacks than the run was saved with is refused, naming both lists.
    capsys.readouterr()
    assert main(["train", "--config", str(resumed), "--fold", "1", "--quiet", "--resume", "train.callbacks=[]"]) == 2
    assert (
        "this run was saved with the callbacks that keep state ['test_noise'], the config now asks for none"
        in capsys.readouterr().err
    )


@register_callback
class FixedWeights(Callback):
    """Provides a copy of the model made at setup as the evaluation weights."""

    name = "test_fixed_weights"
    provides_eval_weights = True

    def setup(self, run):
        import copy

        self.copy = copy.deepcopy(run.model)

    def eval_model(self, run):
        return self.copy


def test_a_callback_provides_the_weights_validation_and_best_pt_use(tiny_imet_root, tmp_path):
    """best.pt holds the provider's weights (here the untrained copy), not the trained ones; two providers are refused."""
    root, _ = tiny_imet_root
    config = tiny_config(
        tmp_path, "imet", root, {"train": {"epochs": 1, "callbacks": [{"name": "test_fixed_weights"}]}}
    )
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    assert main(["train", "--config", str(config), "--fold", "0", "--quiet"]) == 0
    run_dir = tmp_path / "out" / "oof" / "tiny" / "fold-0"
    best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)["model"]
    last = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)["model"]
    from src.formats import create_format
    from src.model import build_model
    from src.runtime import seed_everything

    seed_everything(0)  # train.seed 0: the weights the run started from, which the copy kept
    initial = build_model("test_resnet", create_format("imet", root).heads()).state_dict()
    assert all(torch.equal(best[key], initial[key]) for key in best)
    assert not all(torch.equal(last[key], initial[key]) for key in last)

    with pytest.raises(PipelineError) as error:
        callbacks_for(TrainConfig(ema_decay=0.9, callbacks=[{"name": "test_fixed_weights"}]))
    assert str(error.value) == (
        "config train.callbacks: test_fixed_weights and ema each provide the weights that "
        "validation and best.pt use; keep one of them"
    )


def test_shorthand_keys_switch_callbacks_on_and_a_second_spelling_is_refused():
    callbacks = callbacks_for(
        TrainConfig(
            ema_decay=0.9,
            clip_grad_norm=2.0,
            early_stopping_patience=3,
            time_budget_s=60,
            tensorboard=True,
            callbacks=[{"name": "test_noise"}],
        )
    )
    assert callbacks.names == [
        "train_score",
        "test_noise",
        "clip_grad_norm",
        "ema",
        "early_stopping",
        "time_budget",
        "tensorboard",
    ]
    options = {callback.name: callback.options for callback in callbacks}
    assert options["ema"].decay == 0.9 and options["clip_grad_norm"].max_norm == 2.0
    assert options["early_stopping"].patience == 3 and options["time_budget"].seconds == 60
    assert callbacks_for(TrainConfig()).names == ["train_score"]
    with pytest.raises(PipelineError) as error:
        callbacks_for(TrainConfig(ema_decay=0.9, callbacks=[{"name": "ema", "decay": 0.99}]))
    assert (
        str(error.value)
        == "config train.callbacks[0]: callback 'ema' is also switched on by config train.ema_decay; keep one"
    )
