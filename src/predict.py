"""Inference shared by validation, oof, submit and the kernel: probabilities per head, optional flip TTA."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from src.formats.base import HeadSpec
from src.runtime import Runtime, loader_workers


def logits_to_probs(logits: torch.Tensor, kind: str) -> torch.Tensor:
    return torch.sigmoid(logits) if kind == "multilabel" else torch.softmax(logits, dim=1)


def make_eval_loader(dataset, batch_size: int, num_workers: int, runtime: Runtime, sampler=None) -> DataLoader:
    """The in-order DataLoader validation, oof and submit predict from."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, sampler=sampler, num_workers=loader_workers(num_workers),
                      pin_memory=runtime.on_cuda)


@torch.no_grad()
def predict_probs(model: nn.Module, loader: DataLoader, heads: list[HeadSpec], runtime: Runtime, tta_flip: bool = False,
                  loss_fn: nn.Module | None = None, quiet: bool = False, desc: str = "predict"):
    """Return ({head: float32 probs [n, c]} in loader order, mean loss or None).

    With `tta_flip` the probabilities of each image and its horizontal mirror are averaged;
    the loss (when `loss_fn` is given) is on the un-flipped logits.
    """
    model.eval()
    kinds = {head.name: head.kind for head in heads}
    collected: dict[str, list[np.ndarray]] = {name: [] for name in kinds}
    loss_sum, seen = 0.0, 0
    for images, targets, _ in tqdm(loader, desc=desc, disable=quiet, leave=False):
        images = runtime.to_device(images)
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
