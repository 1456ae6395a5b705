"""Per-head losses: BCE / focal / asymmetric / soft F-beta for multilabel heads, cross-entropy for softmax heads."""

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
        self.inner = AsymmetricLossMultiLabel(
            gamma_neg=config.asl_gamma_neg, gamma_pos=config.asl_gamma_pos, clip=config.asl_clip
        )

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.inner(logits, targets) / logits.numel()


class SoftFbetaLoss(nn.Module):
    """1 - the mean per-image F-beta with sigmoid probabilities in place of 0/1 predictions: differentiable, and the
    metric itself where predictions are 0/1 (iMet's F2 per image). It optimises the metric directly but gives weak
    gradients far from a solution, so it serves as a last stage after BCE or focal (iMet 2019's 10th place: +0.01)."""

    def __init__(self, beta: float):
        super().__init__()
        self.beta_squared = beta * beta

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        probs = torch.sigmoid(logits)
        true_positive = (probs * targets).sum(dim=1)
        weighted = (1 + self.beta_squared) * true_positive
        missed, extra = ((1 - probs) * targets).sum(dim=1), (probs * (1 - targets)).sum(dim=1)
        return 1 - (weighted / (weighted + self.beta_squared * missed + extra + 1e-7)).mean()


class MultiHeadLoss(nn.Module):
    """Weighted sum of each head's loss; returns (total, {head: loss}).

    `config.head_weighting == "uncertainty"`: each head also has a learned log-variance s (Kendall,
    Gal & Cipolla 2018) and the total is sum of loss_weight * (exp(-s) * loss + s), whose optimum
    for fixed losses is s = log(loss), i.e. each head weighted by 1 / its loss. The log-variances are
    this module's parameters: the trainer puts them in its optimizer (`parameter_group`), so they are
    checkpointed, resumed and averaged across DDP ranks like every other trained value.
    """

    def __init__(self, heads: list[HeadSpec], config: LossConfig):
        super().__init__()
        self.weights = {head.name: head.loss_weight for head in heads}
        self.kinds = {head.name: head.kind for head in heads}
        self.per_head = nn.ModuleDict({head.name: self._make(head, config) for head in heads})
        self.log_vars = None
        self.learned_lr = config.uncertainty_lr
        if config.head_weighting == "uncertainty":
            self.log_vars = nn.Parameter(torch.zeros(len(heads)))

    def parameter_group(self) -> list[dict]:
        """The optimizer group for the learned log-variances (none for fixed weighting): no weight decay."""
        if self.log_vars is None:
            return []
        return [{"params": [self.log_vars], "lr": self.learned_lr, "weight_decay": 0.0, "part": "loss"}]

    def head_weights(self) -> dict[str, float]:
        """Each head's current effective weight on its loss (loss_weight, times exp(-s) when learned)."""
        if self.log_vars is None:
            return dict(self.weights)
        factors = torch.exp(-self.log_vars.detach()).cpu().tolist()
        return {name: self.weights[name] * factor for name, factor in zip(self.per_head, factors)}

    @staticmethod
    def _make(head: HeadSpec, config: LossConfig) -> nn.Module:
        if head.kind == "softmax":
            return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        if config.name == "focal":
            return FocalLoss(config.focal_gamma)
        if config.name == "asl":
            return AsymmetricLoss(config)
        if config.name == "soft_fbeta":
            return SoftFbetaLoss(config.fbeta_beta)
        return nn.BCEWithLogitsLoss()

    def _target(self, name: str, target: torch.Tensor) -> torch.Tensor:
        """Softmax heads: class indices, or class probabilities (one row per image, e.g. mixup's mixed one-hots)
        as floats, which cross-entropy takes as they are; multilabel heads: 0/1 or soft targets as floats."""
        if self.kinds[name] == "softmax" and not (target.is_floating_point() and target.ndim == 2):
            return target.long()
        return target.float()

    def forward(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]):
        """(weighted total, {head: loss}) of `outputs` (logits per head) against `targets` (hard or soft, see `_target`)."""
        parts = {}
        for name, loss_fn in self.per_head.items():
            parts[name] = loss_fn(outputs[name].float(), self._target(name, targets[name]))
        if self.log_vars is None:
            total = sum(self.weights[name] * value for name, value in parts.items())
        else:
            total = sum(
                self.weights[name] * (torch.exp(-log_var) * value + log_var)
                for (name, value), log_var in zip(parts.items(), self.log_vars)
            )
        return total, parts
