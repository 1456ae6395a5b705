"""Config: YAML -> typed objects; unknown keys and wrong types named by file, line and key."""

from __future__ import annotations

import pytest
from helpers import alias_bomb_yaml

from src.config import load_config
from src.errors import PipelineError

BASE = """competition: imet-2019
format: imet
data:
  root: input/x
train:
  epochs: 3
  lr: 0.001
"""


def write(tmp_path, text, name="exp"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_loads_typed_values_and_names_experiment_after_file(tmp_path):
    config = load_config(write(tmp_path, BASE, "my-exp"))
    assert config.experiment == "my-exp"
    assert config.train.epochs == 3 and isinstance(config.train.lr, float)
    assert config.thresholds.method == "exact"


def test_overrides_set_nested_values_with_yaml_types(tmp_path):
    config = load_config(write(tmp_path, BASE), ["train.epochs=7", "data.root=/other/copy", "predict.tta_flip=false"])
    assert config.train.epochs == 7
    assert str(config.data.root) == "/other/copy"
    assert config.predict.tta_flip is False


def test_misspelled_key_names_file_line_and_suggestion(tmp_path):
    path = write(tmp_path, BASE.replace("  lr: 0.001", "  lrr: 0.001"))
    with pytest.raises(PipelineError) as error:
        load_config(path)
    message = str(error.value)
    assert f"{path} line 7: train.lrr" in message and "did you mean 'lr'" in message


def test_wrong_type_names_key_and_value(tmp_path):
    path = write(tmp_path, BASE.replace("epochs: 3", "epochs: three"))
    with pytest.raises(PipelineError, match=r"line 6: train.epochs: .*'three'"):
        load_config(path)


def test_bad_override_is_named_as_override(tmp_path):
    with pytest.raises(PipelineError, match="command-line override train.epochs"):
        load_config(write(tmp_path, BASE), ["train.epochs=abc"])
    with pytest.raises(PipelineError, match="expected key.path=value"):
        load_config(write(tmp_path, BASE), ["train.epochs"])


def test_missing_required_key_and_bad_yaml(tmp_path):
    with pytest.raises(PipelineError, match="data: required key is missing"):
        load_config(write(tmp_path, "competition: x\nformat: imet\n"))
    with pytest.raises(PipelineError, match="line 2: not valid YAML"):
        load_config(write(tmp_path, "competition: x\n  bad: [\n"))
    with pytest.raises(PipelineError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_checkpoint_list_is_refused_as_ensemble(tmp_path):
    with pytest.raises(PipelineError, match="ensemble"):
        load_config(write(tmp_path, BASE + "submit:\n  checkpoint: [fold-0, fold-1]\n"))
    with pytest.raises(PipelineError, match="'best' is not 'full' or 'fold-K'"):
        load_config(write(tmp_path, BASE + "submit:\n  checkpoint: best\n"))


def test_every_shipped_config_is_valid():
    from pathlib import Path

    configs = sorted(Path(__file__).resolve().parents[1].glob("configs/*.yaml"))
    assert configs
    for path in configs:
        load_config(path)


def test_kaggle_accelerator_is_checked_before_anything_is_uploaded(tmp_path):
    """Kaggle's machine shapes: T4 x2 is the default; the P100 (no kernels in the image's torch) and TPUs are refused
    in one line saying why, an unknown name listing the known ones."""
    path = write(tmp_path, BASE)
    assert load_config(path).kaggle.accelerator == "NvidiaTeslaT4"
    for value, reason in [
        ("NvidiaTeslaP100", "the P100 (sm_60) has no kernels"),
        ("TpuV5E8", "a TPU v5e-8"),
        ("NvidiaA100", "is not a Kaggle machine this pipeline runs on; one of NvidiaTeslaT4"),
    ]:
        with pytest.raises(PipelineError) as error:
            load_config(path, [f"kaggle.accelerator={value}"])
        assert str(error.value).startswith(f"command-line override kaggle.accelerator: {reason}")
        assert "\n" not in str(error.value)


def test_a_yaml_alias_bomb_is_refused_in_one_line_without_expanding_it(tmp_path):
    path = write(tmp_path, BASE + alias_bomb_yaml())  # 10^9 values once expanded
    with pytest.raises(PipelineError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: its YAML aliases expand to 1,111,111,1")  # the 10^9 leaves and their lists
    assert message.endswith("values (more than 100,000); write the values out instead of nesting aliases")
    anchors = BASE.replace("competition: imet-2019", "competition: &slug imet-2019\nkaggle: {kernel_slug: *slug}")
    assert load_config(write(tmp_path, anchors)).kaggle.kernel_slug == "imet-2019"  # a plain alias still works


def test_a_storage_password_is_masked_in_every_saved_config(tmp_path):
    from src.config import config_to_dict

    url = "postgresql://optuna:" + "s3cretpw@db.example.org:5432/studies"
    config = load_config(write(tmp_path, BASE), [f"thresholds.storage={url}"])
    assert config.thresholds.storage == url  # the run itself still reaches its database
    assert config_to_dict(config)["thresholds"]["storage"] == "postgresql://optuna:***@db.example.org:5432/studies"
    plain = load_config(write(tmp_path, BASE), ["thresholds.storage=sqlite:///x/optuna.db"])
    assert config_to_dict(plain)["thresholds"]["storage"] == "sqlite:///x/optuna.db"


def test_training_settings_flatten_nested_sections_and_leave_machine_settings_out():
    from src.config import training_settings

    saved = {
        "data": {"root": "/home/me/data", "image_size": 64, "prebuilt_cache": "/mnt/cache"},
        "train": {"loss": {"name": "bce", "label_smoothing": 0.0}, "threads": 8, "callbacks": [{"name": "freeze"}]},
        "model": {"name": "resnet10t", "weights": "/home/me/w.pt"},
        "output_dir": "/home/me/out",
    }
    assert training_settings(saved) == {
        "data.image_size": 64,
        "train.loss.name": "bce",
        "train.loss.label_smoothing": 0.0,
        "train.callbacks": [{"name": "freeze"}],
        "model.name": "resnet10t",
    }
