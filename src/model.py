"""One timm backbone plus the heads a format asks for; weights only from local files."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import timm
import torch
from timm.models import group_parameters, load_state_dict
from torch import nn

from src.errors import PipelineError
from src.formats.base import HeadSpec

if TYPE_CHECKING:
    from src.config import ModelConfig


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

    def group_matcher(self, coarse: bool = False) -> Callable[[str], tuple[float, ...]]:
        """timm's layer grouping of the backbone (`coarse`: its stages, else its blocks) with the heads as one last
        group, as timm groups a whole model with its classifier; `timm.optim.param_groups_layer_decay` reads it."""
        layers = backbone_layers(self.backbone, coarse)

        def layer_of(name: str) -> tuple[float, ...]:
            inner = name[len("backbone.") :] if name.startswith("backbone.") else None
            return (float(layers[inner]),) if inner in layers else (math.inf,)

        return layer_of

    def no_weight_decay(self) -> set[str]:
        """The backbone's own no-weight-decay parameters (e.g. a ViT's pos_embed), named as in this model."""
        names = self.backbone.no_weight_decay() if hasattr(self.backbone, "no_weight_decay") else ()
        return {f"backbone.{name}" for name in names}


def backbone_layers(backbone: nn.Module, coarse: bool) -> dict[str, int]:
    """Parameter name -> timm's layer index (0 = nearest the input), from the model's `group_matcher`; one layer when
    it has none."""
    if not hasattr(backbone, "group_matcher"):
        return {name: 0 for name, _ in backbone.named_parameters()}
    return group_parameters(backbone, backbone.group_matcher(coarse=coarse), reverse=True)


def backbone_stages(backbone: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """The backbone's stages in input-to-output order as (name, parameters): timm's coarse groups (for a ResNet the
    stem, layer1 .. layer4); a stage is named by its parameters' common module path ("stem" when they share none)."""
    layers = backbone_layers(backbone, coarse=True)
    names: dict[int, list[str]] = {}
    for name, layer in layers.items():
        names.setdefault(layer, []).append(name)
    params = dict(backbone.named_parameters())
    stages = []
    for index, layer in enumerate(sorted(names)):
        prefix = os.path.commonprefix([name.split(".")[:-1] for name in names[layer]])
        label = ".".join(prefix) or ("stem" if index == 0 else f"group{index}")
        stages.append((label, [params[name] for name in names[layer]]))
    return stages


def build_model(
    name: str,
    heads: list[HeadSpec],
    weights: Path | None = None,
    drop_rate: float = 0.0,
    forbid_pretrained: bool = False,
    pretrained_tag: str | None = None,
    drop_path_rate: float = 0.0,
) -> MultiHeadModel:
    """Create `name` from timm with no classifier; load backbone weights from a LOCAL file if given.

    `weights` is a local .pth/.bin/.safetensors state dict (timm's own release files, or a
    `{'state_dict': ...}` / `{'model': ...}` checkpoint). The classifier's keys are dropped; every other
    key must match the backbone exactly, so a wrong file fails loudly instead of training from noise.
    `pretrained_tag` (e.g. resnet50.a1_in1k) names the timm weights `weights` holds: the backbone then
    carries that tag's pretrained config (its classifier name), and errors name model.pretrained.
    `drop_path_rate` > 0 is timm's stochastic depth (a model without it is one error naming model.drop_path_rate).
    """
    if name not in timm.list_models() and not timm.is_model(name):
        raise PipelineError(f"config model.name: '{name}' is not a timm model; see timm.list_models() (e.g. resnet18)")
    if weights is not None:
        if forbid_pretrained:
            raise PipelineError(
                f"config model.weights: {weights} given but model.forbid_pretrained is true "
                "(this competition forbids pretrained weights); set model.weights=null"
            )
        if not Path(weights).is_file():
            raise PipelineError(
                f"config model.weights: {weights} not found; point it at a local weight file or null for scratch"
            )
    backbone = _create_backbone(pretrained_tag or name, drop_path_rate)
    if weights is not None:
        key = f"model.pretrained {pretrained_tag}" if pretrained_tag else "model.weights"
        _load_backbone_weights(backbone, Path(weights), name, key)
    return MultiHeadModel(backbone, heads, drop_rate)


def model_from_config(model: ModelConfig, heads: list[HeadSpec], config_path: Path | None = None) -> MultiHeadModel:
    """`build_model` for a config's `model:` section. `model.pretrained` resolves to the folder the `weights`
    stage fetched (never a download: a missing folder is an error naming that command); `model.weights` is a
    local file or such a folder; neither is scratch. `config_path` only goes into that error message."""
    from src.weights import resolve_weights

    weights = resolve_weights(model, config_path)
    return build_model(
        model.name, heads, weights, model.drop_rate, model.forbid_pretrained, model.pretrained, model.drop_path_rate
    )


def _create_backbone(name: str, drop_path_rate: float) -> nn.Module:
    if not drop_path_rate:  # not passed at 0: models without stochastic depth refuse the argument
        return timm.create_model(name, pretrained=False, num_classes=0)
    try:
        return timm.create_model(name, pretrained=False, num_classes=0, drop_path_rate=drop_path_rate)
    except TypeError as exc:
        raise PipelineError(
            f"config model.drop_path_rate: {name} has no stochastic depth ({str(exc).splitlines()[0][:100]}); "
            "set model.drop_path_rate=0"
        ) from None


def _load_backbone_weights(backbone: nn.Module, path: Path, name: str, key: str = "model.weights") -> None:
    try:
        state = load_state_dict(str(path), weights_only=True)
    except Exception as exc:
        raise PipelineError(
            f"config {key}: {path} is not a readable state dict ({str(exc).splitlines()[0][:120]})"
        ) from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    classifier = backbone.pretrained_cfg.get("classifier") or ""
    classifiers = classifier if isinstance(classifier, (list, tuple)) else [classifier]
    state = {k: v for k, v in state.items() if not any(c and (k == c or k.startswith(c + ".")) for c in classifiers)}
    own = backbone.state_dict()
    wrong = next((k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)), None)
    if wrong is not None:
        raise PipelineError(
            f"config {key}: {path} does not fit {name} ({wrong} is {tuple(state[wrong].shape)} there, "
            f"{tuple(own[wrong].shape)} in the model); use weights made for this model"
        )
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise PipelineError(f"config {key}: {path} does not fit {name} ({detail}); use weights made for this model")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
