"""Freeze the backbone, or its first stages, for the first epochs; then unfreeze it at once or one stage per epoch.

A stage is one of timm's coarse layer groups of the backbone (`src.model.backbone_stages`: for a ResNet the stem,
layer1 .. layer4). Frozen parameters get no gradient (`requires_grad` False), so AdamW leaves them exactly as they
are (it skips a parameter without a gradient, weight decay included) and backward stops below the lowest trained
stage. With `freeze_bn` the BatchNorm layers of frozen stages also keep their running statistics (eval mode).
Under DDP the wrapper is rebuilt whenever the frozen set changes, as DDP fixes the parameters it reduces when it
wraps the model (`Training.rewrap`). The schedule is a function of the epoch, so a resumed run freezes the same way.

`rewarm: true` (what `train.head_warmup_epochs` was) also holds each frozen parameter group's lr at 0 until its last
stage is unfrozen and then warms it up from 0 over `train.warmup_epochs`, instead of letting it join the cosine
where it stands: the freshly trained heads first settle, then the pretrained features start moving gently.
"""

from __future__ import annotations

from pydantic import Field
from torch import nn

from src.engine.build import hold_group
from src.engine.callbacks import Callback, CallbackOptions, register_callback
from src.model import backbone_stages


@register_callback
class Freeze(Callback):
    """`{name: freeze, epochs: 1}`: heads only for the first epoch, then everything (see the module docstring)."""

    name = "freeze"

    class Options(CallbackOptions):
        epochs: int = Field(1, ge=0, description="epochs, from the first, that the frozen part stays frozen")
        stages: int | None = Field(None, ge=1, description="freeze the backbone's first N stages; null = all of it")
        gradual: bool = Field(False, description="afterwards unfreeze one stage per epoch, the top one first")
        freeze_bn: bool = Field(True, description="BatchNorm in frozen stages keeps its running statistics")
        rewarm: bool = Field(
            False, description="a frozen group's lr stays 0 until it is unfrozen, then warms up from 0"
        )

    def __init__(self, options: Options):
        super().__init__(options)
        self.frozen = 0  # stages frozen now; a built model starts with every parameter trainable
        self._frozen_norms: list[nn.Module] = []

    def frozen_stages(self, epoch: int, n_stages: int) -> int:
        """How many stages (from the input) are frozen during `epoch` (0-based) of a backbone with `n_stages`."""
        count = n_stages if self.options.stages is None else min(self.options.stages, n_stages)
        if epoch < self.options.epochs:
            return count
        return max(0, count - (epoch - self.options.epochs + 1)) if self.options.gradual else 0

    def unfrozen_from(self, stage: int, n_stages: int, epochs: int) -> int:
        """The first epoch (0-based) in which `stage` trains; `epochs` when it never does."""
        return next((epoch for epoch in range(epochs) if self.frozen_stages(epoch, n_stages) <= stage), epochs)

    def setup(self, run) -> None:
        if not self.options.rewarm:
            return
        stages = backbone_stages(run.model.backbone)
        first_epoch = {
            id(param): self.unfrozen_from(index, len(stages), run.epochs)
            for index, (_, params) in enumerate(stages)
            for param in params
        }
        for index, group in enumerate(run.optimizer.param_groups):
            held = max((first_epoch.get(id(param), 0) for param in group["params"]), default=0)
            if held:
                hold_group(run.training.scheduler, index, held * run.steps_per_epoch)

    def on_epoch_start(self, run) -> None:
        training = run.training
        stages = backbone_stages(training.model.backbone)
        count = self.frozen_stages(run.epoch, len(stages))
        if count == self.frozen:
            return
        for index, (_, params) in enumerate(stages):
            for param in params:
                param.requires_grad_(index >= count)
        frozen_ids = {id(param) for _, params in stages[:count] for param in params}
        # A BatchNorm belongs to the stage of its weight (timm's norms are affine; one without weights is left as is).
        self._frozen_norms = (
            [
                module
                for module in training.model.backbone.modules()
                if isinstance(module, nn.modules.batchnorm._BatchNorm)
                and module.weight is not None
                and id(module.weight) in frozen_ids
            ]
            if self.options.freeze_bn
            else []
        )
        self.frozen = count
        training.rewrap()

    def on_batch(self, run, batch) -> None:
        for module in self._frozen_norms:  # the loop's train() put them back in training mode
            module.eval()
