"""Stage `weights`: fetch a timm model's pretrained weights once into input/weights/<tag>/ (the only stage that
downloads; run it where there is internet), optionally upload that folder as a private Kaggle dataset (`--push`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from src.artifacts import DATASET_METADATA, WEIGHTS_ROOT
from src.atomic import write_text
from src.errors import PipelineError
from src.weights import WeightsFolder, dataset_metadata, fetch_weights, hub_online, weights_command


def run(
    exp: Any, model: str | None = None, push: bool = False, quiet: bool = False, log: Callable[[str], None] = print
) -> WeightsFolder:
    """Fetch the tag `model` (`--model`), else the config's `model.pretrained`; `exp` is None without --config.

    Prints what it does, huggingface_hub's progress bar unless quiet, and ends with the folder and its
    weight file's SHA-256.
    """
    tag = _requested_tag(exp, model)
    log(f"weights {tag}: timm's pretrained weights -> {WEIGHTS_ROOT / tag}/ (the one stage that downloads)")
    with hub_online():
        folder = fetch_weights(tag, WEIGHTS_ROOT, log, quiet=quiet)
    if push:
        _push(folder, exp, log)
    log(f"{folder.path}/: {folder.file_name} sha256 {folder.sha256}")
    return folder


def _requested_tag(exp: Any, model: str | None) -> str:
    if exp is None:
        if not model:
            raise PipelineError(
                "weights: no model named; pass --model <architecture>.<tag> (e.g. resnet50.a1_in1k) "
                "or --config with model.pretrained set"
            )
        return model
    settings = exp.config.model
    if settings.forbid_pretrained:
        raise PipelineError(
            f"{exp.config_path}: model.forbid_pretrained is true (this competition forbids pretrained "
            "weights); there is nothing to fetch for it"
        )
    if model and settings.pretrained and model != settings.pretrained:
        raise PipelineError(
            f"--model {model}: differs from model.pretrained {settings.pretrained} in {exp.config_path}; "
            "drop --model, or change the config"
        )
    if not (model or settings.pretrained):
        raise PipelineError(
            f"{exp.config_path}: model.pretrained is not set; set it (e.g. model.pretrained=resnet50.a1_in1k) "
            "or pass --model <architecture>.<tag>"
        )
    return model or settings.pretrained


def _push(folder: WeightsFolder, exp: Any, log: Callable[[str], None]) -> None:
    """Write dataset-metadata.json into the (flat) folder, then create the dataset, or a new version of it."""
    from src.kaggle.local import cli
    from src.kaggle.local.names import username_from_credentials

    owner = (exp.config.kaggle.username if exp is not None else None) or username_from_credentials()
    if not owner:
        raise PipelineError(
            "weights --push: no Kaggle username; set kaggle.username in the config, or KAGGLE_USERNAME, "
            "or save kaggle.json in ~/.kaggle"
        )
    metadata = dataset_metadata(folder, owner)
    write_text(folder.path / DATASET_METADATA, json.dumps(metadata, indent=2) + "\n")
    log(
        f"kaggle dataset {metadata['id']} (private, license {metadata['licenses'][0]['name']}): uploading {folder.path}/"
    )
    url = cli.create_or_version_dataset(folder.path, f"{folder.tag}: {folder.file_name} sha256 {folder.sha256}")
    log(
        f"kaggle dataset {metadata['id']}: {url} (attach it and set model.weights=/kaggle/input/"
        f"{metadata['id'].split('/')[1]} to train there; {weights_command(folder.tag)} made it)"
    )
