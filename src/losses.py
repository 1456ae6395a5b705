"""Per-head losses: BCE / focal / asymmetric for multilabel heads, cross-entropy for softmax heads."""
from __future__ import annotations

import torch
from timm.loss import AsymmetricLossMultiLabel
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from src.config import LossConfig
from src.formats.base import HeadSpec


class FocalLoss(nn.Module):
    def __init__(self, gamma: float):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(logits, targets, alpha=-1, gamma=self.gamma, reduction="mean")


class AsymmetricLoss(nn.Module):
    """timm's ASL sums over the batch; divide by the element count so its scale matches BCE."""

    def __init__(self, config: LossConfig):
        super().__init__()
        self.inner = AsymmetricLossMultiLabel(gamma_neg=config.asl_gamma_neg, gamma_pos=config.asl_gamma_pos, clip=config.asl_clip)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.inner(logits, targets) / logits.numel()


class MultiHeadLoss(nn.Module):
    """Weighted sum of each head's loss; returns (total, {head: loss})."""

    def __init__(self, heads: list[HeadSpec], config: LossConfig):
        super().__init__()
        self.weights = {head.name: head.loss_weight for head in heads}
        self.kinds = {head.name: head.kind for head in heads}
        self.per_head = nn.ModuleDict({head.name: self._make(head, config) for head in heads})

    @staticmethod
    def _make(head: HeadSpec, config: LossConfig) -> nn.Module:
        if head.kind == "softmax":
            return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        if config.name == "focal":
            return FocalLoss(config.focal_gamma)
        if config.name == "asl":
            return AsymmetricLoss(config)
        return nn.BCEWithLogitsLoss()

    def forward(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]):
        parts = {}
        for name, loss_fn in self.per_head.items():
            target = targets[name]
            target = target.long() if self.kinds[name] == "softmax" else target.float()
            parts[name] = loss_fn(outputs[name].float(), target)
        total = sum(self.weights[name] * value for name, value in parts.items())
        return total, parts
