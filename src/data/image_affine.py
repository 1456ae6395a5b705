"""albumentations' Affine (and ShiftScaleRotate, which is an Affine) for pipelines that transform images only.

Same random draws in the same order and the same pixels, bit for bit (tests/test_image_affine.py compares them
with albumentations' own over many seeds and arguments), without the work only other targets need: the stock
transform builds a second matrix for bounding boxes and checks the image matrix against the identity with
`np.allclose`, which together cost more than the warp itself (149 vs 15 us per 64 px image, measured).
Anything else (masks, boxes, keypoints, `fit_output`, images of 1 or more than 4 channels) takes the stock path.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.geometric import functional as fgeometric

_IDENTITY = np.eye(3)
# np.allclose's defaults, which albumentations' identity check uses: |a - b| <= atol + rtol * |b|
_IDENTITY_TOLERANCE = 1e-8 + 1e-5 * np.abs(_IDENTITY)


def is_identity(matrix: np.ndarray) -> bool:
    """np.allclose(matrix, eye(3)) for a 3 x 3 float matrix (NaN is never close), without its per-call overhead."""
    return bool((np.abs(matrix - _IDENTITY) <= _IDENTITY_TOLERANCE).all())


class ImageOnlyAffine:
    """Mixin before an albumentations Affine class: image-only calls skip the box matrix and the slow identity test."""

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        if self.fit_output or any(key != "image" for key in data):
            return super().get_params_dependent_on_data(params, data)
        image_shape = params["shape"][:2]
        # The stock method's draws, in its order: translate, shear, scale, rotate.
        translate = self._get_translate_params(image_shape)
        shear = self._get_shear_params()
        scale = self._get_scale(self.scale, self.keep_ratio, self.balanced_scale, self.py_random)
        rotate = self.py_random.uniform(*self.rotate)
        matrix = fgeometric.create_affine_transformation_matrix(
            translate, shear, scale, rotate, fgeometric.center(image_shape)
        )
        return {"rotate": rotate, "scale": scale, "matrix": matrix, "bbox_matrix": None, "output_shape": image_shape}

    def apply(self, img: np.ndarray, matrix: np.ndarray, output_shape: tuple[int, int], **params: Any) -> np.ndarray:
        if img.ndim != 3 or not 2 <= img.shape[2] <= 4:  # the stock path keeps a lone channel and chunks wide images
            return super().apply(img, matrix, output_shape, **params)
        if is_identity(matrix):
            return img
        fill = [self.fill] * img.shape[2] if isinstance(self.fill, float) else self.fill
        size = (int(round(output_shape[1])), int(round(output_shape[0])))  # round half to even, as np.round
        return cv2.warpAffine(
            img, matrix[:2, :], size, flags=self.interpolation, borderMode=self.border_mode, borderValue=fill
        )


class ImageAffine(ImageOnlyAffine, A.Affine):
    """A.Affine, faster on images alone (see the module docstring)."""


class ImageShiftScaleRotate(ImageOnlyAffine, A.ShiftScaleRotate):
    """A.ShiftScaleRotate, faster on images alone (see the module docstring)."""


# The albumentations release the twins were checked against, bit for bit (tests/test_image_affine.py). They use its
# protected draw helpers, so on any other release (a Kaggle image without the shipped wheels, say) configs get the
# stock transforms: the same pixels, only slower. Bump it with requirements.txt once those tests pass.
CHECKED_ALBUMENTATIONS = "2.0.8"

# Config name -> the class built in its place; each takes exactly its stock class's arguments.
IMAGE_ONLY_TWINS: dict[str, type] = {"Affine": ImageAffine, "ShiftScaleRotate": ImageShiftScaleRotate}


def image_only_twin(name: str, version: str = A.__version__) -> type | None:
    """The twin to build for config step `name`, or None (no twin, or albumentations is not the checked release)."""
    return IMAGE_ONLY_TWINS.get(name) if version == CHECKED_ALBUMENTATIONS else None
