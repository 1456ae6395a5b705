"""Torch dataset over cached uint8 images, with augmentation seeded per (seed, epoch, row)."""
from __future__ import annotations

import random

import albumentations as A
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import Dataset


class CachedImageDataset(Dataset):
    """Items are (image tensor C x H x W, {head: target tensor}, row index).

    Augmentation randomness is a function of (seed, epoch, row) only, so a run is reproducible
    whatever the worker count, and a resumed run sees exactly the augmentations it would have.
    """

    def __init__(self, images: np.ndarray, rows: np.ndarray, targets: dict[str, np.ndarray] | None,
                 transform: A.Compose, seed: int = 0):
        self.images = images
        self.rows = np.asarray(rows)
        self.targets = targets or {}
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        # Normalize and ToTensorV2 (what build_transform appends) draw no random numbers: a pipeline of
        # only those (eval, oof, submit) needs no reseeding, which is 40% of its cost per image.
        self.reseed = any(not isinstance(step, (A.Normalize, ToTensorV2)) for step in transform.transforms)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        row = int(self.rows[index])
        if self.reseed:
            seed = (self.seed * 1_000_003 + self.epoch * 7_919 + row) % (2**32)
            # One generator pair shared by the whole pipeline: `set_random_seed` gave every transform its own
            # copy of one stream (so e.g. two p=0.5 flips always fired together) and took 3x as long.
            self.transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
        image = self.transform(image=np.ascontiguousarray(self.images[row]))["image"]
        targets = {name: torch.as_tensor(values[row]) for name, values in self.targets.items()}
        return image, targets, row
