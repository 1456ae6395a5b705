"""The prediction loop (src/predict_loop.py): probabilities per head in loader order, flip TTA, the mean loss, empty loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.data.dataset import CachedImageDataset
from src.data.transforms import build_transform
from src.formats.base import HeadSpec
from src.predict_loop import logits_to_probs, make_eval_loader, predict_probs
from src.runtime import Runtime, make_runtime

SIZE = 8
HEADS = [HeadSpec("labels", "multilabel", ("a", "b", "c")), HeadSpec("kind", "softmax", ("w", "x", "y", "z"))]
CPU = make_runtime("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # OpenMP spin-waits: 1 thread on a shared box


class TwoHeads(nn.Module):
    """A multilabel and a softmax head over each column's mean colour: the mirror image gives other logits.

    The dropout makes a model left in training mode give other (random) outputs than in eval mode.
    """

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.drop = nn.Dropout(0.5)
        self.labels = nn.Linear(3 * SIZE, 3)
        self.kind = nn.Linear(3 * SIZE, 4)
        with torch.no_grad():
            for layer in (self.labels, self.kind):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        columns = self.drop(images.mean(dim=2).flatten(1))
        return {"labels": self.labels(columns), "kind": self.kind(columns)}


def two_head_loss(outputs, targets):
    """Mean BCE + mean cross-entropy over the batch, as (total, per head), like MultiHeadLoss returns."""
    labels = F.binary_cross_entropy_with_logits(outputs["labels"], targets["labels"].float())
    kind = F.cross_entropy(outputs["kind"], targets["kind"])
    return labels + kind, {"labels": labels, "kind": kind}


def make_data(n: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, SIZE, SIZE, 3), dtype=np.uint8)
    targets = {
        "labels": rng.integers(0, 2, size=(n, 3)).astype(np.uint8),
        "kind": rng.integers(0, 4, size=n).astype(np.int64),
    }
    return images, targets


def eval_dataset(images, rows, targets=None) -> CachedImageDataset:
    transform = build_transform([], SIZE, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "augment.eval")
    return CachedImageDataset(images, np.asarray(rows, dtype=np.int64), targets, transform)


def by_hand(model: nn.Module, dataset: CachedImageDataset, flip: bool = False) -> dict[str, torch.Tensor]:
    """Logits of every item of `dataset`, one image at a time, in eval mode (optionally of the mirrored images)."""
    model.eval()
    with torch.no_grad():
        images = dataset.normalize(torch.stack([dataset[i][0] for i in range(len(dataset))]))
        if flip:
            images = torch.flip(images, dims=[3])
        return model(images)


# --- logits_to_probs ------------------------------------------------------------------------------


def test_multilabel_logits_become_independent_sigmoids():
    logits = torch.tensor([[-2.0, 0.0, 3.0], [50.0, -50.0, 0.5]])
    probs = logits_to_probs(logits, "multilabel")
    np.testing.assert_allclose(probs.numpy(), 1 / (1 + np.exp(-logits.numpy())), rtol=1e-6, atol=1e-7)
    assert probs[0, 1] == 0.5


def test_softmax_logits_become_rows_that_sum_to_one():
    logits = torch.tensor([[-2.0, 0.0, 3.0], [1000.0, -1000.0, 999.0], [0.0, 0.0, 0.0]])
    probs = logits_to_probs(logits, "softmax")
    shifted = np.exp(logits.numpy() - logits.numpy().max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs.numpy(), shifted / shifted.sum(axis=1, keepdims=True), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(probs.sum(dim=1).numpy(), 1.0, rtol=1e-6)
    assert torch.isfinite(probs).all() and probs[2].tolist() == pytest.approx([1 / 3] * 3)


# --- make_eval_loader -----------------------------------------------------------------------------


def test_eval_loader_keeps_the_dataset_order():
    images, _ = make_data(7)
    rows = np.array([5, 2, 6, 0, 3, 1, 4])
    loader = make_eval_loader(eval_dataset(images, rows), batch_size=3, num_workers=0, runtime=CPU)
    batches = list(loader)
    assert [len(batch[2]) for batch in batches] == [3, 3, 1]
    assert torch.cat([batch[2] for batch in batches]).tolist() == rows.tolist()
    assert all(batch[0].dtype == torch.float32 and batch[0].shape[1:] == (3, SIZE, SIZE) for batch in batches)
    assert not loader.loader.pin_memory and len(loader) == 3


def test_eval_loader_follows_a_given_sampler():
    images, _ = make_data(7)
    rows = np.array([5, 2, 6, 0, 3, 1, 4])
    loader = make_eval_loader(eval_dataset(images, rows), batch_size=2, num_workers=0, runtime=CPU, sampler=[4, 0, 2])
    assert torch.cat([batch[2] for batch in loader]).tolist() == [3, 5, 6]


# --- predict_probs --------------------------------------------------------------------------------


def test_probs_per_head_are_float32_in_loader_order():
    images, _ = make_data(7)
    rows = np.array([5, 2, 6, 0, 3, 1, 4])
    dataset = eval_dataset(images, rows)
    model = TwoHeads().train()  # predict_probs must switch dropout off itself
    probs, loss = predict_probs(model, make_eval_loader(dataset, 3, 0, CPU), HEADS, CPU, quiet=True)
    assert loss is None and set(probs) == {"labels", "kind"}
    assert probs["labels"].shape == (7, 3) and probs["kind"].shape == (7, 4)
    assert probs["labels"].dtype == np.float32 and probs["kind"].dtype == np.float32
    logits = by_hand(model, dataset)
    np.testing.assert_allclose(probs["labels"], torch.sigmoid(logits["labels"]).numpy(), atol=1e-6)
    np.testing.assert_allclose(probs["kind"], torch.softmax(logits["kind"], dim=1).numpy(), atol=1e-6)
    # Row i of the output is the image the loader gave i-th (rows[i]), not image i of the cache.
    in_cache_order = by_hand(model, eval_dataset(images, np.arange(7)))
    expected = torch.sigmoid(in_cache_order["labels"]).numpy()[rows]
    np.testing.assert_allclose(probs["labels"], expected, atol=1e-6)
    assert not np.allclose(probs["labels"], torch.sigmoid(in_cache_order["labels"]).numpy(), atol=1e-3)


def test_flip_tta_averages_the_image_and_its_mirror():
    images, _ = make_data(7)
    dataset = eval_dataset(images, np.array([6, 1, 3, 0, 2, 5, 4]))
    model = TwoHeads()
    loader = make_eval_loader(dataset, 4, 0, CPU)
    probs, _ = predict_probs(model, loader, HEADS, CPU, tta_flip=True, quiet=True)
    plain, _ = predict_probs(model, loader, HEADS, CPU, tta_flip=False, quiet=True)
    straight, mirrored = by_hand(model, dataset), by_hand(model, dataset, flip=True)
    expected_labels = (torch.sigmoid(straight["labels"]) + torch.sigmoid(mirrored["labels"])) / 2
    expected_kind = (torch.softmax(straight["kind"], dim=1) + torch.softmax(mirrored["kind"], dim=1)) / 2
    np.testing.assert_allclose(probs["labels"], expected_labels.numpy(), atol=1e-6)
    np.testing.assert_allclose(probs["kind"], expected_kind.numpy(), atol=1e-6)
    np.testing.assert_allclose(probs["kind"].sum(axis=1), 1.0, rtol=1e-6)
    assert np.abs(probs["labels"] - plain["labels"]).max() > 1e-2  # the mirror really changes the answer
    assert probs["labels"].dtype == np.float32


def test_mean_loss_is_over_images_not_over_batches():
    images, targets = make_data(7)
    rows = np.array([5, 2, 6, 0, 3, 1, 4])
    dataset = eval_dataset(images, rows, targets)
    model = TwoHeads()
    loader = make_eval_loader(dataset, 3, 0, CPU)  # batches of 3, 3 and 1: a mean of batch means differs
    _, loss = predict_probs(model, loader, HEADS, CPU, loss_fn=two_head_loss, quiet=True)
    logits = by_hand(model, dataset)
    expected, _ = two_head_loss(logits, {name: torch.as_tensor(values[rows]) for name, values in targets.items()})
    assert isinstance(loss, float) and loss == pytest.approx(float(expected), rel=1e-5)
    with torch.no_grad():
        batch_means = [float(two_head_loss(model(batch[0]), batch[1])[0]) for batch in loader]
    assert loss != pytest.approx(float(np.mean(batch_means)), rel=1e-4)
    # The loss is on the un-flipped logits, so flip TTA does not change it.
    _, tta_loss = predict_probs(model, loader, HEADS, CPU, tta_flip=True, loss_fn=two_head_loss, quiet=True)
    assert tta_loss == pytest.approx(loss, rel=1e-6)


def test_no_loss_without_a_loss_function_or_without_targets():
    images, targets = make_data(5)
    model = TwoHeads()
    with_targets = make_eval_loader(eval_dataset(images, np.arange(5), targets), 2, 0, CPU)
    without_targets = make_eval_loader(eval_dataset(images, np.arange(5)), 2, 0, CPU)
    assert predict_probs(model, with_targets, HEADS, CPU, quiet=True)[1] is None
    assert predict_probs(model, without_targets, HEADS, CPU, loss_fn=two_head_loss, quiet=True)[1] is None


def test_probs_stay_float32_under_autocast():
    images, _ = make_data(6)
    dataset = eval_dataset(images, np.arange(6))
    bf16 = Runtime(torch.device("cpu"), torch.bfloat16, False)
    probs, _ = predict_probs(TwoHeads(), make_eval_loader(dataset, 3, 0, bf16), HEADS, bf16, tta_flip=True, quiet=True)
    reference, _ = predict_probs(
        TwoHeads(), make_eval_loader(dataset, 3, 0, CPU), HEADS, CPU, tta_flip=True, quiet=True
    )
    assert probs["labels"].dtype == np.float32 and probs["kind"].dtype == np.float32
    np.testing.assert_allclose(probs["labels"], reference["labels"], atol=0.05)


def test_empty_loader_gives_no_rows_and_no_loss():
    images, targets = make_data(4)
    loader = make_eval_loader(eval_dataset(images, np.array([], dtype=np.int64), targets), 3, 0, CPU)
    probs, loss = predict_probs(TwoHeads(), loader, HEADS, CPU, tta_flip=True, loss_fn=two_head_loss, quiet=True)
    assert loss is None and set(probs) == {"labels", "kind"}
    assert all(len(values) == 0 and values.dtype == np.float32 for values in probs.values())


def test_empty_loader_keeps_each_heads_class_count():
    images, _ = make_data(4)
    loader = make_eval_loader(eval_dataset(images, np.array([], dtype=np.int64)), 3, 0, CPU)
    probs, _ = predict_probs(TwoHeads(), loader, HEADS, CPU, quiet=True)
    assert probs["labels"].shape == (0, 3) and probs["kind"].shape == (0, 4)
    fold_probs = np.zeros((4, 3), np.float32)
    fold_probs[np.array([], dtype=np.int64)] = probs["labels"]  # what the oof stage does with each fold's output
