"""The data path (src/data/dataset.py, src/data/transforms.py, src/runtime.py): uint8 batches leave the loader and
are normalised once per batch on the device, with the numbers of the per-image float path they replaced."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import DataLoader, RandomSampler

from src.config import load_config
from src.data.dataset import CachedImageDataset, augmentation_seed, make_loader
from src.data.transforms import BatchNormalize, build_transform, transform_from_config
from src.formats.base import HeadSpec
from src.inference import predict_rows
from src.model import build_model
from src.predict_loop import make_eval_loader, predict_probs
from src.runtime import Runtime, make_runtime

SIZE = 16
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
ODD = ((0.1, 0.7, 0.33), (0.9, 0.05, 0.3))
TRAIN = [
    {"name": "HorizontalFlip", "p": 0.5},
    {"name": "Affine", "rotate": (-20, 20), "p": 0.7},
    {"name": "RandomBrightnessContrast", "p": 0.5},
]
HEADS = [HeadSpec("labels", "multilabel", ("a", "b", "c")), HeadSpec("kind", "softmax", ("w", "x", "y", "z"))]
CPU = make_runtime("cpu")
PROBS_TOLERANCE = 1e-5  # stated bound on CPU float32; the inputs are bit-identical, so the observed difference is 0


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # OpenMP spin-waits: 1 thread on a shared box


def images(n: int = 10, seed: int = 0) -> np.ndarray:
    data = np.random.default_rng(seed).integers(0, 256, size=(n, SIZE, SIZE, 3), dtype=np.uint8)
    data[0].reshape(-1, 3)[:256] = np.arange(256, dtype=np.uint8)[:, None]  # every pixel value in every channel
    return data


def per_image(image: np.ndarray, mean, std) -> torch.Tensor:
    """The replaced path: albumentations' Normalize + ToTensorV2 on one image (CHW float32)."""
    return A.Compose([A.Normalize(mean=mean, std=std), ToTensorV2()])(image=image)["image"]


def dataset(data, steps=(), stats=IMAGENET, rows=None, seed: int = 5) -> CachedImageDataset:
    rows = np.arange(len(data)) if rows is None else np.asarray(rows)
    targets = {"labels": (np.arange(len(data) * 3).reshape(-1, 3) % 2).astype(np.uint8)}
    return CachedImageDataset(data, rows, targets, build_transform(list(steps), SIZE, *stats, "augment.train"), seed)


# --- normalisation: bit for bit albumentations' ---------------------------------------------------


@pytest.mark.parametrize("stats", [IMAGENET, ODD, ((0.5,) * 3, (0.25,) * 3)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_normalisation_equals_albumentations_bit_for_bit(stats, channels_last):
    data = images()
    out = BatchNormalize(*stats)(torch.from_numpy(data), channels_last)  # the same torch ops a CUDA batch gets
    expected = torch.stack([per_image(image, *stats) for image in data])
    assert out.dtype == torch.float32 and out.shape == (len(data), 3, SIZE, SIZE)
    assert torch.equal(out, expected)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_normalisation_of_wide_tall_and_strided_batches_is_albumentations_too(channels_last):
    normalize = BatchNormalize(*ODD)  # one normaliser: its constants per row width must not mix
    for height, width in [(SIZE, 2 * SIZE + 3), (2 * SIZE + 1, SIZE // 2), (SIZE, SIZE)]:
        data = np.random.default_rng(width).integers(0, 256, size=(3, height, 2 * width, 3), dtype=np.uint8)
        batch = torch.from_numpy(data)[:, :, ::2]  # a strided view, as a crop of a larger buffer would be
        out = normalize(batch, channels_last)
        expected = torch.stack([per_image(np.ascontiguousarray(image), *ODD) for image in data[:, :, ::2]])
        assert out.shape == (3, 3, height, width) and torch.equal(out, expected), (height, width)


def test_batch_normalisation_refuses_what_is_not_a_uint8_nhwc_batch():
    from src.errors import PipelineError

    with pytest.raises(PipelineError, match="uint8"):
        BatchNormalize(*IMAGENET)(torch.zeros(2, 3, SIZE, SIZE))


# --- batches: the per-image items stacked; no per-image work without steps -------------------------


def test_a_batch_is_its_items_stacked_with_the_requested_epoch():
    data = images()
    ds = dataset(data, TRAIN, rows=[7, 2, 9, 0, 4])
    ds.set_epoch(3)
    items = [ds[index] for index in range(len(ds))]
    ds.set_epoch(0)  # the request's epoch wins over the dataset's
    batch_images, targets, rows = ds[(3, [0, 1, 2, 3, 4])]
    assert batch_images.dtype == torch.uint8 and batch_images.shape == (5, SIZE, SIZE, 3)
    assert torch.equal(batch_images, torch.stack([item[0] for item in items]))
    assert rows.tolist() == [7, 2, 9, 0, 4] and rows.dtype == torch.int64
    assert torch.equal(targets["labels"], torch.stack([item[1]["labels"] for item in items]))
    assert not torch.equal(ds[(4, [0, 1, 2, 3, 4])][0], batch_images)  # another epoch, other augmentations


def test_an_eval_batch_without_steps_is_one_read_of_the_cache(monkeypatch):
    data = images()
    ds = dataset(data, rows=[3, 1, 8])

    def refuse(*args, **kwargs):
        raise AssertionError("per-image work on a pipeline with no steps")

    monkeypatch.setattr(ds.pipeline, "augment", refuse)
    batch_images, _, _ = ds[(0, [0, 1, 2])]
    assert torch.equal(batch_images, torch.from_numpy(data[[3, 1, 8]]))


def test_the_loader_gives_normalised_float_batches_in_order():
    data = images()
    loader = make_eval_loader(dataset(data, rows=[5, 2, 6, 0, 3, 1, 4]), 3, 0, CPU)
    batches = list(loader)
    assert [len(rows) for _, _, rows in batches] == [3, 3, 1] and len(loader) == 3
    assert torch.cat([rows for _, _, rows in batches]).tolist() == [5, 2, 6, 0, 3, 1, 4]
    expected = torch.stack([per_image(data[row], *IMAGENET) for row in [5, 2, 6, 0, 3, 1, 4]])
    assert torch.equal(torch.cat([batch for batch, _, _ in batches]), expected)


def test_channels_last_runtime_gets_channels_last_batches():
    loader = make_eval_loader(dataset(images()), 4, 0, Runtime(torch.device("cpu"), None, True))
    batch, _, _ = next(iter(loader))
    assert batch.is_contiguous(memory_format=torch.channels_last) and not batch.is_contiguous()


# --- training: same shuffles as before, same augmentations with persistent workers ------------------


def test_shuffles_and_generator_state_are_those_of_the_loader_it_replaced():
    data = images(23)
    old_generator, new_generator = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    old_ds, new_ds = dataset(data), dataset(data)
    old = DataLoader(
        old_ds,
        batch_size=5,
        sampler=RandomSampler(old_ds, generator=old_generator),
        drop_last=True,
        generator=old_generator,
    )
    new = make_loader(
        new_ds,
        5,
        CPU,
        RandomSampler(new_ds, generator=new_generator),
        drop_last=True,
        num_workers=0,
        shuffle_generator=new_generator,
    )
    for epoch in range(3):
        old_rows = [rows.tolist() for _, _, rows in old]
        assert old_rows == [rows.tolist() for _, _, rows in new], epoch
    assert torch.equal(old_generator.get_state(), new_generator.get_state())  # what last.pt saves and resumes


def test_persistent_worker_processes_see_each_epochs_augmentations():
    data = images(12)

    def epochs(workers: int) -> list[torch.Tensor]:
        ds = dataset(data, TRAIN)
        generator = torch.Generator().manual_seed(1)
        loader = make_loader(
            ds, 4, CPU, RandomSampler(ds, generator=generator), num_workers=workers, shuffle_generator=generator
        )
        out = []
        for epoch in range(2):
            ds.set_epoch(epoch)
            out.append(torch.cat([batch for batch, _, _ in loader]))
        return out

    in_process, with_workers = epochs(0), epochs(2)
    assert not torch.equal(in_process[0], in_process[1])
    assert all(torch.equal(a, b) for a, b in zip(in_process, with_workers))


# --- predictions: the per-image float path's ------------------------------------------------------


def per_image_probs(model, data, rows, stats, batch_size: int, tta: bool) -> dict[str, np.ndarray]:
    """Probabilities the replaced path gave: float CHW images per image, DataLoader's collate, then the model."""
    floats = [(per_image(data[row], *stats), {}, int(row)) for row in rows]
    return predict_probs(model, DataLoader(floats, batch_size=batch_size), HEADS, CPU, tta_flip=tta, quiet=True)[0]


@pytest.mark.parametrize("tta", [False, True])
def test_predictions_equal_the_per_image_float_path(tta):
    torch.manual_seed(0)
    model = build_model("test_resnet", HEADS)
    data, rows = images(21), np.array([20, 3, 7, 0, 11, 5, 16, 2, 9, 13, 1])
    probs, _ = predict_probs(
        model, make_eval_loader(dataset(data, stats=ODD, rows=rows), 4, 0, CPU), HEADS, CPU, tta_flip=tta, quiet=True
    )
    reference = per_image_probs(model, data, rows, ODD, 4, tta)
    for head in ("labels", "kind"):
        assert (
            probs[head].shape
            == reference[head].shape
            == (len(rows), len(HEADS[0 if head == "labels" else 1].class_names))
        )
        assert np.abs(probs[head] - reference[head]).max() < PROBS_TOLERANCE, head


def test_predict_rows_normalises_as_the_config_says():
    config = load_config(
        Path(__file__).resolve().parents[1] / "configs" / "demo-imet.yaml",
        [
            f"data.image_size={SIZE}",
            "augment.mean=[0.1,0.7,0.33]",
            "augment.std=[0.9,0.05,0.3]",
            "predict.batch_size=5",
            "predict.tta_flip=true",
        ],
    )
    assert (
        transform_from_config(config, "eval").normalize.mean,
        transform_from_config(config, "eval").normalize.std,
    ) == ODD
    torch.manual_seed(0)
    model = build_model("test_resnet", HEADS)
    data, rows = images(12), np.arange(12)[::-1].copy()
    probs = predict_rows(model, config, HEADS, data, rows, CPU, quiet=True)
    reference = per_image_probs(model, data, rows, ODD, 5, True)
    assert all(np.abs(probs[head] - reference[head]).max() < PROBS_TOLERANCE for head in probs)


# --- augmentation randomness: the numpy generator is built only when a transform draws from it -----------------

NUMPY_DRAWING = [
    {"name": "GaussNoise", "std_range": (0.1, 0.3), "p": 0.8},
    {
        "name": "CoarseDropout",
        "num_holes_range": (1, 3),
        "hole_height_range": (2, 5),
        "hole_width_range": (2, 5),
        "p": 0.8,
    },
    *TRAIN,
]


@pytest.mark.parametrize("steps", [TRAIN, NUMPY_DRAWING], ids=["python-random only", "numpy-drawing"])
def test_augmentations_are_those_of_an_eagerly_built_generator_pair(steps):
    import random

    data, seed = images(8), 5
    ds = dataset(data, steps, seed=seed)
    augment = ds.pipeline.augment
    for epoch in (0, 3):
        for row in range(len(data)):
            image_seed = augmentation_seed(seed, epoch, row)
            augment.set_random_state(np.random.default_rng(image_seed), random.Random(image_seed))
            expected = augment(image=data[row])["image"]
            assert np.array_equal(ds._augmented(row, epoch), expected), (epoch, row)


def test_transforms_drawing_only_from_python_random_build_no_numpy_generator(monkeypatch):
    python_only, numpy_drawing = dataset(images(), TRAIN), dataset(images(), NUMPY_DRAWING)
    built = []
    real = np.random.default_rng
    monkeypatch.setattr(np.random, "default_rng", lambda seed=None: built.append(seed) or real(seed))
    python_only[(0, list(range(len(python_only))))]
    assert built == []
    numpy_drawing[(0, list(range(len(numpy_drawing))))]
    image_seeds = [augmentation_seed(5, 0, row) for row in range(len(numpy_drawing))]
    drawn = [seed for seed in built if seed in image_seeds]
    assert drawn and len(drawn) == len(set(drawn))  # at most once per image (its first draw), not for every image
