"""Albumentations pipelines from config lists like `[{name: HorizontalFlip, p: 0.5}]`."""
from __future__ import annotations

import inspect
from typing import Any

import albumentations as A
from albumentations.pytorch import ToTensorV2

from src.errors import PipelineError


def build_transform(steps: list[dict[str, Any]], image_size: int, mean, std, where: str) -> A.Compose:
    """Compose the configured steps, then Normalize and ToTensorV2.

    Images reach the pipeline already resized to `image_size` (see the dataset), so a step that
    takes a `size` (crops) gets `(image_size, image_size)` unless the config names one.
    `where` (e.g. 'augment.train') goes into error messages.
    """
    built = []
    for index, step in enumerate(steps):
        params = dict(step)
        name = params.pop("name", None)
        transform_cls = getattr(A, str(name), None) if name else None
        if not (inspect.isclass(transform_cls) and issubclass(transform_cls, A.BasicTransform)):
            raise PipelineError(f"config {where}.{index}.name: '{name}' is not an albumentations transform (e.g. HorizontalFlip)")
        if "size" in inspect.signature(transform_cls.__init__).parameters and "size" not in params:
            params["size"] = (image_size, image_size)
        try:
            built.append(transform_cls(**params))
        except Exception as exc:  # albumentations validates its own arguments
            raise PipelineError(f"config {where}.{index}: {name}({params}) rejected: {str(exc).splitlines()[0]}") from None
    built += [A.Normalize(mean=mean, std=std), ToTensorV2()]
    return A.Compose(built)
