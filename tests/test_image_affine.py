"""The image-only Affine twins (src/data/image_affine.py): the same pixels as albumentations' own transforms, bit for
bit, over many seeds and arguments, and the stock path wherever the twins' shortcut does not hold."""

from __future__ import annotations

import random
import warnings

import albumentations as A
import cv2
import numpy as np
import pytest

from src.data.image_affine import (
    CHECKED_ALBUMENTATIONS,
    ImageAffine,
    ImageShiftScaleRotate,
    image_only_twin,
    is_identity,
)
from src.data.transforms import build_transform

SEEDS = 120
AFFINE_ARGUMENTS = [
    {"translate_percent": (-0.06, 0.06), "scale": (0.9, 1.1), "p": 0.7},  # the demo's
    {"rotate": (-30, 30), "shear": (-10, 10)},
    {"translate_px": (-5, 5), "scale": (0.8, 1.2), "keep_ratio": True, "balanced_scale": True},
    {"scale": {"x": (0.7, 1.0), "y": (1.0, 1.3)}, "translate_percent": {"x": (-0.1, 0.1), "y": 0.0}},
    {"scale": (0.5, 1.5), "fit_output": True},  # output shape depends on the draw: the stock path
    {"rotate": (-8, 8), "fill": (10, 20, 30), "border_mode": cv2.BORDER_REFLECT_101, "interpolation": cv2.INTER_CUBIC},
    {"rotate": (-8, 8), "fill": 7.0, "interpolation": cv2.INTER_NEAREST},
    {"scale": 1.0},  # the identity: the image comes back as it is
]


def pair(stock: A.BasicTransform, twin: A.BasicTransform):
    return A.Compose([stock], is_check_shapes=False), A.Compose([twin], is_check_shapes=False)


def outputs(pipeline: A.Compose, seed: int, **data):
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return pipeline(**data)


def assert_same_images(stock: A.Compose, twin: A.Compose, image: np.ndarray) -> None:
    for seed in range(SEEDS):
        expected, got = outputs(stock, seed, image=image)["image"], outputs(twin, seed, image=image)["image"]
        assert got.shape == expected.shape and got.dtype == expected.dtype, seed
        assert np.array_equal(got, expected), f"seed {seed}: {np.abs(got.astype(int) - expected).max()} grey levels off"


@pytest.mark.parametrize("arguments", AFFINE_ARGUMENTS, ids=lambda arguments: ",".join(arguments))
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_image_affine_gives_albumentations_pixels_bit_for_bit(arguments, channels):
    image = np.random.default_rng(channels).integers(0, 256, (48, 64, channels), dtype=np.uint8)
    assert_same_images(*pair(A.Affine(**arguments), ImageAffine(**arguments)), image)


def test_image_shift_scale_rotate_gives_albumentations_pixels_bit_for_bit():
    image = np.random.default_rng(3).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ShiftScaleRotate is deprecated in favour of Affine; users still name it
        stock, twin = A.ShiftScaleRotate(p=0.8), ImageShiftScaleRotate(p=0.8)
    assert_same_images(*pair(stock, twin), image)


def test_other_targets_take_the_stock_path_and_stay_aligned_with_the_image():
    image = np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = (image[..., 0] > 128).astype(np.uint8)
    stock, twin = pair(A.Affine(rotate=(-20, 20), p=1.0), ImageAffine(rotate=(-20, 20), p=1.0))
    for seed in range(20):
        expected, got = outputs(stock, seed, image=image, mask=mask), outputs(twin, seed, image=image, mask=mask)
        assert np.array_equal(got["image"], expected["image"]) and np.array_equal(got["mask"], expected["mask"])


def test_the_identity_check_is_numpys_allclose():
    rng = np.random.default_rng(0)
    matrices = [np.eye(3), np.eye(3) + 1e-9, np.eye(3) + 1e-4, np.full((3, 3), np.nan), np.diag([1.0, 1.0, np.inf])]
    matrices += [
        np.eye(3) + rng.normal(0, scale, (3, 3)) for scale in (1e-10, 1e-7, 1e-6, 1e-5, 1e-3) for _ in range(20)
    ]
    for matrix in matrices:
        assert is_identity(matrix) == np.allclose(matrix, np.eye(3))


def test_configs_naming_affine_get_the_twins():
    steps = [{"name": "Affine", "rotate": (-5, 5), "p": 0.5}, {"name": "HorizontalFlip", "p": 0.5}]
    affine, flip = build_transform(steps, 16, (0.5,) * 3, (0.25,) * 3, "augment.train").augment.transforms
    assert type(affine) is ImageAffine and isinstance(affine, A.Affine) and affine.p == 0.5
    assert type(flip) is A.HorizontalFlip


def test_twins_are_only_built_on_the_albumentations_release_they_were_checked_against():
    assert A.__version__ == CHECKED_ALBUMENTATIONS  # requirements.txt moved on: rerun this file, then bump the constant
    assert image_only_twin("Affine") is ImageAffine and image_only_twin("HorizontalFlip") is None
    assert image_only_twin("Affine", version="2.0.9") is None  # another release: the stock transform, same pixels
