"""Image pipelines from config lists like `[{name: HorizontalFlip, p: 0.5}]`: augmentations on uint8 arrays
(albumentations, per image, on the CPU), then one normalisation per batch on the device (`BatchNormalize`)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import albumentations as A
import numpy as np
import torch

from src.data.crops import EvalCrop, crop_at
from src.data.image_affine import image_only_twin
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
        self._scale = torch.from_numpy(np.reciprocal(np.array(self.std, dtype=np.float32) * MAX_PIXEL)).view(
            1, -1, 1, 1
        )
        self._on_device: dict[tuple[torch.device, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """Normalise a uint8 NHWC batch where it lies; channels_last memory format, or contiguous NCHW."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[3] != len(self.mean):
            raise PipelineError(
                f"BatchNormalize takes uint8 [B, H, W, {len(self.mean)}] batches, got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        # torch on the CPU too: its 2 threads beat numpy's one (0.34 vs 0.65 ms per 128 images at 64 px, measured).
        # uint8 -> float32 in one copy straight into the wanted layout (exact: every uint8 is a float32), then the two
        # steps in place: no uint8 staging copy, no second float tensor.
        if channels_last:
            return self._channels_last(images)
        offset, scale = self._constants(images.device)
        planar = images.permute(0, 3, 1, 2)  # a view; NCHW contiguous: the (1, C, 1, 1) constants broadcast well
        out = torch.empty(planar.shape, dtype=torch.float32, device=images.device)
        return out.copy_(planar).sub_(offset).mul_(scale)

    def _channels_last(self, images: torch.Tensor) -> torch.Tensor:
        # NHWC storage is the channels_last layout of NCHW. Seen as rows of W x C values, with the constants tiled
        # W times, every op runs along long contiguous rows instead of broadcasting over C = 3 innermost (0.23 vs
        # 2.85 ms per 128 images at 64 px on the CPU, measured); each element sees the same two float32 steps.
        batch, height, width, channels = images.shape
        offset, scale = self._constants(images.device, width)
        out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
        rows = out.view(batch * height, width * channels)
        rows.copy_(images.reshape(batch * height, width * channels)).sub_(offset).mul_(scale)
        return out.permute(0, 3, 1, 2)

    def _constants(self, device: torch.device, row_width: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(offset, scale) on `device`: shaped (1, C, 1, 1), or tiled along a row of `row_width` pixels of C values."""
        key = (device, row_width)
        if key not in self._on_device:
            if row_width:
                constants = (self._offset.view(-1).repeat(row_width), self._scale.view(-1).repeat(row_width))
            else:
                constants = (self._offset, self._scale)
            self._on_device[key] = tuple(value.to(device) for value in constants)
        return self._on_device[key]

    def __getstate__(self) -> dict:
        return {"mean": self.mean, "std": self.std}  # a worker process rebuilds its own (CPU) constants

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["mean"], state["std"])


class FixedCrop(A.ImageOnlyTransform):
    """`crop_at` as an albumentations step: deterministic (no random draw), so seeded pipelines keep their streams."""

    def __init__(self, size: int, mode: EvalCrop = "center", position: str = "center", p: float = 1.0):
        super().__init__(p=p)
        self.size, self.mode, self.position = size, mode, position

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        return crop_at(img, self.size, self.mode, self.position)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size", "mode", "position")


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

    A step that takes a `size` or `height`/`width` (crops) gets `image_size` unless the config names one; images reach
    the pipeline as cached (`transform_from_config` adds the crop a cache larger than `image_size` needs).
    `where` (e.g. 'augment.train') goes into error messages.
    """
    # Only `image` is ever passed, so Compose's cross-target shape check has nothing to compare (and costs ~10 us/image).
    return ImagePipeline(
        A.Compose(
            [_build_step(step, index, image_size, where) for index, step in enumerate(steps)], is_check_shapes=False
        ),
        BatchNormalize(mean, std),
    )


def _build_step(step: dict[str, Any], index: int, image_size: int, where: str) -> A.BasicTransform:
    params = dict(step)
    name = params.pop("name", None)
    transform_cls = getattr(A, str(name), None) if name else None
    if not (inspect.isclass(transform_cls) and issubclass(transform_cls, A.BasicTransform)):
        raise PipelineError(
            f"config {where}.{index}.name: '{name}' is not an albumentations transform (e.g. HorizontalFlip)"
        )
    accepted = inspect.signature(transform_cls.__init__).parameters
    if "size" in accepted and "size" not in params:
        params["size"] = (image_size, image_size)
    for side in ("height", "width"):  # RandomCrop, CenterCrop: the model's input unless the config names one
        if side in accepted and side not in params and {"height", "width"} <= set(accepted):
            params[side] = image_size
    unknown = sorted(key for key in params if key not in accepted)
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        # albumentations only warns and then runs with the defaults: a typo would silently change the recipe
        raise PipelineError(
            f"config {where}.{index}: {name} has no argument {', '.join(map(repr, unknown))}; "
            f"its arguments: {', '.join(k for k in accepted if k != 'self')}"
        )
    # Pipelines here only ever pass `image`: a twin that skips the work other targets need gives the same pixels.
    transform_cls = image_only_twin(str(name)) or transform_cls
    try:
        return transform_cls(**params)
    except Exception as exc:  # albumentations validates its own arguments
        raise PipelineError(f"config {where}.{index}: {name}({params}) rejected: {str(exc).splitlines()[0]}") from None


def transform_from_config(config, which: str, crop_position: str | None = None) -> ImagePipeline:
    """The `augment.train` or `augment.eval` pipeline of a config, normalised as its weights expect
    (`augment.mean`/`std`, else the pretrained weights' own, else ImageNet's).

    A cache larger than the input (data.cache_size, data.resize: short_side) gets its crop to image_size: train
    crops (RandomCrop, RandomResizedCrop) in `augment.train` cut from the whole cached source, and a last fixed crop
    (data.eval_crop) fits whatever is still larger; eval starts with data.eval_crop, or with the TTA crop at
    `crop_position` (one of src.data.crops.CROP_POSITIONS, cut at the cached scale). A cache already at the input
    size adds no step (today's pipelines, bit for bit)."""
    from src.weights import normalisation

    mean, std = normalisation(config)
    data = config.data
    pipeline = build_transform(getattr(config.augment, which), data.image_size, mean, std, f"augment.{which}")
    if data.source_is_input:
        return pipeline
    steps = list(pipeline.augment.transforms)
    if which == "train":
        steps.append(FixedCrop(data.image_size, data.eval_crop))
    elif crop_position is None:
        steps.insert(0, FixedCrop(data.image_size, data.eval_crop))
    else:
        steps.insert(0, FixedCrop(data.image_size, "center", crop_position))
    return ImagePipeline(A.Compose(steps, is_check_shapes=False), pipeline.normalize)
