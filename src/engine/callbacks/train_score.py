"""train_score (always on): the format's validation score computed on each epoch's training batches, as the model
scored them during the epoch (augmented, before each step), next to the held-out score in epochs.csv.

Batches a callback mixed (`batch.mixed_by`: mixup, CutMix) are left out, as outputs scored against mixed targets mean
nothing; an epoch whose every batch was mixed has no train_score (NaN). Outputs are kept as float16 probabilities,
so an iMet-sized epoch (100k x 1,103 classes) holds about 220 MB. Under DDP the ranks' batches are gathered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist

from src.distributed import DistributedContext
from src.engine.callbacks import Callback, register_callback
from src.formats.base import CompetitionFormat, HeadSpec


@register_callback
class TrainScore(Callback):
    """Collects the epoch's unmixed training outputs and adds `train_score` to its epochs.csv row."""

    name = "train_score"

    def on_fit_start(self, run) -> None:
        self.said_mixed = False

    def on_epoch_start(self, run) -> None:
        self.outputs, self.mixed = TrainOutputs(run.heads), {}

    def on_batch_end(self, run, batch) -> None:
        if batch.mixed_by is None:
            self.outputs.add(batch.outputs, batch.targets)
        else:
            self.mixed[batch.mixed_by] = self.mixed.get(batch.mixed_by, 0) + 1

    def on_train_epoch_end(self, run, row) -> None:
        row["train_score"] = self.outputs.score(run.fmt, run.distributed)
        if self.mixed and not self.said_mixed:
            self.said_mixed = True
            run.log(
                f"train_score: over the training batches no callback mixed ({', '.join(self.mixed)} mixed "
                f"{sum(self.mixed.values())} of this rank's batches this epoch; none kept means no train_score)"
            )


class TrainOutputs:
    """The epoch's training-batch outputs as probabilities, with the targets the loss saw, per head."""

    def __init__(self, heads: Sequence[HeadSpec]):
        self.kinds = {head.name: head.kind for head in heads}
        self.probs: dict[str, list[np.ndarray]] = {name: [] for name in self.kinds}
        self.targets: dict[str, list[np.ndarray]] = {name: [] for name in self.kinds}

    def add(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> None:
        """One batch: sigmoid (multilabel) or softmax (softmax heads) of its logits, and its targets, on the CPU."""
        for name, kind in self.kinds.items():
            logits = outputs[name].detach().float()
            probs = torch.sigmoid(logits) if kind == "multilabel" else torch.softmax(logits, dim=1)
            self.probs[name].append(probs.half().cpu().numpy())
            self.targets[name].append(targets[name].detach().cpu().numpy())

    def score(self, fmt: CompetitionFormat, context: DistributedContext) -> float:
        """The format's validation score over every rank's batches (the same number on each rank); NaN without any."""
        parts = [(self.targets, self.probs)]
        if context.enabled:
            parts = [None] * context.world_size
            dist.all_gather_object(parts, (self.targets, self.probs))
        if not any(batches for part in parts for batches in part[0].values()):
            return math.nan  # every batch was mixed
        targets, probs = (
            {name: np.concatenate([array for part in parts for array in part[index][name]]) for name in self.kinds}
            for index in (0, 1)
        )
        return float(fmt.validation_score(targets, probs)[0])
