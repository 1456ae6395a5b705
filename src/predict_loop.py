"""The no-grad prediction loop shared by validation and inference (src.inference): eval loaders, probabilities per head,
optional flip TTA and N-crop TTA."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from src.data.crops import CROP_POSITIONS
from src.data.dataset import CachedImageDataset, make_loader
from src.data.transforms import transform_from_config
from src.formats.base import HeadSpec
from src.runtime import DeviceLoader, Runtime


def logits_to_probs(logits: torch.Tensor, kind: str) -> torch.Tensor:
    return torch.sigmoid(logits) if kind == "multilabel" else torch.softmax(logits, dim=1)


def make_eval_loader(
    dataset: CachedImageDataset,
    batch_size: int,
    num_workers,
    runtime: Runtime,
    sampler=None,
    persistent_workers: bool | None = None,
    prefetch_factor: int | None = None,
) -> DeviceLoader:
    """The in-order loader validation, oof and submit predict from: uint8 batches of the cache (one fancy index
    per batch when the eval pipeline has no steps), normalised on the device; workers as `src.runtime.loader_options`."""
    return make_loader(dataset, batch_size, runtime, sampler, False, num_workers, persistent_workers, prefetch_factor)


def config_eval_loader(
    config,
    images: np.ndarray,
    rows: np.ndarray,
    runtime: Runtime,
    targets: dict[str, np.ndarray] | None = None,
    sampler=None,
    crop_position: str | None = None,
) -> DeviceLoader:
    """`make_eval_loader` over the cached `images[rows]` as the config predicts: its eval pipeline (with the TTA
    crop at `crop_position` when given), predict batch size and loader settings (`train.num_workers`, persistent
    workers, prefetch factor)."""
    tc = config.train
    dataset = CachedImageDataset(images, rows, targets, transform_from_config(config, "eval", crop_position))
    return make_eval_loader(
        dataset, config.predict.batch_size, tc.num_workers, runtime, sampler, tc.persistent_workers, tc.prefetch_factor
    )


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    loader: DeviceLoader | Iterable,
    heads: list[HeadSpec],
    runtime: Runtime,
    tta_flip: bool = False,
    loss_fn: nn.Module | None = None,
    quiet: bool = False,
    desc: str = "predict",
):
    """Return ({head: float32 probs [n, c]} in loader order, mean loss or None).

    `loader` gives (images, {head: targets}, rows) batches; a DeviceLoader's are already model input on the
    device (see `make_eval_loader`), and float batches elsewhere are moved there. With `tta_flip` the
    probabilities of each image and its horizontal mirror are averaged; the loss (when `loss_fn` is given)
    is on the un-flipped logits.
    """
    model.eval()
    kinds = {head.name: head.kind for head in heads}
    collected: dict[str, list[np.ndarray]] = {name: [] for name in kinds}
    loss_sum, seen = 0.0, 0
    for images, targets, _ in tqdm(loader, desc=desc, disable=quiet, leave=False):
        images = runtime.to_device(images)  # a no-op for a DeviceLoader's batches
        with runtime.autocast():
            outputs = model(images)
            flipped = model(torch.flip(images, dims=[3])) if tta_flip else None
        if loss_fn is not None and targets:
            batch_targets = {name: value.to(runtime.device) for name, value in targets.items()}
            loss, _ = loss_fn(outputs, batch_targets)
            loss_sum += float(loss) * len(images)
            seen += len(images)
        for name, kind in kinds.items():
            probs = logits_to_probs(outputs[name].float(), kind)
            if flipped is not None:
                probs = (probs + logits_to_probs(flipped[name].float(), kind)) / 2
            collected[name].append(probs.cpu().numpy())
    empty = {head.name: np.zeros((0, head.n_outputs), np.float32) for head in heads}  # a fold with no readable rows
    probs = {name: np.concatenate(parts) if parts else empty[name] for name, parts in collected.items()}
    return probs, (loss_sum / seen if seen else None)


def predict_config_probs(
    model: nn.Module, config, heads: list[HeadSpec], images, rows: np.ndarray, runtime: Runtime, quiet: bool, desc: str
) -> dict[str, np.ndarray]:
    """{head: probs} of the cached `images[rows]` as the config predicts: flip TTA (predict.tta_flip) and, with
    predict.tta_crops N > 1, the mean over N deterministic crops (centre, then the corners; src.data.crops)."""
    flip = config.predict.tta_flip
    if config.predict.tta_crops == 1:
        loader = config_eval_loader(config, images, rows, runtime)
        return predict_probs(model, loader, heads, runtime, tta_flip=flip, quiet=quiet, desc=desc)[0]
    total: dict[str, np.ndarray] = {}
    positions = CROP_POSITIONS[: config.predict.tta_crops]
    for position in positions:
        loader = config_eval_loader(config, images, rows, runtime, crop_position=position)
        probs, _ = predict_probs(model, loader, heads, runtime, tta_flip=flip, quiet=quiet, desc=f"{desc} {position}")
        total = {name: total.get(name, 0) + values for name, values in probs.items()}
    return {name: (values / len(positions)).astype(np.float32) for name, values in total.items()}
