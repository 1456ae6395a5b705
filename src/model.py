"""One timm backbone plus the heads a format asks for; weights only from local files."""
from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from src.errors import PipelineError
from src.formats.base import HeadSpec


class MultiHeadModel(nn.Module):
    """`backbone` (a timm model with its classifier removed) feeding one linear layer per head."""

    def __init__(self, backbone: nn.Module, heads: list[HeadSpec], drop_rate: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(drop_rate)
        # Some timm models (e.g. MobileNetV3) put a wider conv head after the features.
        width = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        self.heads = nn.ModuleDict({head.name: nn.Linear(width, head.n_outputs) for head in heads})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.dropout(self.backbone(images))
        return {name: layer(features) for name, layer in self.heads.items()}


def build_model(name: str, heads: list[HeadSpec], weights: Path | None = None, drop_rate: float = 0.0,
                forbid_pretrained: bool = False) -> MultiHeadModel:
    """Create `name` from timm with no classifier; load backbone weights from a LOCAL file if given.

    `weights` may be a timm-compatible file (.pth/.bin/.safetensors, loaded through timm's
    `pretrained_cfg_overlay=dict(file=...)`) or any state dict whose keys match the backbone.
    """
    if name not in timm.list_models() and not timm.is_model(name):
        raise PipelineError(f"config model.name: '{name}' is not a timm model; see timm.list_models() (e.g. resnet18)")
    if weights is not None:
        if forbid_pretrained:
            raise PipelineError(f"config model.weights: {weights} given but model.forbid_pretrained is true "
                                "(this competition forbids pretrained weights); set model.weights=null")
        if not Path(weights).is_file():
            raise PipelineError(f"config model.weights: {weights} not found; point it at a local weight file or null for scratch")
    try:
        backbone = timm.create_model(
            name, pretrained=weights is not None, num_classes=0,
            pretrained_cfg_overlay=dict(file=str(weights)) if weights is not None else None,
        )
    except (RuntimeError, KeyError, ValueError) as exc:
        raise PipelineError(f"config model.weights: {weights} does not fit {name} ({str(exc).splitlines()[0][:160]})") from None
    return MultiHeadModel(backbone, heads, drop_rate)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
