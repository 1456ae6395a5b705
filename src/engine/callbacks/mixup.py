"""Mixup and CutMix (as timm's `Mixup` in batch mode): each training batch is blended with itself reversed.

Mixup blends whole images, lam ~ Beta(mixup_alpha, mixup_alpha); CutMix pastes a box of the reversed batch, lam ~
Beta(cutmix_alpha, cutmix_alpha) corrected to the area kept. The targets of every head are mixed with the same lam:
softmax heads as one-hot rows (the loss takes class probabilities), multilabel heads as a convex mix of their 0/1
rows. Only training batches pass through callbacks, so validation and prediction never mix. The draws come from
the callback's own generator (saved in last.pt), so no other random draw moves and a resumed run mixes the same.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator
from torch.nn import functional as F

from src.engine.callbacks import Callback, CallbackOptions, register_callback


@register_callback
class Mixup(Callback):
    """`{name: mixup, mixup_alpha: 0.2, cutmix_alpha: 1.0, prob: 1.0, switch_prob: 0.5}` (see the module docstring)."""

    name = "mixup"

    class Options(CallbackOptions):
        mixup_alpha: float = Field(0.2, ge=0, description="Beta(alpha, alpha) of mixup's lam; 0 = no mixup")
        cutmix_alpha: float = Field(
            0.0, ge=0, validate_default=True, description="Beta(alpha, alpha) of CutMix's lam; 0 = no CutMix"
        )
        prob: float = Field(1.0, ge=0, le=1, description="chance that a batch is mixed at all")
        switch_prob: float = Field(0.5, ge=0, le=1, description="with both on: chance of CutMix instead of mixup")
        seed: int = Field(0, description="seed of the callback's own generator")

        @field_validator("cutmix_alpha")
        @classmethod
        def _something_mixes(cls, value: float, info: ValidationInfo) -> float:
            if value == 0 and info.data.get("mixup_alpha") == 0:
                raise ValueError("mixup_alpha and cutmix_alpha are both 0, so nothing would mix; set one above 0")
            return value

    def __init__(self, options: Options):
        super().__init__(options)
        self.rng = np.random.default_rng(options.seed)

    def on_batch(self, run, batch) -> None:
        options, images = self.options, batch.images
        if not self.rng.random() < options.prob:
            return
        cutmix = options.cutmix_alpha > 0 and (options.mixup_alpha == 0 or self.rng.random() < options.switch_prob)
        alpha = options.cutmix_alpha if cutmix else options.mixup_alpha
        lam = float(self.rng.beta(alpha, alpha))
        if cutmix:
            images, lam = cutmix_images(images, lam, self.rng)
        else:
            images = images * lam + images.flip(0) * (1.0 - lam)
        classes = {name: head.out_features for name, head in run.model.heads.items()}
        batch.mix(self.name, images, mix_targets(batch.targets, classes, lam))

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


def cutmix_images(images: torch.Tensor, lam: float, rng: np.random.Generator) -> tuple[torch.Tensor, float]:
    """`images` with a box of the reversed batch pasted in (side sqrt(1 - lam), centre uniform, clipped at the edges),
    and lam corrected to the fraction of each image left as it was."""
    height, width = images.shape[-2:]
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    centre_y, centre_x = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = max(centre_y - cut_h // 2, 0), min(centre_y + cut_h // 2, height)
    left, right = max(centre_x - cut_w // 2, 0), min(centre_x + cut_w // 2, width)
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = images.flip(0)[..., top:bottom, left:right]
    return mixed, 1.0 - (bottom - top) * (right - left) / (height * width)


def mix_targets(targets: dict[str, torch.Tensor], classes: dict[str, int], lam: float) -> dict[str, torch.Tensor]:
    """Each head's targets mixed with the reversed batch's: class indices (softmax heads) as one-hot rows over
    `classes[head]` classes, 0/1 rows (multilabel heads) as they are; every row stays a convex mix."""
    mixed = {}
    for name, target in targets.items():
        soft = F.one_hot(target.long(), classes[name]).float() if target.ndim == 1 else target.float()
        mixed[name] = soft * lam + soft.flip(0) * (1.0 - lam)
    return mixed
