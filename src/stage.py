"""Command line: `python -m src.stage <stage> --config configs/<exp>.yaml [key.path=value ...]`.

The only module that reads argv. Every stage is one row of STAGES (name, summary, options, the
function that runs it); the stage's module is imported only when it runs. Under torchrun only
rank 0 prints: the other ranks run quietly and say nothing unless they fail.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from src.steps.table import OneOf, Stage, option, train_options

# No hub downloads (the `weights` stage lifts this for its own call) and no version checks: see src/__init__.py.
_WEIGHTS_OPTIONS = (
    option("--model", metavar="NAME.TAG", help="timm model tag, e.g. resnet50.a1_in1k (default: the config's)"),
    option("--push", action="store_true", help="then create/version a Kaggle dataset of that folder"),
)
_DOWNLOAD_OPTIONS = (
    option("--competition", metavar="SLUG", help="competition slug (default: the config's competition)"),
    option("--dest", default="input", help="parent folder: files go to <dest>/<slug>/ (default: input)"),
)

STAGES: tuple[Stage, ...] = (
    Stage(
        "folds",
        "K folds balanced on every label (iterative stratification) -> <data.root>/folds-k<K>-seed<S>.csv",
        run="src.steps.folds:run",
    ),
    Stage(
        "train",
        "train one fold (--fold K), all folds (--fold all) or a full fit (--full) -> oof/<exp>/fold-K/",
        run="src.steps.train:run",
        options=train_options(
            resume_help="continue from last.pt exactly where the run stopped",
            stop_help="stop after N epochs this call (e.g. to fit a time limit); continue later with --resume",
        ),
    ),
    Stage(
        "oof",
        "predict every training image with the fold model that held it out -> oof/<exp>/oof.npz + oof_scores.json",
        run="src.steps.oof:run",
    ),
    Stage(
        "thresholds",
        "per-class thresholds on OOF (global, exact, Optuna), optimistic vs honest -> oof/<exp>/thresholds.json",
        run="src.steps.thresholds:run",
    ),
    Stage(
        "submit",
        "ONE model predicts the test images; write + validate the submission -> submissions/<exp>/",
        run="src.steps.submit:run",
        options=(
            option(
                "--kaggle", dest="to_kaggle", action="store_true", help="then upload with `kaggle competitions submit`"
            ),
        ),
    ),
    Stage(
        "report",
        "figures + tables from saved artifacts (no retraining) -> oof/<exp>/report/index.html, report.md, report.pdf",
        run="src.steps.report:run",
    ),
    Stage(
        "package",
        "the course's deliverable: prediction file(s) named as the course asks, report PDF, code + trained weights, "
        "Readme (+ an executed notebook that re-runs from the zip) -> submissions/<exp>/package/<name>.zip",
        run="src.steps.package:run",
        options=(
            option(
                "--name",
                metavar="NAME",
                help="the student's name or roll number the files are named after, "
                "e.g. RollNumber_06 (default: package.name, else the experiment)",
            ),
            option("--author", metavar="NAME", help="the author line of the report and Readme (sets package.author)"),
        ),
    ),
    Stage(
        "kernel",
        "Kaggle kernels: the offline inference kernel (build + local parity check, push, status, output, submit), "
        "the training kernel (train, pull) and its image-cache dataset (cache) -> kernels/<exp>/",
        subcommands="src.steps.kernel:SUBCOMMANDS",
    ),
    Stage(
        "demo",
        "build the demo competition and run folds -> train -> oof -> thresholds -> submit -> report on it",
        run="src.steps.demo:run",
    ),
    Stage(
        "weights",
        "fetch a timm model's pretrained weights once (the only stage that downloads) -> input/weights/<tag>/",
        run="src.steps.weights:run",
        config="optional",
        options=_WEIGHTS_OPTIONS,
    ),
    Stage(
        "download",
        "kaggle competitions download into input/<slug>/ and unzip",
        run="src.steps.download:run",
        config="optional",
        options=_DOWNLOAD_OPTIONS,
    ),
    Stage(
        "bench",
        "side-by-side speed ratios: data path vs in-memory, prediction vs forward, exact vs Optuna thresholds, "
        "folds, memory",
        run="src.steps.bench:run",
        config="optional",
        default_config="configs/demo-imet.yaml",
        default_overrides=("data.image_size=64",),
        options=(
            option(
                "--quick", action="store_true", help="small sizes (a minute or two); figures are not the goals' sizes"
            ),
            option(
                "--json",
                dest="out_json",
                type=Path,
                metavar="PATH",
                help="where to write the results (default: oof/_bench/bench[-quick].json)",
            ),
            option(
                "--models",
                dest="models",
                metavar="NAME,NAME",
                help="timm models whose data path to measure, from scratch, e.g. "
                "resnet10t,resnet18,mobilenetv3_small_100 (default: the config's)",
            ),
        ),
    ),
    Stage(
        "status",
        "list experiments: folds trained, best epoch per fold, OOF score, thresholds, submissions, kernels",
        run="src.steps.status:run",
        config="optional",
        options=(
            option(
                "--output-dir",
                type=Path,
                help="folder holding oof/, submissions/, kernels/ (default: --config's output_dir, else .)",
            ),
            option(
                "--configs",
                type=Path,
                default=Path("configs"),
                help="folder of experiment YAMLs; those not started are listed too",
            ),
            option(
                "--clean-cache",
                action="store_true",
                help="delete the decoded-image cache (oof/_image_cache/; rebuilt on demand) and report the space freed",
            ),
            option(
                "--refresh-scores",
                dest="refresh_scores",
                action="store_true",
                help="first ask Kaggle (kaggle CLI) for the scores of uploads still pending in each kaggle.json "
                "and record them",
            ),
            option(
                "--plot",
                dest="plot",
                action="store_true",
                help="also draw honest OOF score vs public leaderboard score per experiment "
                "-> oof/_leaderboard/cv-vs-public.png",
            ),
        ),
    ),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)
_ROOT = Path(__file__).resolve().parents[1]


def stage_rows() -> dict[str, Stage]:
    return {stage.name: stage for stage in STAGES}


def subcommand_rows(stage: Stage) -> tuple[Stage, ...]:
    module, _, table = stage.subcommands.partition(":")
    return getattr(importlib.import_module(module), table) if stage.subcommands else ()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m src.stage",
        description="Image-competition pipeline around one model: folds -> train -> oof -> thresholds -> submit.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m src.stage train --config configs/demo-imet.yaml --fold 0 train.epochs=3",
    )
    subparsers = parser.add_subparsers(dest="stage", required=True, metavar="stage")
    for stage in STAGES:
        sub = subparsers.add_parser(stage.name, help=stage.summary, description=stage.summary)
        rows = subcommand_rows(stage)
        if not rows:
            _add_stage_arguments(sub, stage)
            continue
        commands = sub.add_subparsers(dest="subcommand", required=True, metavar="command")
        for row in rows:
            _add_stage_arguments(commands.add_parser(row.name, help=row.summary, description=row.summary), row)
    return parser


def _add_stage_arguments(sub: argparse.ArgumentParser, stage: Stage) -> None:
    sub.set_defaults(row=stage)
    sub.add_argument(
        "--config",
        required=stage.config == "required",
        help="experiment YAML, e.g. configs/demo-imet.yaml (outputs are named after it)",
    )
    sub.add_argument(
        "overrides", nargs="*", metavar="key.path=value", help="override config values, e.g. data.root=/other/copy"
    )
    sub.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    sub.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    for item in stage.options:
        group = sub.add_mutually_exclusive_group(required=item.required) if isinstance(item, OneOf) else sub
        for one in item.options if isinstance(item, OneOf) else (item,):
            group.add_argument(*one.flags, **one.kwargs)


def own_options(args: argparse.Namespace, stage: Stage) -> dict:
    """The values of the stage's own options, by dest (the keyword arguments of its run function)."""
    ones = [one for item in stage.options for one in (item.options if isinstance(item, OneOf) else (item,))]
    dests = [one.kwargs.get("dest") or one.flags[0].lstrip("-").replace("-", "_") for one in ones]
    return {dest: getattr(args, dest) for dest in dests}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _refuse_options_before_the_stage(parser, sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    # Overrides may come before or after flags; anything else unknown is a usage error.
    stray = [item for item in extra if item.startswith("-") or "=" not in item]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = list(args.overrides) + extra
    from src.errors import PipelineError
    from src.watchdog import stop_on_sigterm

    rank = int(os.environ.get("RANK", "0") or 0)
    try:
        with stop_on_sigterm(f"stage {args.stage}"):  # SIGTERM unwinds the stage: children stopped, temp files gone
            return run_stage(args, rank)
    except PipelineError as exc:
        if args.debug:
            traceback.print_exc()
        # One write: print() writes the text and the newline apart, so two ranks' lines could interleave on one stderr.
        sys.stderr.write(f"{'' if rank == 0 else f'rank {rank}: '}error: {exc}\n")
        sys.stderr.flush()
        return getattr(exc, "exit_status", 2)  # 143 after SIGTERM (src.watchdog.Stopped), else 2
    except KeyboardInterrupt:
        if rank == 0:
            print("interrupted: finished epochs are saved; continue with --resume", file=sys.stderr)
        return 130


def _refuse_options_before_the_stage(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """`--config X train` would be argparse's 'invalid choice: X'; say that the stage comes first instead."""
    if not argv or not argv[0].startswith("--") or argv[0] in ("-h", "--help"):
        return
    stage = next((word for word in argv if word in STAGE_NAMES), None)
    if stage is None:
        parser.error(
            f"the stage comes first: python -m src.stage <stage> {' '.join(argv)} (stages: {', '.join(STAGE_NAMES)})"
        )
    rest = list(argv)
    rest.remove(stage)
    parser.error(f"the stage comes first: python -m src.stage {stage} {' '.join(rest)}")


def run_stage(args: argparse.Namespace, rank: int = 0) -> int:
    """Build the experiment (when the stage has a config), then call the row's run function."""
    stage: Stage = args.row
    exp = stage_experiment(stage, args.config, args.overrides)
    module, _, function = stage.run.partition(":")
    run: Callable = getattr(importlib.import_module(module), function)
    quiet, log = (args.quiet, print) if rank == 0 else (True, _silent)
    run(exp, **own_options(args, stage), quiet=quiet, log=log)
    _leave_process_group()
    return 0


def _leave_process_group() -> None:
    """torchrun ranks finish together, then leave the group: a rank that exits while another still works
    tears gloo's threads down under it (an intermittent 'terminate called without an active exception')."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def stage_experiment(stage: Stage, config_path: str | Path | None, overrides: list[str]):
    """The Experiment of `--config` (or of the row's default config, its default overrides first); None without one."""
    from src.artifacts import Experiment
    from src.config import load_config

    if config_path is None:
        if stage.default_config is None:
            return None
        config_path, overrides = stage.default_config, [*stage.default_overrides, *overrides]
    path = Path(config_path)
    if not path.is_absolute() and not path.exists() and (_ROOT / path).exists():
        path = _ROOT / path  # a table default (bench's demo config) works from any folder
    return Experiment(load_config(path, overrides), Path(config_path))


def _silent(message: str) -> None:
    """DDP ranks other than 0: the same work, nothing printed (rank 0 prints it once)."""


if __name__ == "__main__":
    sys.exit(main())
