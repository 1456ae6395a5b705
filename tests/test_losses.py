"""Losses: BCE / focal / asymmetric on multilabel heads, cross-entropy on softmax heads, weighted sum."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from torchvision.ops import sigmoid_focal_loss

from src.config import LossConfig
from src.formats.base import HeadSpec
from src.losses import MultiHeadLoss

HEADS = [
    HeadSpec("attributes", "multilabel", tuple("abcd"), loss_weight=2.0),
    HeadSpec("category", "softmax", tuple("xyz")),
]


def batch():
    torch.manual_seed(0)
    outputs = {"attributes": torch.randn(6, 4), "category": torch.randn(6, 3)}
    targets = {"attributes": (torch.rand(6, 4) > 0.5).to(torch.uint8), "category": torch.randint(0, 3, (6,))}
    return outputs, targets


def test_bce_and_cross_entropy_weighted_sum():
    outputs, targets = batch()
    total, parts = MultiHeadLoss(HEADS, LossConfig(name="bce"))(outputs, targets)
    bce = F.binary_cross_entropy_with_logits(outputs["attributes"], targets["attributes"].float())
    ce = F.cross_entropy(outputs["category"], targets["category"])
    assert torch.allclose(parts["attributes"], bce) and torch.allclose(parts["category"], ce)
    assert torch.allclose(total, 2.0 * bce + ce)


def test_focal_matches_torchvision_and_down_weights_easy_examples():
    outputs, targets = batch()
    _, parts = MultiHeadLoss(HEADS, LossConfig(name="focal", focal_gamma=2.0))(outputs, targets)
    expected = sigmoid_focal_loss(
        outputs["attributes"], targets["attributes"].float(), alpha=-1, gamma=2.0, reduction="mean"
    )
    assert torch.allclose(parts["attributes"], expected)
    bce = F.binary_cross_entropy_with_logits(outputs["attributes"], targets["attributes"].float())
    assert parts["attributes"] < bce


@pytest.mark.parametrize("name", ["bce", "focal", "asl", "soft_fbeta"])
def test_each_loss_is_finite_and_decreases_under_gradient_descent(name):
    torch.manual_seed(1)
    logits = torch.zeros(8, 4, requires_grad=True)
    targets = {"attributes": (torch.rand(8, 4) > 0.7).to(torch.uint8), "category": torch.zeros(8, dtype=torch.long)}
    loss_fn = MultiHeadLoss(HEADS[:1], LossConfig(name=name))
    first = None
    optimizer = torch.optim.SGD([logits], lr=1.0)
    for _ in range(20):
        loss, _ = loss_fn({"attributes": logits}, targets)
        first = float(loss) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss) and float(loss) < first


def test_softmax_heads_take_class_probabilities_as_they_are_and_match_indices_when_one_hot():
    outputs, targets = batch()
    loss_fn = MultiHeadLoss(HEADS, LossConfig(name="bce", label_smoothing=0.1))
    _, hard = loss_fn(outputs, targets)
    one_hot = {**targets, "category": F.one_hot(targets["category"], 3).float()}
    _, soft = loss_fn(outputs, one_hot)
    assert torch.allclose(hard["category"], soft["category"])  # a one-hot row is the index, label smoothing included
    mixed = 0.3 * one_hot["category"] + 0.7 * one_hot["category"].flip(0)
    _, parts = loss_fn(outputs, {**targets, "category": mixed})
    expected = F.cross_entropy(outputs["category"], mixed, label_smoothing=0.1)
    assert torch.allclose(parts["category"], expected)  # soft targets are not cast to class indices


def test_soft_fbeta_is_one_minus_the_metric_on_hard_predictions_and_falls_as_predictions_improve():
    from src.losses import SoftFbetaLoss
    from src.metrics import fbeta_samples

    targets = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.float32)
    predicted = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 1]], dtype=torch.float32)
    hard_logits = (predicted * 2 - 1) * 40  # sigmoid = 0 or 1 to float precision
    loss = SoftFbetaLoss(2.0)(hard_logits, targets)
    assert float(loss) == pytest.approx(1 - fbeta_samples(targets.numpy(), predicted.numpy(), beta=2.0), abs=1e-5)
    closer = SoftFbetaLoss(2.0)((targets * 2 - 1) * 3.0, targets)
    unsure = SoftFbetaLoss(2.0)(torch.zeros_like(targets), targets)
    assert 0 <= float(closer) < float(unsure)
