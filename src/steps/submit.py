"""Stage `submit`: ONE model predicts the test images; thresholds applied; file written, validated, moved into place."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from src.artifacts import Experiment, LeaderboardRecord, write_test_probs, write_test_scores
from src.errors import PipelineError
from src.inference import make_submission
from src.runtime import runtime_from_config
from src.steps.common import table_text


def run(
    exp: Experiment, to_kaggle: bool = False, quiet: bool = False, log: Callable[[str], None] = print
) -> list[Path]:
    config, fmt = exp.config, exp.fmt
    checkpoint = exp.submission_checkpoint()
    rules = exp.decision_rules()
    if rules is None and any(head.thresholded for head in fmt.heads()):
        exp.require(exp.thresholds_path, "thresholds")
    log(
        f"submit {exp.name}: one model {checkpoint}{' + flip TTA' if config.predict.tta_flip else ''}, "
        f"'{config.thresholds.method}' thresholds -> {exp.submission_dir}"
    )
    runtime = runtime_from_config(config.train, inference=True)
    files, ids, probs = make_submission(exp, checkpoint, rules, exp.submission_dir, runtime, quiet, log)
    write_test_probs(exp.test_probs_path, ids, probs)
    log("wrote (validated against the competition's format): " + ", ".join(str(f) for f in files))
    score_against_answers(exp, files, log)
    if to_kaggle:
        upload(exp, files, log)
    return files


def score_against_answers(exp: Experiment, files: list[Path], log: Callable[[str], None] = print) -> None:
    """Score the submission against `data.solution` (held-apart answers, the demo's) when they are there -> test_scores.json.

    Answers to another test set (a shared config's demo answers with `data.root` pointed at a real competition)
    leave the submission as it is: one line says why there is no test score, and an older score is removed.
    """
    solution_files = [Path(f) for f in exp.config.data.solution]
    if not solution_files or not all(f.exists() for f in solution_files):
        return
    try:
        scores = exp.fmt.score_submission(files, solution_files)
    except PipelineError as error:
        exp.test_scores_path.unlink(missing_ok=True)
        log(f"no test score: data.solution does not answer this test set ({error})")
        return
    write_test_scores(exp.test_scores_path, scores)
    log("test score against the held-apart answers:\n" + table_text([scores]))


def upload(exp: Experiment, files: list[Path], log: Callable[[str], None] = print) -> LeaderboardRecord:
    """Validate every file, upload each to its competition, wait (bounded) for the scores -> kaggle.json."""
    from src.kaggle.local import leaderboard

    config, fmt = exp.config, exp.fmt
    # A format writing one file per head lists its files in head order (DeepFashion: category, attributes).
    head_files = dict(zip((head.name for head in fmt.heads()), files)) if len(files) > 1 else {}
    uploads = leaderboard.uploads_for(
        config.competition, config.submit.kaggle_competitions, head_files, files, str(exp.config_path)
    )
    fmt.read_submission(files)  # all files valid before any leaves: a half-uploaded pair is hard to undo
    entries, before = leaderboard.submit_files(uploads, config.submit.message, log)
    record = LeaderboardRecord(submissions=entries)
    record.write(exp.kaggle_scores_path)  # the uploads happened, whatever the wait brings
    record = LeaderboardRecord(
        submissions=leaderboard.wait_for_scores(
            entries, before, config.submit.score_wait_s, config.submit.score_poll_s, log
        )
    )
    record.write(exp.kaggle_scores_path)
    log(f"leaderboard: {exp.kaggle_scores_path}")
    return record
