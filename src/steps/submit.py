"""Stage `submit`: ONE model predicts the test images; thresholds applied; file written, validated, moved into place."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from src.artifacts import Experiment, write_test_probs, write_test_scores
from src.errors import PipelineError
from src.inference import make_submission
from src.runtime import runtime_from_config
from src.steps.common import table_text


def run(exp: Experiment, to_kaggle: bool = False, quiet: bool = False, log: Callable[[str], None] = print) -> list[Path]:
    config, fmt = exp.config, exp.fmt
    checkpoint = exp.submission_checkpoint()
    rules = exp.decision_rules()
    if rules is None and any(head.thresholded for head in fmt.heads()):
        exp.require(exp.thresholds_path, "thresholds")
    log(f"submit {exp.name}: one model {checkpoint}{' + flip TTA' if config.predict.tta_flip else ''}, "
        f"'{config.thresholds.method}' thresholds -> {exp.submission_dir}")
    runtime = runtime_from_config(config.train, inference=True)
    files, ids, probs = make_submission(exp, checkpoint, rules, exp.submission_dir, runtime, quiet, log)
    write_test_probs(exp.test_probs_path, ids, probs)
    log("wrote (validated against the competition's format): " + ", ".join(str(f) for f in files))
    solution_files = config.data.solution
    if solution_files and all(Path(f).exists() for f in solution_files):
        scores = fmt.score_submission(files, [Path(f) for f in solution_files])
        write_test_scores(exp.test_scores_path, scores)
        log("test score against the held-apart answers:\n" + table_text([scores]))
    if to_kaggle:
        from src.kaggle import cli as kaggle_cli

        if len(files) != 1:
            raise PipelineError(f"{exp.submission_dir}: this format writes {len(files)} files; upload them as the course asks")
        kaggle_cli.submit_file(config.competition, files[0], config.submit.message)
        log(f"submitted {files[0]} to {config.competition}")
    return files
