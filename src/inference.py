"""Prediction with a trained model: oof, submit, bench and the offline kernel call these, never the trainer.

`load_inference_model` rebuilds a model from a best.pt; `predict_rows` is THE inference pipeline
(eval transform -> dataset -> loader -> probabilities per head, optional flip TTA; the batch loop itself is
`src.predict_loop`, which validation shares); `make_submission` is what `submit` and the offline kernel both
run: one model, decision rules, the format's writer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from src.checkpoint_files import load_checkpoint
from src.formats.base import CompetitionFormat
from src.model import MultiHeadModel, build_model
from src.predict_loop import predict_config_probs
from src.runtime import Runtime


def load_inference_model(checkpoint_path: Path, fmt: CompetitionFormat) -> tuple[MultiHeadModel, dict]:
    """Rebuild the model from a best.pt (weights only, no hub, no weight file needed)."""
    payload = load_checkpoint(checkpoint_path)
    model = build_model(payload["model_name"], fmt.heads())
    model.load_state_dict(payload["model"])
    return model, payload


def predict_rows(
    model,
    config,
    heads,
    images: np.ndarray,
    rows: np.ndarray,
    runtime: Runtime,
    quiet: bool = False,
    desc: str = "predict",
) -> dict[str, np.ndarray]:
    """Probabilities per head (float32, in `rows` order) of the cached `images[rows]`, as the config predicts."""
    model.to(runtime.device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)  # as the batches are: no layout change per convolution
    return predict_config_probs(model, config, heads, images, rows, runtime, quiet, desc)


def predict_test(exp, checkpoint: Path, runtime: Runtime, quiet: bool, log: Callable[[str], None]):
    """(test ids, probabilities per head) from the one model at `checkpoint`."""
    from src.data.cache import CachePolicy, decode_table

    config, fmt = exp.config, exp.fmt
    table, data = fmt.read_test(), config.data
    policy = CachePolicy.from_data(data)
    images, _ = decode_table(
        table.paths, data.image_size, exp.cache_dir, False, quiet, log, "test images", data.max_pixels, policy
    )
    model, _ = load_inference_model(checkpoint, fmt)
    return table.ids, predict_rows(model, config, fmt.heads(), images, np.arange(len(table)), runtime, quiet, "test")


def make_submission(
    exp, checkpoint: Path, rules, out_dir: Path, runtime: Runtime, quiet: bool, log: Callable[[str], None]
) -> tuple[list[Path], list[str], dict[str, np.ndarray]]:
    """(files written + validated in `out_dir`, test ids, probabilities): one model, `rules`, the format's writer.
    The probabilities a training kernel already predicted for this very checkpoint and predict settings are used
    instead of predicting again."""
    found = predicted_on_kaggle(exp, checkpoint)
    if found is not None:
        log(f"test probabilities: the training kernel's ({exp.kaggle_test_probs_path}: same checkpoint and settings)")
    ids, probs = found if found is not None else predict_test(exp, checkpoint, runtime, quiet, log)
    labels = exp.fmt.decide(probs, rules)
    return exp.fmt.write_submission(Path(out_dir), ids, labels, probs), ids, probs


def prediction_stamp(exp, checkpoint: Path) -> dict:
    """What test probabilities depend on beyond the images: the checkpoint's bytes and the predict settings."""
    from src.weights import file_sha256

    predict = exp.config.predict.model_dump(mode="json")
    return {"checkpoint_sha256": file_sha256(checkpoint), "predict": predict, "image_size": exp.config.data.image_size}


def predicted_on_kaggle(exp, checkpoint: Path) -> tuple[list[str], dict[str, np.ndarray]] | None:
    """(ids, probabilities) a training kernel predicted for `checkpoint` with today's predict settings and test ids;
    None when there are none, or they were made for another model, setting or test set."""
    from src.artifacts import read_predicted_test

    found = read_predicted_test(exp.kaggle_test_probs_path) if exp.kaggle_test_probs_path.is_file() else None
    if found is None:
        return None
    ids, probs, made_with = found
    if made_with != prediction_stamp(exp, checkpoint) or ids != exp.fmt.read_test().ids:
        return None
    return ids, probs
