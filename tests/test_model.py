"""Model factory: timm backbone + heads, weights only from a local file, never the hub."""

from __future__ import annotations

import pytest
import torch

from src.errors import PipelineError
from src.formats.base import HeadSpec
from src.model import build_model

HEADS = [HeadSpec("attributes", "multilabel", tuple("abcde")), HeadSpec("category", "softmax", tuple("xyz"))]


def test_heads_share_one_backbone():
    model = build_model("test_resnet", HEADS)
    outputs = model(torch.randn(2, 3, 32, 32))
    assert outputs["attributes"].shape == (2, 5) and outputs["category"].shape == (2, 3)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weight_file_is_loaded(tmp_path, suffix):
    source = build_model("test_resnet", HEADS).backbone
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    else:
        torch.save(source.state_dict(), path)
    model = build_model("test_resnet", HEADS, weights=path)
    for key, value in source.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key


def test_weight_file_refused_when_rules_forbid_pretrained(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(build_model("test_resnet", HEADS).backbone.state_dict(), path)
    with pytest.raises(PipelineError, match="forbids pretrained"):
        build_model("test_resnet", HEADS, weights=path, forbid_pretrained=True)


def test_bad_names_and_files_are_clear(tmp_path):
    with pytest.raises(PipelineError, match="not a timm model"):
        build_model("resnet_nonexistent", HEADS)
    with pytest.raises(PipelineError, match="not found"):
        build_model("test_resnet", HEADS, weights=tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(PipelineError, match="does not fit"):
        build_model("test_resnet", HEADS, weights=wrong)


def test_a_pretrained_tag_names_itself_in_errors(tmp_path):
    wrong = tmp_path / "pytorch_model.bin"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(PipelineError, match="config model.pretrained test_resnet.r160_in1k: .* does not fit"):
        build_model("test_resnet", HEADS, weights=wrong, pretrained_tag="test_resnet.r160_in1k")
    model = build_model("test_resnet", HEADS, pretrained_tag="test_resnet.r160_in1k")
    assert model.backbone.pretrained_cfg["tag"] == "r160_in1k"


def test_drop_path_rate_reaches_timm_and_keeps_the_weights_inference_loads():
    from timm.layers import DropPath

    from src.config import ModelConfig
    from src.model import model_from_config

    deep = model_from_config(ModelConfig(name="resnet18", drop_path_rate=0.2), HEADS)
    rates = [module.drop_prob for module in deep.modules() if isinstance(module, DropPath)]
    assert rates and max(rates) == pytest.approx(0.2)  # timm spreads it over the blocks, the last one gets all of it
    plain = build_model("resnet18", HEADS)
    assert not any(isinstance(module, DropPath) for module in plain.modules())
    assert deep.state_dict().keys() == plain.state_dict().keys()  # best.pt loads into the model inference builds
