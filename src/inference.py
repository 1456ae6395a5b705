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
    """(files written + validated in `out_dir`, test ids, probabilities): one model, `rules`, the format's writer."""
    ids, probs = predict_test(exp, checkpoint, runtime, quiet, log)
    labels = exp.fmt.decide(probs, rules)
    return exp.fmt.write_submission(Path(out_dir), ids, labels, probs), ids, probs
