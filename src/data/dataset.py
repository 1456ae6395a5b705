"""Torch dataset over cached uint8 images, with augmentation seeded per (seed, epoch, row), and the loader
that turns it into uint8 batches for `src.runtime.DeviceLoader` to normalise on the device."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from src.data.transforms import BatchNormalize, ImagePipeline
from src.runtime import DeviceLoader, Runtime, loader_options


class CachedImageDataset(Dataset):
    """`dataset[i]` is (uint8 image H x W x C, {head: target}, row); `dataset[(epoch, positions)]` is a whole batch
    (uint8 images B x H x W x C, {head: targets [B, ...]}, rows [B]), what the loaders ask for.

    Augmentation randomness is a function of (seed, epoch, row) only, so a run is reproducible
    whatever the worker count, and a resumed run sees exactly the augmentations it would have. The
    epoch travels with each batch request, so persistent worker processes see the epoch the main
    process set. A pipeline with no steps does no per-image work: the batch is one fancy index of the cache.
    """

    def __init__(
        self,
        images: np.ndarray,
        rows: np.ndarray,
        targets: dict[str, np.ndarray] | None,
        pipeline: ImagePipeline,
        seed: int = 0,
    ):
        # A plain ndarray over the same memory: np.memmap's Python-level __getitem__/__array_finalize__ on every
        # row and batch read cost about 0.3 ms per 128-image batch (measured), more than the read itself.
        # Any other store (a packed cache, images of several sizes) is read one image at a time.
        self.images = np.asarray(images) if isinstance(images, np.ndarray) else images
        self.rows = np.asarray(rows, dtype=np.int64)
        self.targets = targets or {}
        self.pipeline = pipeline
        self.seed = seed
        self.epoch = 0
        self.reseed = pipeline.has_steps

    @property
    def normalize(self) -> BatchNormalize:
        """What turns this dataset's uint8 batches into model input, once per batch on the device."""
        return self.pipeline.normalize

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        if isinstance(index, tuple):
            epoch, positions = index
            return self.batch(positions, epoch)
        row = int(self.rows[index])
        image = self._augmented(row, self.epoch) if self.reseed else np.ascontiguousarray(self.images[row])
        return (
            torch.from_numpy(image),
            {name: torch.as_tensor(values[row]) for name, values in self.targets.items()},
            row,
        )

    def batch(self, positions: Sequence[int], epoch: int | None = None):
        """(uint8 images [B, H, W, C], {head: targets [B, ...]}, rows [B]) of the items at `positions`."""
        rows = self.rows[np.asarray(positions, dtype=np.int64)]
        epoch = self.epoch if epoch is None else epoch
        if self.reseed:
            images = np.stack([self._augmented(int(row), epoch) for row in rows]) if len(rows) else self._none()
        elif isinstance(self.images, np.ndarray):
            images = np.ascontiguousarray(self.images[rows])  # one read of the memmap, no per-image work
        else:
            images = np.stack([self.images[int(row)] for row in rows])
        targets = {name: torch.from_numpy(np.ascontiguousarray(values[rows])) for name, values in self.targets.items()}
        return torch.from_numpy(images), targets, torch.from_numpy(rows)

    def _none(self) -> np.ndarray:
        empty = np.zeros(0, dtype=np.int64)
        return self.images[empty] if isinstance(self.images, np.ndarray) else np.zeros((0, 0, 0, 3), np.uint8)

    def _augmented(self, row: int, epoch: int) -> np.ndarray:
        seed = augmentation_seed(self.seed, epoch, row)
        # One generator pair shared by the whole pipeline: `set_random_seed` gave every transform its own
        # copy of one stream (so e.g. two p=0.5 flips always fired together) and took 3x as long.
        augment = self.pipeline.augment
        augment.set_random_state(SeededNumpyGenerator(seed), random.Random(seed))
        return augment(image=np.ascontiguousarray(self.images[row]))["image"]


def augmentation_seed(seed: int, epoch: int, row: int) -> int:
    """The seed of one image's augmentations in one epoch: a function of (seed, epoch, row) only."""
    return (seed * 1_000_003 + epoch * 7_919 + row) % (2**32)


class SeededNumpyGenerator:
    """`np.random.default_rng(seed)`, built on first use: the same stream, but an image whose transforms draw only
    from Python's `random` (Affine, flips, brightness/contrast, ...) no longer pays for building one (about a fifth
    of the demo's per-image augmentation time, measured)."""

    __slots__ = ("seed", "_generator")

    def __init__(self, seed: int):
        self.seed, self._generator = seed, None

    def __getattr__(self, name: str):
        if name in self.__slots__:  # a copy made without __init__ (copy, pickle): not a generator attribute
            raise AttributeError(name)
        if self._generator is None:
            self._generator = np.random.default_rng(self.seed)
        return getattr(self._generator, name)


class RowBatches(Sampler):
    """Batch requests `(epoch, positions)` over `sampler`'s order, `batch_size` at a time; the epoch is the
    dataset's when an epoch's iteration starts (in the main process, so worker processes need not know it).

    With `shuffle_generator` (the training sampler's RNG) one number is drawn from it first each epoch, as
    DataLoader drew its worker seed from that generator when it batched itself: shuffles stay those of
    earlier runs and checkpoints, and no longer depend on whether worker processes are persistent.
    """

    def __init__(
        self,
        sampler,
        batch_size: int,
        drop_last: bool,
        dataset: CachedImageDataset,
        shuffle_generator: torch.Generator | None = None,
    ):
        self.batches = BatchSampler(sampler, batch_size, drop_last)
        self.dataset, self.shuffle_generator = dataset, shuffle_generator

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        if self.shuffle_generator is not None:
            torch.empty((), dtype=torch.int64).random_(generator=self.shuffle_generator)
        epoch = self.dataset.epoch
        for positions in self.batches:
            yield epoch, positions


def _as_is(batch):
    return batch  # the dataset already returns whole batches of tensors


def make_loader(
    dataset: CachedImageDataset,
    batch_size: int,
    runtime: Runtime,
    sampler=None,
    drop_last: bool = False,
    num_workers="auto",
    persistent_workers: bool | None = None,
    prefetch_factor: int | None = None,
    shuffle_generator: torch.Generator | None = None,
) -> DeviceLoader:
    """Batches of `dataset` in `sampler`'s order (default: in order), as model input on `runtime`'s device.

    Workers, their persistence and prefetch depth follow the usable cores and the device unless given
    (`src.runtime.loader_options`); on CUDA batches are pinned and copied ahead on a side stream.
    """
    requests = RowBatches(
        SequentialSampler(dataset) if sampler is None else sampler, batch_size, drop_last, dataset, shuffle_generator
    )
    options = loader_options(runtime, num_workers, persistent_workers, prefetch_factor)
    # Its own generator: the worker base seed DataLoader draws must not move the shuffling or global RNG.
    loader = DataLoader(
        dataset,
        batch_size=None,
        sampler=requests,
        collate_fn=_as_is,
        pin_memory=runtime.on_cuda,
        generator=torch.Generator().manual_seed(0),
        **options,
    )
    return DeviceLoader(loader, runtime, dataset.normalize)
