"""Progressive resizing (fastai's trick, one of the iMet winners' staged schedules): train the first epochs on
smaller images, then at the full size: `{name: progressive_resize, sizes: {1: 160, 4: 224}}` trains epochs 1-3 at
160 px and from epoch 4 at 224 px (epochs count from 1; the first entry must be epoch 1).

Each training batch is resized on the device (bilinear, antialiased) from `data.image_size` before the forward
pass, so the image cache is built once at the full size; the small epochs run faster and the last ones fine-tune at
the size the model is validated and predicts at (validation, OOF and test always use `data.image_size`). The size
is a function of the epoch, so a resumed run resizes the same way. epochs.csv's `train_size` records it.
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator
from torch.nn import functional as F

from src.engine.callbacks import Callback, CallbackOptions, register_callback


@register_callback
class ProgressiveResize(Callback):
    """Resizes each training batch to the size its epoch asks for."""

    name = "progressive_resize"

    class Options(CallbackOptions):
        sizes: dict[int, int] = Field(description="{first epoch (from 1): image side in px} for each stage")

        @field_validator("sizes")
        @classmethod
        def _from_epoch_one(cls, sizes: dict[int, int]) -> dict[int, int]:
            if 1 not in sizes:
                raise ValueError("give the size of epoch 1 (the first key must be 1), e.g. {1: 160, 4: 224}")
            if any(epoch < 1 for epoch in sizes) or any(side < 8 for side in sizes.values()):
                raise ValueError("epochs count from 1 and sides are at least 8 px")
            return dict(sorted(sizes.items()))

    def size_at(self, epoch: int) -> int:
        """The side of epoch `epoch` (from 0)."""
        return [side for first, side in self.options.sizes.items() if first <= epoch + 1][-1]

    def setup(self, run) -> None:
        cached = run.config.data.image_size
        if max(self.options.sizes.values()) > cached:
            run.log(f"progressive_resize: sizes above data.image_size {cached} px upsample the cached images")

    def on_batch(self, run, batch) -> None:
        side = self.size_at(run.epoch)
        images = batch.images
        if images.shape[-1] == side and images.shape[-2] == side:
            return
        channels_last = images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
        resized = F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        batch.images = resized.contiguous(memory_format=torch.channels_last) if channels_last else resized

    def on_train_epoch_end(self, run, row) -> None:
        row["train_size"] = self.size_at(run.epoch)
