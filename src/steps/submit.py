"""Stage `submit`: ONE model predicts the test images; thresholds applied; file written, validated, moved into place."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Callable

import numpy as np

from src.atomic import atomic_path, write_text
from src.data.dataset import CachedImageDataset
from src.data.transforms import build_transform
from src.errors import PipelineError
from src.experiment import Experiment
from src.predict import make_eval_loader, predict_probs
from src.runtime import runtime_from_config
from src.steps.common import decoded_images, table_text
from src.steps.thresholds import load_rules
from src.inference import load_inference_model


def checkpoint_path(exp: Experiment) -> Path:
    """The one checkpoint `submit.checkpoint` names ('full' or 'fold-K')."""
    choice = exp.config.submit.checkpoint
    if choice == "full":
        return exp.require(exp.run_dir(None) / "best.pt", "train", "--full")
    fold = int(choice.split("-")[1])
    return exp.require(exp.run_dir(fold) / "best.pt", "train", f"--fold {fold}")


def predict_test(exp: Experiment, checkpoint: Path, quiet: bool, log: Callable[[str], None]):
    """(test ids, probabilities per head) from the one model at `checkpoint`."""
    config, fmt = exp.config, exp.fmt
    table = fmt.read_test()
    images, _ = decoded_images(exp, table, quiet, log, "test images", skip_unreadable=False)
    runtime = runtime_from_config(config.train, inference=True)
    model, _ = load_inference_model(checkpoint, fmt)
    model.to(runtime.device)
    aug = config.augment
    transform = build_transform(aug.eval, config.data.image_size, aug.mean, aug.std, "augment.eval")
    loader = make_eval_loader(CachedImageDataset(images, np.arange(len(table)), None, transform),
                              config.predict.batch_size, config.train.num_workers, runtime)
    probs, _ = predict_probs(model, loader, fmt.heads(), runtime, tta_flip=config.predict.tta_flip, quiet=quiet, desc="test")
    return table.ids, probs


def run(exp: Experiment, to_kaggle: bool = False, quiet: bool = False, log: Callable[[str], None] = print) -> list[Path]:
    config, fmt = exp.config, exp.fmt
    checkpoint = checkpoint_path(exp)
    rules = load_rules(exp)
    if rules is None and any(head.thresholded for head in fmt.heads()):
        exp.require(exp.thresholds_path, "thresholds")
    log(f"submit {exp.name}: one model {checkpoint}{' + flip TTA' if config.predict.tta_flip else ''}, "
        f"'{config.thresholds.method}' thresholds -> {exp.submission_dir}")
    ids, probs = predict_test(exp, checkpoint, quiet, log)
    labels = fmt.decide(probs, rules)
    files = fmt.write_submission(exp.submission_dir, ids, labels, probs)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, ids=np.asarray(ids, dtype=str), **{f"probs__{k}": v.astype(np.float16) for k, v in probs.items()})
    with atomic_path(exp.submission_dir / "test_probs.npz") as tmp:
        tmp.write_bytes(buffer.getvalue())
    log("wrote (validated against the competition's format): " + ", ".join(str(f) for f in files))
    solution_files = config.data.solution
    if solution_files and all(Path(f).exists() for f in solution_files):
        scores = fmt.score_submission(files, [Path(f) for f in solution_files])
        write_text(exp.submission_dir / "test_scores.json", json.dumps(scores, indent=2))
        log("test score against the held-apart answers:\n" + table_text([scores]))
    if to_kaggle:
        from src.kaggle import cli as kaggle_cli

        if len(files) != 1:
            raise PipelineError(f"{exp.submission_dir}: this format writes {len(files)} files; upload them as the course asks")
        kaggle_cli.submit_file(config.competition, files[0], config.submit.message)
        log(f"submitted {files[0]} to {config.competition}")
    return files
