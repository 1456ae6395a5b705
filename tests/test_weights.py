"""src/weights.py and the `weights` stage: fetched once through timm's own hub loading (from the local fake hub in
fake_hub_server.py), then used offline by train; pushed to the fake Kaggle server with the real kaggle CLI."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_hub_server import AGENT_REGISTRY  # noqa: E402
from fake_kaggle_server import FAKE_USER  # noqa: E402

from src.config import ModelConfig, load_config  # noqa: E402
from src.errors import PipelineError  # noqa: E402
from src.formats.base import HeadSpec  # noqa: E402
from src.model import model_from_config  # noqa: E402
from src.steps import weights as weights_step  # noqa: E402
from src.weights import (  # noqa: E402
    MANIFEST,
    PRETRAINED_CFG,
    dataset_metadata,
    fetch_weights,
    hub_online,
    kaggle_license,
    kaggle_slug,
    read_weights_folder,
    resolve_weights,
)

# A real timm tag whose pretrained config (mean/std 0.5, unlike ImageNet's) points at hf_hub_id timm/<tag>.
TAG = "test_resnet.r160_in1k"
REPO = f"timm/{TAG}"
HEADS = [HeadSpec("labels", "multilabel", tuple("abc"))]


@pytest.fixture(scope="module")
def served() -> dict[str, torch.Tensor]:
    """The state dict the fake hub serves: a real test_resnet with timm's 1000-class head, seeded."""
    import timm

    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in timm.create_model("test_resnet", num_classes=1000).state_dict().items()}


@pytest.fixture
def hub(fake_hub, served, tmp_path, monkeypatch):
    """The fake hub serving TAG as timm publishes it (model.safetensors), with the test in a fresh working folder."""
    from safetensors.torch import save

    fake_hub.add_repo(REPO, {"model.safetensors": save(served), "config.json": b"{}"})
    monkeypatch.chdir(tmp_path)
    return fake_hub


def one_line(call, *args, **kwargs) -> str:
    with pytest.raises(PipelineError) as raised:
        call(*args, **kwargs)
    message = str(raised.value)
    assert "\n" not in message and message.strip() == message
    return message


def fetch_step(**options) -> tuple[object, list[str]]:
    lines: list[str] = []
    folder = weights_step.run(None, log=lines.append, **{"model": TAG, "quiet": True, **options})
    return folder, lines


# ---- fetching once -------------------------------------------------------------------------------


def test_step_downloads_timms_file_once_then_verifies_it_offline(hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(
        constants, "HF_HUB_OFFLINE", True
    )  # as src/__init__.py leaves it: the stage lifts it for its call
    folder, lines = fetch_step()

    served_bytes = hub.repos[REPO]["model.safetensors"]
    assert folder.path == Path("input/weights") / TAG
    assert (folder.path / "model.safetensors").read_bytes() == served_bytes
    assert folder.sha256 == hashlib.sha256(served_bytes).hexdigest()
    manifest = json.loads((folder.path / MANIFEST).read_text())
    assert manifest["sha256"] == folder.sha256 and manifest["size"] == len(served_bytes)
    assert manifest["revision"] == hub.commits[REPO] and manifest["hf_hub_id"] == REPO
    cfg = json.loads((folder.path / PRETRAINED_CFG).read_text())
    assert cfg["mean"] == [0.5, 0.5, 0.5] and cfg["hf_hub_id"] == REPO and cfg["license"] == "apache-2.0"
    assert sorted(p.name for p in folder.path.parent.iterdir()) == [TAG]  # no staging left behind
    assert sorted(p.name for p in folder.path.iterdir()) == [MANIFEST, "model.safetensors", PRETRAINED_CFG]  # flat
    assert lines[-1] == f"{folder.path}/: model.safetensors sha256 {folder.sha256}"
    downloads = [r for r in hub.requests if r.path != AGENT_REGISTRY]
    assert [r.method for r in downloads] == ["HEAD", "HEAD", "GET"]  # our probe, hf_hub_download's HEAD, its GET
    assert all(r.path.startswith(f"/{REPO}/resolve/") for r in downloads)
    assert all("timm/" in r.headers.get("user-agent", "") for r in downloads)  # timm's own hf_hub_download
    assert constants.HF_HUB_OFFLINE  # restored

    seen = len(hub.requests)
    again, lines = fetch_step()
    assert len(hub.requests) == seen  # the second call asks the hub nothing
    assert again.sha256 == folder.sha256 and any("matches its SHA-256; nothing downloaded" in line for line in lines)


def test_a_corrupt_local_copy_is_fetched_again(hub):
    folder, _ = fetch_step()
    folder.weight_file.write_bytes(b"flipped bits")
    seen = len(hub.requests)

    again, lines = fetch_step()

    assert len(hub.requests) > seen and any("does not match" in line for line in lines)
    assert again.weight_file.read_bytes() == hub.repos[REPO]["model.safetensors"]
    assert sorted(p.name for p in folder.path.parent.iterdir()) == [TAG]


def test_safetensors_preferred_else_the_pickled_file_as_timm_does(hub, served):
    import io

    buffer = io.BytesIO()
    torch.save(served, buffer)
    hub.add_repo(REPO, {"pytorch_model.bin": buffer.getvalue()})

    folder, _ = fetch_step()

    assert folder.file_name == "pytorch_model.bin"
    assert [(r.method, r.path.rsplit("/", 1)[1]) for r in hub.requests if r.path != AGENT_REGISTRY][:2] == [
        ("HEAD", "model.safetensors"),
        ("HEAD", "pytorch_model.bin"),
    ]


def test_a_file_that_is_not_the_hubs_is_refused_and_kept_for_a_look(hub):
    hub.claimed_sha256["model.safetensors"] = "0" * 64
    message = one_line(fetch_step)
    assert f"SHA-256 {hashlib.sha256(hub.repos[REPO]['model.safetensors']).hexdigest()} is not the hub's" in message
    [kept] = Path("input/weights").iterdir()  # the staging folder only: nothing was moved into place
    assert message.endswith(f"the download stays in {kept} for a look") and (kept / "model.safetensors").is_file()


def test_progress_bar_unless_quiet(hub, capfd, monkeypatch):
    monkeypatch.setenv("TQDM_POSITION", "-1")  # huggingface_hub shows its bar even without a terminal
    with hub_online():
        fetch_weights(TAG, Path("quiet"), log=lambda line: None, quiet=True)
        assert "model.safetensors" not in capfd.readouterr().err
        fetch_weights(TAG, Path("loud"), log=lambda line: None, quiet=False)
    assert "100%" in capfd.readouterr().err


# ---- no network ----------------------------------------------------------------------------------


def test_offline_mode_is_one_line_naming_the_weights_stage(hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    message = one_line(fetch_weights, TAG, Path("input/weights"), log=lambda line: None)

    assert "offline (HF_HUB_OFFLINE is set)" in message and "run the `weights` stage where there is internet" in message
    assert f"python -m src.stage weights --model {TAG}" in message
    assert hub.requests == [] and list(Path("input/weights").iterdir()) == []


def test_unreachable_hub_is_one_line_at_once(hub):
    hub.stop()
    started = time.monotonic()

    message = one_line(fetch_step)

    assert time.monotonic() - started < 10  # no minute of retries before saying so
    assert message.startswith(f"input/weights/{TAG}: downloading {REPO} from http://127.0.0.1:")
    assert "cannot reach the hub" in message and f"weights --model {TAG}" in message
    assert list(Path("input/weights").iterdir()) == []


def test_hub_errors_are_one_line(hub):
    hub.failures["model.safetensors"] = 503
    assert "the hub answered 503" in one_line(fetch_step)
    hub.repos.clear()
    assert "no such hub repository, or it is gated" in one_line(fetch_step)


def test_unknown_names_and_tags_name_close_timm_names(hub):
    assert "'resnt50' is not a timm model; close timm names: resnet50" in one_line(fetch_weights, "resnt50.a1_in1k")
    message = one_line(fetch_weights, "resnet50.a1_in1")
    assert "not a timm tag with pretrained weights; close ones: resnet50.a1_in1k" in message
    assert "timm.list_pretrained('resnet50.*')" in message
    assert "names no pretrained tag; name one, e.g. resnet50.a1_in1k" in one_line(fetch_weights, "resnet50")
    assert hub.requests == []


# ---- train reads the folder and never downloads --------------------------------------------------


def test_train_resolution_of_a_missing_folder_names_the_weights_command(hub):
    model = ModelConfig(pretrained=TAG)

    with_config = one_line(resolve_weights, model, Path("configs/x.yaml"))
    without = one_line(model_from_config, model, HEADS)

    assert with_config.startswith(f"input/weights/{TAG}: the pretrained weights {TAG} are not here")
    assert "`python -m src.stage weights --config configs/x.yaml`" in with_config
    assert f"`python -m src.stage weights --model {TAG}`" in without
    assert hub.requests == []


def test_fetched_weights_load_into_the_model_without_the_classifier(hub, served):
    folder, _ = fetch_step()
    seen = len(hub.requests)

    for model in (ModelConfig(pretrained=TAG), ModelConfig(name="test_resnet", weights=folder.path)):
        backbone = model_from_config(model, HEADS).backbone.state_dict()
        assert set(served) - set(backbone) == {"fc.weight", "fc.bias"}
        assert all(torch.equal(backbone[key], value) for key, value in served.items() if key in backbone)
    assert len(hub.requests) == seen

    (folder.weight_file).write_bytes(b"short")
    assert "not the" in one_line(model_from_config, ModelConfig(pretrained=TAG), HEADS)


def test_weights_are_verified_at_every_load_hashed_once_per_size_and_mtime(hub, monkeypatch):
    import src.weights as weights_module

    folder, _ = fetch_step()
    hashed = []
    real = weights_module.file_sha256
    monkeypatch.setattr(weights_module, "file_sha256", lambda path: hashed.append(path) or real(path))
    monkeypatch.setattr(weights_module, "_verified_here", {})
    for _ in range(3):
        model_from_config(ModelConfig(pretrained=TAG), HEADS)
    assert len(hashed) == 1  # then the record beside the folders answers
    data = bytearray(folder.weight_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte flipped, same size
    folder.weight_file.write_bytes(bytes(data))
    message = one_line(model_from_config, ModelConfig(pretrained=TAG), HEADS)
    assert message.startswith(f"{folder.weight_file}: its SHA-256 is not the {folder.sha256[:12]}")
    assert f"fetch it again: python -m src.stage weights --model {TAG}" in message


def test_weights_of_the_right_names_but_wrong_shapes_are_one_line(tmp_path, served):
    from safetensors.torch import save_file

    key = next(name for name, value in served.items() if value.ndim == 4)  # the first convolution
    shape = tuple(served[key].shape)
    wrong = dict(served, **{key: torch.zeros(shape[0] + 1, *shape[1:])})
    path = tmp_path / "wrong.safetensors"
    save_file({name: value.contiguous() for name, value in wrong.items()}, str(path))
    message = one_line(model_from_config, ModelConfig(name="test_resnet", weights=path), HEADS)
    assert f"does not fit test_resnet ({key} is {(shape[0] + 1, *shape[1:])} there, {shape} in the model)" in message


def test_a_folder_for_another_model_is_refused(hub):
    folder, _ = fetch_step()
    message = one_line(resolve_weights, ModelConfig(name="resnet18", weights=folder.path))
    assert f"holds {TAG} weights but the config asks for resnet18" in message
    (folder.path / MANIFEST).write_text("{")
    assert "not a readable weights manifest" in one_line(read_weights_folder, folder.path)


def test_forbid_pretrained_refuses_a_pretrained_tag(hub, tmp_path):
    # Refused when the config loads, before any stage decodes an image or finds a run there.
    path = write_config(tmp_path, f"  pretrained: {TAG}\n  forbid_pretrained: true\n")
    message = one_line(load_config, path)
    assert "forbid_pretrained is true" in message and "model.pretrained=null" in message
    # The weights code refuses it too, for a config built without validation.
    model = ModelConfig.model_construct(name=TAG.partition(".")[0], pretrained=TAG, forbid_pretrained=True)
    message = one_line(resolve_weights, model)
    assert "forbid_pretrained is true" in message and "model.pretrained=null" in message
    exp = SimpleNamespace(config=SimpleNamespace(model=model), config_path=Path("configs/deepfashion.yaml"))
    assert "forbids pretrained weights" in one_line(weights_step.run, exp, model=None, quiet=True)
    assert hub.requests == []


# ---- config ---------------------------------------------------------------------------------------


def write_config(tmp_path: Path, model_lines: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(f"competition: c\nformat: imet\ndata:\n  root: input/c\nmodel:\n{model_lines}")
    return path


def test_model_name_follows_the_tag_and_must_agree_with_it(tmp_path):
    assert load_config(write_config(tmp_path, f"  pretrained: {TAG}\n")).model.name == "test_resnet"
    cases = {
        "  name: resnet18\n  pretrained: resnet50.a1_in1k\n": "model.pretrained: is a resnet50 tag but model.name is resnet18",
        "  pretrained: resnet50\n": "model.pretrained: is not a timm tag <architecture>.<tag>",
        "  pretrained: ../../etc.x\n": "is not a timm tag",
        f"  pretrained: {TAG}\n  weights: w.pth\n": "model.weights: and model.pretrained are both set",
    }
    for lines, expected in cases.items():
        message = one_line(load_config, write_config(tmp_path, lines))
        assert expected in message, message


def test_step_needs_a_tag_and_one_that_agrees_with_the_config(tmp_path):
    assert "pass --model" in one_line(weights_step.run, None, quiet=True)
    config = load_config(write_config(tmp_path, f"  pretrained: {TAG}\n"))
    exp = SimpleNamespace(config=config, config_path=tmp_path / "exp.yaml")
    assert "differs from model.pretrained" in one_line(weights_step.run, exp, model="resnet50.a1_in1k", quiet=True)
    exp.config = load_config(write_config(tmp_path, "  name: resnet18\n"))
    assert "model.pretrained is not set" in one_line(weights_step.run, exp, quiet=True)


# ---- Kaggle ---------------------------------------------------------------------------------------


def test_kaggle_names_and_licenses():
    assert kaggle_slug("resnet50.a1_in1k") == "timm-resnet50-a1-in1k"
    long = kaggle_slug("vit_base_patch16_clip_224.laion2b_ft_in12k_in1k")
    assert len(long) <= 50 and long.startswith("timm-vit-base") and long != kaggle_slug("vit_base_patch16_clip_224.x")
    assert [kaggle_license(name) for name in ("apache-2.0", "cc-by-nc-4.0", "mit", None, "unknown")] == [
        "apache-2.0",
        "CC-BY-NC-4.0",
        "other",
        "unknown",
        "unknown",
    ]


def test_push_creates_then_versions_the_dataset(fake_kaggle, hub):
    dataset = f"{FAKE_USER}/timm-test-resnet-r160-in1k"

    folder, lines = fetch_step(push=True)

    uploaded = fake_kaggle.datasets[dataset].files
    assert uploaded == {
        name: (folder.path / name).read_bytes() for name in (MANIFEST, "model.safetensors", PRETRAINED_CFG)
    }
    [created] = fake_kaggle.rpc_bodies("CreateDataset")
    assert created["licenseName"] == "apache-2.0" and created["isPrivate"] is True
    assert created["title"] == f"timm {TAG}" and folder.sha256 in created["description"]
    assert json.loads((folder.path / "dataset-metadata.json").read_text()) == dataset_metadata(folder, FAKE_USER)
    assert any(f"http://localhost/datasets/{dataset}" in line for line in lines)
    assert lines[-1].endswith(folder.sha256)

    fetch_step(push=True)

    assert fake_kaggle.datasets[dataset].versions == [f"{TAG}: model.safetensors sha256 {folder.sha256}"]
    assert len(fake_kaggle.rpc_bodies("CreateDataset")) == 1


def test_competition_configs_name_a_pretrained_tag_and_deepfashion_forbids_one():
    from src.weights import timm_pretrained_cfg

    configs = Path(__file__).resolve().parents[1] / "configs"
    for name in ("imet-2019", "celeba", "folder"):
        model = load_config(configs / f"{name}.yaml").model
        assert (model.name, model.pretrained, model.weights) == ("resnet50", "resnet50.a1_in1k", None), name
    assert timm_pretrained_cfg("resnet50.a1_in1k")["hf_hub_id"] == "timm/resnet50.a1_in1k"  # timm knows it offline
    for name in ("deepfashion", "demo-deepfashion"):
        model = load_config(configs / f"{name}.yaml").model
        assert model.forbid_pretrained and model.pretrained is None and model.weights is None


# ---- normalisation --------------------------------------------------------------------------------


def with_model(model: ModelConfig, mean=None, std=None):
    from src.config import AugmentConfig

    return SimpleNamespace(model=model, augment=AugmentConfig(mean=mean, std=std))


def test_mean_and_std_follow_the_pretrained_config_unless_the_config_sets_them(hub):
    from src.weights import IMAGENET_MEAN, IMAGENET_STD, normalisation

    half = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert normalisation(with_model(ModelConfig(name="test_resnet"))) == (IMAGENET_MEAN, IMAGENET_STD)  # scratch
    # No local folder (e.g. predicting in a kernel from best.pt): timm's registry, offline.
    assert normalisation(with_model(ModelConfig(pretrained=TAG))) == half
    folder, _ = fetch_step()
    cfg = json.loads((folder.path / PRETRAINED_CFG).read_text())
    (folder.path / PRETRAINED_CFG).write_text(json.dumps({**cfg, "mean": [0.1, 0.2, 0.3]}))
    assert normalisation(with_model(ModelConfig(pretrained=TAG))) == ((0.1, 0.2, 0.3), (0.5, 0.5, 0.5))  # the folder's
    assert normalisation(with_model(ModelConfig(name="test_resnet", weights=folder.path)))[0] == (0.1, 0.2, 0.3)
    assert normalisation(with_model(ModelConfig(pretrained=TAG), mean=(0.4, 0.4, 0.4))) == (
        (0.4, 0.4, 0.4),
        (0.5, 0.5, 0.5),
    )
    assert normalisation(with_model(ModelConfig(pretrained=TAG), (0.4,) * 3, (0.2,) * 3)) == ((0.4,) * 3, (0.2,) * 3)
    forbidden = ModelConfig(name="test_resnet", forbid_pretrained=True)
    assert normalisation(with_model(forbidden)) == (IMAGENET_MEAN, IMAGENET_STD)


def test_augment_mean_and_std_may_be_null_in_a_config(tmp_path):
    path = write_config(tmp_path, f"  pretrained: {TAG}\naugment:\n  mean: null\n  std: null\n")
    from src.weights import normalisation

    assert normalisation(load_config(path)) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
