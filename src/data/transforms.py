"""Image pipelines from config lists like `[{name: HorizontalFlip, p: 0.5}]`: augmentations on uint8 arrays
(albumentations, per image, on the CPU), then one normalisation per batch on the device (`BatchNormalize`)."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import albumentations as A
import numpy as np
import torch

from src.data.image_affine import IMAGE_ONLY_TWINS
from src.errors import PipelineError

MAX_PIXEL = 255.0


class BatchNormalize:
    """uint8 images [B, H, W, C] (any device) -> float32 [B, C, H, W], `(x - mean*255) * (1 / (std*255))`.

    The constants and the order of operations are albumentations' own (`A.Normalize` builds a float32
    lookup table with exactly these two steps), so the result is bit for bit what `A.Normalize` +
    `ToTensorV2` gave per image.
    """

    def __init__(self, mean, std):
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        # The same float32 expressions as A.Normalize.__init__ (mean * max_pixel, reciprocal(std * max_pixel)).
        self._offset = torch.from_numpy(np.array(self.mean, dtype=np.float32) * MAX_PIXEL).view(1, -1, 1, 1)
        self._scale = torch.from_numpy(np.reciprocal(np.array(self.std, dtype=np.float32) * MAX_PIXEL)).view(1, -1, 1, 1)
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """Normalise a uint8 NHWC batch where it lies; channels_last memory format, or contiguous NCHW."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise PipelineError(f"BatchNormalize takes uint8 [B, H, W, C] batches, got {images.dtype} {tuple(images.shape)}")
        # torch on the CPU too: its 2 threads beat numpy's one (0.34 vs 0.65 ms per 128 images at 64 px, measured)
        offset, scale = self._constants(images.device)
        planar = images.permute(0, 3, 1, 2)  # a view: NHWC storage is the channels_last layout of NCHW
        # uint8 -> float32 in one copy straight into the wanted layout (exact: every uint8 is a float32), then the two
        # steps in place: no uint8 staging copy, no second float tensor (1.2 vs 1.6 ms per 128 images at 64 px, measured).
        layout = torch.channels_last if channels_last else torch.contiguous_format
        out = torch.empty(planar.shape, dtype=torch.float32, device=images.device, memory_format=layout)
        return out.copy_(planar).sub_(offset).mul_(scale)

    def _constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on_device:
            self._on_device[device] = (self._offset.to(device), self._scale.to(device))
        return self._on_device[device]

    def __getstate__(self) -> dict:
        return {"mean": self.mean, "std": self.std}  # a worker process rebuilds its own (CPU) constants

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["mean"], state["std"])


@dataclass
class ImagePipeline:
    """`augment` runs per image on uint8 HWC arrays (empty = no per-image work); `normalize` once per batch."""

    augment: A.Compose
    normalize: BatchNormalize

    @property
    def has_steps(self) -> bool:
        return len(self.augment.transforms) > 0


def build_transform(steps: list[dict[str, Any]], image_size: int, mean, std, where: str) -> ImagePipeline:
    """The configured steps as an albumentations pipeline on uint8 images, and the batch normalisation after it.

    Images reach the pipeline already resized to `image_size` (see the dataset), so a step that
    takes a `size` (crops) gets `(image_size, image_size)` unless the config names one.
    `where` (e.g. 'augment.train') goes into error messages.
    """
    # Only `image` is ever passed, so Compose's cross-target shape check has nothing to compare (and costs ~10 us/image).
    return ImagePipeline(A.Compose([_build_step(step, index, image_size, where) for index, step in enumerate(steps)],
                                   is_check_shapes=False),
                         BatchNormalize(mean, std))


def _build_step(step: dict[str, Any], index: int, image_size: int, where: str) -> A.BasicTransform:
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
    # Pipelines here only ever pass `image`: a twin that skips the work other targets need gives the same pixels.
    transform_cls = IMAGE_ONLY_TWINS.get(str(name), transform_cls)
    try:
        return transform_cls(**params)
    except Exception as exc:  # albumentations validates its own arguments
        raise PipelineError(f"config {where}.{index}: {name}({params}) rejected: {str(exc).splitlines()[0]}") from None


def transform_from_config(config, which: str) -> ImagePipeline:
    """The `augment.train` or `augment.eval` pipeline of a config, normalised as its weights expect
    (`augment.mean`/`std`, else the pretrained weights' own, else ImageNet's)."""
    from src.weights import normalisation

    mean, std = normalisation(config)
    return build_transform(getattr(config.augment, which), config.data.image_size, mean, std, f"augment.{which}")
