"""Staged training: start each run from another experiment's best weights of the SAME run, `{name: init_from,
experiment: imet-stage1}` or the shorthand `train.init_from: imet-stage1` (e.g. stage 2 at 384 px, or with the soft
F-beta loss, after stage 1 at 288 px with BCE).

fold-K starts from the other experiment's fold-K and the full fit from its full fit, so no fold's weights have seen
its own validation rows and the OOF stays honest; the two experiments must split the same way (data.n_folds and
data.fold_seed, read from the other run's config.json) and have the same heads. The weights are loaded when the
run is set up, before an EMA or SWA copy is made and before a resume point (which wins) is loaded.
"""

from __future__ import annotations

import json

from pydantic import Field

from src.artifacts import BEST_CHECKPOINT, RUN_CONFIG, Layout
from src.checkpoint_files import load_checkpoint
from src.engine.callbacks import Callback, CallbackOptions, register_callback
from src.errors import PipelineError


@register_callback
class InitFrom(Callback):
    """Loads the same run's best.pt of another experiment into the model before training starts."""

    name = "init_from"
    runs_first = True  # an EMA or SWA copy must start from these weights

    class Options(CallbackOptions):
        experiment: str = Field(min_length=1, description="the experiment (its config's file name) to start from")

    def setup(self, run) -> None:
        source = Layout(run.config.output_dir, self.options.experiment).oof_dir / run.run_dir.name
        command = f"python -m src.stage train --config configs/{self.options.experiment}.yaml"
        if not (source / BEST_CHECKPOINT).is_file():
            raise PipelineError(
                f"{source / BEST_CHECKPOINT}: train.init_from needs this run first; make it with: {command}"
            )
        _refuse_other_folds(run.config.data, source / RUN_CONFIG)
        weights = load_checkpoint(source / BEST_CHECKPOINT, log=run.log)["model"]
        try:
            run.model.load_state_dict(weights)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[-1].strip()[:200]
            raise PipelineError(
                f"{source / BEST_CHECKPOINT}: its weights do not fit this model ({first}); train.init_from needs the "
                "same model.name and heads"
            ) from None
        run.log(f"init_from: {run.run_dir.name} starts from {source / BEST_CHECKPOINT}")


def _refuse_other_folds(data, source_config) -> None:
    """A run of another split would have seen this fold's validation rows: refuse it in one line."""
    if not source_config.is_file():
        return
    saved = json.loads(source_config.read_text(encoding="utf-8")).get("data", {})
    ours = {"n_folds": data.n_folds, "fold_seed": data.fold_seed}
    theirs = {key: saved.get(key) for key in ours}
    if theirs != ours:
        raise PipelineError(
            f"{source_config}: split with {theirs}, this experiment with {ours}: its fold weights have seen other "
            "validation rows (OOF would leak); use the same data.n_folds and data.fold_seed"
        )
