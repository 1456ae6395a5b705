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
        accepted = inspect.signature(transform_cls.__init__).parameters
        if "size" in accepted and "size" not in params:
            params["size"] = (image_size, image_size)
        unknown = sorted(key for key in params if key not in accepted)
        if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
            # albumentations only warns and then runs with the defaults: a typo would silently change the recipe
            raise PipelineError(f"config {where}.{index}: {name} has no argument {', '.join(map(repr, unknown))}; "
                                f"its arguments: {', '.join(k for k in accepted if k != 'self')}")
        try:
            built.append(transform_cls(**params))
        except Exception as exc:  # albumentations validates its own arguments
            raise PipelineError(f"config {where}.{index}: {name}({params}) rejected: {str(exc).splitlines()[0]}") from None
    built += [A.Normalize(mean=mean, std=std), ToTensorV2()]
    return A.Compose(built)


def transform_from_config(config, which: str) -> A.Compose:
    """The `augment.train` or `augment.eval` pipeline of a config, normalised as its weights expect
    (`augment.mean`/`std`, else the pretrained weights' own, else ImageNet's)."""
    from src.weights import normalisation

    mean, std = normalisation(config)
    return build_transform(getattr(config.augment, which), config.data.image_size, mean, std, f"augment.{which}")
