"""The network the report describes: backbone stages, heads and parameter counts, measured with torchinfo.

The model is built from its config (timm architecture + the format's heads, random weights: only the
shapes and counts matter) and run once on one image of the training size. The backbone's direct
children are grouped into a stem, the stages timm names in `feature_info` (and the blocks between
them), and what follows the last stage (head convolution, pooling).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from src.formats.base import HeadSpec


@dataclass
class NetworkSummary:
    """Parts of the backbone in order, the heads, the totals, and torchinfo's layer table as text."""

    model: str
    image_size: int
    parts: list[dict] = field(default_factory=list)  # {"part", "modules", "output", "params"}
    heads: list[dict] = field(default_factory=list)  # {"head", "layer", "activation", "outputs", "params"}
    feature_width: int = 0
    drop_rate: float = 0.0
    total_params: int = 0
    trainable_params: int = 0
    mult_adds: int = 0
    text: str = ""


def describe_network(model_name: str, heads: list[HeadSpec], image_size: int, drop_rate: float = 0.0) -> NetworkSummary:
    """Build `model_name` with `heads` (no weights loaded) and summarise it at `image_size` x `image_size`."""
    from torchinfo import summary

    from src.model import build_model

    model = build_model(model_name, heads, drop_rate=drop_rate)
    stats = summary(
        model,
        input_size=(1, 3, image_size, image_size),
        depth=3,
        verbose=0,
        device="cpu",
        mode="eval",
        col_names=("output_size", "num_params"),
    )
    outputs = {id(layer.module): layer.output_size for layer in stats.summary_list}
    parts = [_part_row(name, modules, outputs) for name, modules in _backbone_groups(model.backbone)]
    width = model.heads[heads[0].name].in_features if heads else 0
    head_rows = [
        {
            "head": head.name,
            "layer": f"Linear {width}->{head.n_outputs}",
            "activation": "sigmoid, per-class thresholds" if head.thresholded else "softmax, argmax",
            "outputs": head.n_outputs,
            "params": sum(p.numel() for p in model.heads[head.name].parameters()),
        }
        for head in heads
    ]
    return NetworkSummary(
        model_name,
        image_size,
        _merge_repeats(parts),
        head_rows,
        width,
        drop_rate,
        int(stats.total_params),
        int(stats.trainable_params),
        int(stats.total_mult_adds),
        str(stats),
    )


def _backbone_groups(backbone) -> list[tuple[str, list[tuple[str, object]]]]:
    """(part name, [(module name, module)]) for the stem, each stage, and what follows the last stage."""
    info = getattr(backbone, "feature_info", None)
    feature_modules = [item["module"] for item in info] if isinstance(info, list) else []
    children: list[tuple[str, object]] = []
    for name, child in backbone.named_children():
        if any(
            module.startswith(name + ".") for module in feature_modules
        ):  # a container of stages (EfficientNet's blocks)
            children += [(f"{name}.{sub}", grandchild) for sub, grandchild in child.named_children()]
        else:
            children.append((name, child))
    is_container = [_holds_blocks(module) for _, module in children]
    stages = [i for i, (name, _) in enumerate(children) if name in feature_modules and is_container[i]]
    if not stages:  # no feature_info: every container with parameters is a stage
        stages = [i for i, (_, module) in enumerate(children) if is_container[i] and _params(module)]
    if not stages:
        return [("backbone", children)]
    first, last = stages[0], stages[-1]
    groups = [("stem", children[:first])] if first else []
    groups += [(name, [(name, module)]) for name, module in children[first : last + 1] if _params(module)]
    tail = children[last + 1 :]
    if tail:
        groups.append(("neck + pool" if sum(_params(m) for _, m in tail) else "pool", tail))
    return groups


def _part_row(part: str, modules: list[tuple[str, object]], outputs: dict) -> dict:
    shape = next((outputs[id(module)] for _, module in reversed(modules) if outputs.get(id(module))), None)
    names = [name for name, module in modules if _params(module) or len(modules) <= 4]
    return {
        "part": part,
        "modules": ", ".join(names) if part != modules[0][0] else type(modules[0][1]).__name__,
        "output": "x".join(str(v) for v in shape[1:]) if shape else "",
        "params": sum(_params(m) for _, m in modules),
    }


def _merge_repeats(parts: list[dict]) -> list[dict]:
    """Consecutive stages of one block type and output shape (a ViT's 12 blocks) as one row."""
    merged: list[dict] = []
    for row in parts:
        last = merged[-1] if merged else None
        if (
            last
            and last["output"] == row["output"]
            and last["modules"].split(" x ")[-1] == row["modules"]
            and last["part"] not in ("stem", "pool", "neck + pool")
        ):
            count = int(last["modules"].split(" x ")[0]) if " x " in last["modules"] else 1
            first = last["part"].split(" - ")[0]
            last.update(
                part=f"{first} - {row['part']}",
                modules=f"{count + 1} x {row['modules']}",
                params=last["params"] + row["params"],
            )
        else:
            merged.append(dict(row))
    return merged


def _holds_blocks(module) -> bool:
    """A stage holds blocks: a Sequential / ModuleList, or a module with containers inside (not a BatchNorm + act)."""
    from torch import nn

    return isinstance(module, (nn.Sequential, nn.ModuleList)) or any(
        any(True for _ in child.children()) for child in module.children()
    )


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())
