"""Which training images an epoch draws (`train.sampler`): uniform (every image once, shuffled: the default) or
weighted towards rare classes for a long-tailed competition (iMet's 1,103 classes: some on >10k images, hundreds on
<20), with replacement.

Per class c with n_c training images (of N), an image's weight is the largest of its classes' weights (an image with
no positive label weighs 1):
- `repeat_factor` (LVIS, Gupta et al. 2019): max(1, sqrt(threshold / (n_c / N))): classes rarer than `threshold`
  of the images are repeated, by the square root of how much rarer;
- `log` (the iMet 2019 winner's logarithmic class weights): 1 + ln(n_max / n_c);
- `class_balanced`: 1 / n_c, so each class is drawn about as often as any other.
The head whose labels weigh the images is `train.sampler.head` (default: the format's first head; a softmax head's
class is its label). `samples_per_epoch` (default: the training set's size) sets the epoch's length. The draws are a
function of (seed, epoch) alone, the same on every DDP rank, which then takes its share: an epoch resumes exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

WEIGHTINGS = ("repeat_factor", "log", "class_balanced")


def class_counts(targets: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """Images per class: a multilabel head's 0/1 rows [n, c] or a softmax head's class indices [n]."""
    if targets.ndim == 2:
        return np.asarray(targets, dtype=np.int64).sum(axis=0)
    return np.bincount(np.asarray(targets, dtype=np.int64), minlength=n_classes or 0)


def image_weights(targets: np.ndarray, weighting: str, threshold: float = 0.001) -> np.ndarray:
    """Each image's sampling weight (float64, > 0) from its head's labels, by `weighting` (see the module)."""
    counts = class_counts(targets).astype(np.float64)
    present = counts > 0
    per_class = np.ones_like(counts)
    if weighting == "repeat_factor":
        frequency = counts[present] / len(targets)
        per_class[present] = np.maximum(1.0, np.sqrt(threshold / frequency))
    elif weighting == "log":
        per_class[present] = 1.0 + np.log(counts.max() / counts[present])
    elif weighting == "class_balanced":
        per_class[present] = 1.0 / counts[present]
    else:
        raise ValueError(f"unknown weighting '{weighting}'; one of {', '.join(WEIGHTINGS)}")
    if targets.ndim == 1:
        return per_class[np.asarray(targets, dtype=np.int64)]
    labelled = np.where(np.asarray(targets, dtype=bool), per_class[None, :], 0.0).max(axis=1)
    return np.where(labelled > 0, labelled, 1.0 if weighting != "class_balanced" else per_class[present].min())


class EpochWeightedSampler(Sampler[int]):
    """`samples` draws with replacement, weighted, from a generator seeded by (seed, epoch); rank r of w ranks takes
    draws r, r + w, ... (each rank the same number)."""

    def __init__(self, weights: np.ndarray, samples: int, seed: int, rank: int = 0, world_size: int = 1):
        self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        self.per_rank = max(1, samples // world_size)
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        draws = torch.multinomial(self.weights, self.per_rank * self.world_size, replacement=True, generator=generator)
        return iter(draws[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank
