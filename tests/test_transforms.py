"""Augmentation pipelines from config (src/data/transforms.py): uint8 in, uint8 out, normalisation left to the
batch; their per-(seed, epoch, row) randomness in CachedImageDataset (src/data/dataset.py)."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch

from src.data.dataset import CachedImageDataset
from src.data.transforms import BatchNormalize, build_transform
from src.errors import PipelineError

SIZE = 16
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TRAIN = [
    {"name": "HorizontalFlip", "p": 0.5},
    {"name": "RandomBrightnessContrast", "p": 0.8},
    {"name": "Affine", "rotate": (-20, 20), "p": 0.7},
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # OpenMP spin-waits: 1 thread on a shared box


def images(n: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, SIZE, SIZE, 3), dtype=np.uint8)


def mirrored(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image[:, ::-1].copy())


def refusal(steps, where: str = "augment.train") -> str:
    with pytest.raises(PipelineError) as error:
        build_transform(steps, SIZE, MEAN, STD, where)
    message = str(error.value)
    assert "\n" not in message
    return message


# --- build_transform ------------------------------------------------------------------------------


def test_no_steps_is_no_per_image_work_and_a_batch_normalisation_with_the_given_statistics():
    pipeline = build_transform([], SIZE, MEAN, STD, "augment.eval")
    assert pipeline.augment.transforms == [] and not pipeline.has_steps
    assert isinstance(pipeline.normalize, BatchNormalize)
    assert (pipeline.normalize.mean, pipeline.normalize.std) == (MEAN, STD)
    batch = torch.from_numpy(images(2))
    out = pipeline.normalize(batch)
    assert out.dtype == torch.float32 and out.shape == (2, 3, SIZE, SIZE)
    by_hand = (batch.permute(0, 3, 1, 2).double() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(
        1, 3, 1, 1
    )
    np.testing.assert_allclose(out.numpy(), by_hand.numpy(), atol=1e-5)
    assert torch.equal(out, pipeline.normalize(batch))  # deterministic


def test_steps_are_albumentations_transforms_by_name_with_their_arguments():
    transform = build_transform(
        [{"name": "HorizontalFlip", "p": 1.0}, {"name": "Rotate", "limit": 15, "p": 0.25}],
        SIZE,
        MEAN,
        STD,
        "augment.train",
    )
    flip, rotate = transform.augment.transforms
    assert isinstance(flip, A.HorizontalFlip) and flip.p == 1.0
    assert isinstance(rotate, A.Rotate) and rotate.p == 0.25 and tuple(rotate.limit) == (-15, 15)
    assert transform.normalize.mean == MEAN and transform.normalize.std == STD
    image = images(1)[0]
    only_flip = build_transform([{"name": "HorizontalFlip", "p": 1.0}], SIZE, MEAN, STD, "augment.train")
    out = only_flip.augment(image=image)["image"]
    assert out.dtype == np.uint8 and np.array_equal(out, image[:, ::-1])  # augmentations stay on uint8


def test_a_crop_gets_the_image_size_unless_the_config_names_one():
    image = images(1)[0]
    default = build_transform([{"name": "RandomResizedCrop", "scale": (0.5, 1.0)}], SIZE, MEAN, STD, "augment.train")
    assert tuple(default.augment.transforms[0].size) == (SIZE, SIZE)
    assert default.augment(image=image)["image"].shape == (SIZE, SIZE, 3)
    named = build_transform([{"name": "RandomResizedCrop", "size": [8, 8]}], SIZE, MEAN, STD, "augment.train")
    assert named.augment(image=image)["image"].shape == (8, 8, 3)


def test_the_config_list_is_not_changed():
    steps = [{"name": "RandomResizedCrop", "scale": (0.5, 1.0)}]
    build_transform(steps, SIZE, MEAN, STD, "augment.train")
    assert steps == [{"name": "RandomResizedCrop", "scale": (0.5, 1.0)}]


@pytest.mark.parametrize("step", [{"name": "HorizontalFlipp"}, {"name": "Compose"}, {"name": "np"}, {"p": 0.5}])
def test_an_unknown_transform_is_refused_naming_the_key(step):
    message = refusal([{"name": "HorizontalFlip"}, step])
    assert message.startswith("config augment.train.1.name: ") and "is not an albumentations transform" in message
    assert f"'{step.get('name')}'" in message


@pytest.mark.parametrize(
    "step, reason",
    [
        ({"name": "HorizontalFlip", "p": 2.0}, "HorizontalFlip"),
        ({"name": "Rotate", "limit": "wide"}, "Rotate"),
        ({"name": "RandomCrop", "height": 0}, "RandomCrop"),
    ],
)  # a crop needs a positive height (left out, height and width are image_size: tests/test_cache_policy.py)
def test_a_bad_argument_is_refused_naming_the_key(step, reason):
    message = refusal([step], "augment.eval")
    assert message.startswith(f"config augment.eval.0: {reason}(") and "rejected" in message


def test_an_unknown_argument_is_refused_naming_the_key():
    message = refusal([{"name": "HorizontalFlip", "probability": 1.0}])
    assert message == "config augment.train.0: HorizontalFlip has no argument 'probability'; its arguments: p"


# --- CachedImageDataset: augmentation as a function of (seed, epoch, row) --------------------------


def dataset(seed: int = 7, steps=TRAIN, rows=None, data=None) -> CachedImageDataset:
    data = images() if data is None else data
    rows = np.arange(len(data)) if rows is None else rows
    return CachedImageDataset(
        data,
        np.asarray(rows),
        {"labels": np.eye(len(data), 3, dtype=np.uint8)},
        build_transform(steps, SIZE, MEAN, STD, "augment.train"),
        seed=seed,
    )


def epoch_items(ds: CachedImageDataset, epoch: int, order=None) -> dict[int, torch.Tensor]:
    ds.set_epoch(epoch)
    order = range(len(ds)) if order is None else order
    return {index: ds[index][0] for index in order}


def test_same_seed_epoch_and_row_give_the_same_tensor_whatever_the_access_order():
    forward = epoch_items(dataset(), 3)
    backward = epoch_items(dataset(), 3, order=[5, 2, 4, 0, 3, 1])  # another instance, another order
    epoch_items(dataset(), 1)  # other epochs in between change nothing
    for index, tensor in forward.items():
        assert torch.equal(tensor, backward[index]), index
    ds = dataset()
    epoch_items(ds, 0)
    again = epoch_items(ds, 3)
    assert all(torch.equal(forward[index], again[index]) for index in forward)


def test_another_epoch_or_seed_gives_other_augmentations():
    epoch_3, epoch_4 = epoch_items(dataset(), 3), epoch_items(dataset(), 4)
    other_seed = epoch_items(dataset(seed=8), 3)
    assert all(not torch.equal(epoch_3[index], epoch_4[index]) for index in epoch_3)
    assert all(not torch.equal(epoch_3[index], other_seed[index]) for index in epoch_3)


def test_each_row_draws_its_own_augmentation():
    same_image = np.repeat(images(1), 6, axis=0)
    items = epoch_items(dataset(data=same_image), 0)
    assert len({tuple(tensor.flatten()[:50].tolist()) for tensor in items.values()}) == 6


def test_the_seed_follows_the_row_not_the_position():
    data = images()
    subset = dataset(rows=[4, 1], data=data)
    full = dataset(data=data)
    subset.set_epoch(2)
    full.set_epoch(2)
    image, targets, row = subset[0]
    assert row == 4 and targets["labels"].tolist() == [0, 0, 0] and subset[1][1]["labels"].tolist() == [0, 1, 0]
    assert torch.equal(image, full[4][0]) and torch.equal(subset[1][0], full[1][0])


def test_two_flips_of_one_half_do_not_always_fire_together():
    """One generator pair for the whole pipeline: two p=0.5 flips cancel on some rows and not on others."""
    data = images(12)
    items = epoch_items(dataset(steps=[{"name": "HorizontalFlip", "p": 0.5}] * 2, data=data), 0)
    flipped = [torch.equal(items[row], mirrored(data[row])) for row in range(12)]
    assert 0 < sum(flipped) < 12


def test_the_eval_pipeline_is_not_reseeded_and_is_the_same_every_epoch():
    data = images()
    ds = dataset(steps=[], data=data)
    assert ds.reseed is False and dataset().reseed is True
    epoch_0, epoch_5 = epoch_items(ds, 0), epoch_items(ds, 5)
    for index in range(len(data)):
        assert torch.equal(epoch_0[index], epoch_5[index])
        assert torch.equal(epoch_0[index], torch.from_numpy(data[index]))


def test_a_loader_with_worker_processes_sees_the_same_augmentations():
    ds = dataset()
    ds.set_epoch(2)
    in_process = torch.stack([ds[index][0] for index in range(len(ds))])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    with_workers = torch.cat([batch[0] for batch in loader])
    assert torch.equal(in_process, with_workers)
