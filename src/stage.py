"""Command line: `python -m src.stage <stage> --config configs/<exp>.yaml [key.path=value ...]`.

The only module that knows about argv; each stage is a short call into src/steps/.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

# No hub downloads, ever: weights come from local files (as on an offline Kaggle kernel).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

STAGES = {
    "folds": "K folds balanced on every label (iterative stratification) -> <data.root>/folds-k<K>-seed<S>.csv",
    "train": "train one fold (--fold K), all folds (--fold all) or a full fit (--full) -> oof/<exp>/fold-K/",
    "oof": "predict every training image with the fold model that held it out -> oof/<exp>/oof.npz",
    "thresholds": "per-class thresholds on OOF (global, exact, Optuna), optimistic vs honest -> oof/<exp>/thresholds.json",
    "submit": "ONE model predicts the test images; write + validate the submission -> submissions/<exp>/",
    "demo": "build the demo competition and run folds -> train -> oof -> thresholds -> submit on it",
    "kernel": "offline Kaggle kernel + weights dataset, run locally first (parity), then --push / --status / --output / --submit -> kernels/<exp>/",
    "download": "kaggle competitions download into input/<slug>/ and unzip",
    "report": "figures + tables from saved artifacts (no retraining) -> oof/<exp>/report/index.html and report.md",
    "bench": "side-by-side speed ratios: data path vs in-memory, prediction vs forward, exact vs Optuna thresholds, folds, memory",
    "status": "list experiments: folds trained, best epoch per fold, OOF score, thresholds, submissions, kernels, with paths",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m src.stage",
        description="Image-competition pipeline around one model: folds -> train -> oof -> thresholds -> submit.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m src.stage train --config configs/demo-imet.yaml --fold 0 train.epochs=3",
    )
    subparsers = parser.add_subparsers(dest="stage", required=True, metavar="stage")
    for name, summary in STAGES.items():
        sub = subparsers.add_parser(name, help=summary, description=summary)
        sub.add_argument("--config", required=name not in ("download", "status", "bench"), help="experiment YAML, e.g. configs/demo-imet.yaml (outputs are named after it)")
        sub.add_argument("overrides", nargs="*", metavar="key.path=value", help="override config values, e.g. data.root=/other/copy")
        sub.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
        sub.add_argument("--debug", action="store_true", help="show the full traceback on errors")
        if name == "train":
            which = sub.add_mutually_exclusive_group(required=True)
            which.add_argument("--fold", help="fold number, or 'all'")
            which.add_argument("--full", action="store_true", help="fit on all training data (no validation)")
            sub.add_argument("--resume", action="store_true", help="continue from last.pt exactly where the run stopped")
            sub.add_argument("--stop-after-epochs", type=int, metavar="N",
                             help="stop after N epochs this call (e.g. to fit a time limit); continue later with --resume")
        if name == "submit":
            sub.add_argument("--kaggle", action="store_true", help="then upload with `kaggle competitions submit`")
        if name == "kernel":
            sub.add_argument("--push", action="store_true",
                             help="upload the weights dataset (create, later new versions) and push the kernel; refused when the parity check fails")
            sub.add_argument("--status", action="store_true", help="state of the pushed kernel's run (kaggle kernels status)")
            sub.add_argument("--output", action="store_true", help="download its output into kernels/<exp>/output/ (kaggle kernels output)")
            sub.add_argument("--submit", action="store_true", help="code competitions: submit the pushed kernel version once its run is complete")
            check = sub.add_mutually_exclusive_group()
            check.add_argument("--check", dest="check", action="store_true", help="run the parity check even if it passed before for these files")
            check.add_argument("--no-check", dest="check", action="store_false", help="skip the parity check")
            sub.set_defaults(check=None)  # None: check when the competition's test images are here
        if name == "bench":
            sub.add_argument("--quick", action="store_true", help="small sizes (a minute or two); figures are not the goals' sizes")
            sub.add_argument("--json", metavar="PATH", help="where to write the results (default: oof/_bench/bench[-quick].json)")
        if name == "status":
            sub.add_argument("--output-dir", help="folder holding oof/, submissions/, kernels/ (default: --config's output_dir, else .)")
            sub.add_argument("--configs", default="configs", help="folder of experiment YAMLs; those not started are listed too")
            sub.add_argument("--clean-cache", action="store_true",
                             help="delete the decoded-image cache (oof/_image_cache/; rebuilt on demand) and report the space freed")
        if name == "download":
            sub.add_argument("--competition", metavar="SLUG", help="competition slug (default: the config's competition)")
            sub.add_argument("--dest", default="input", help="parent folder: files go to <dest>/<slug>/ (default: input)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may come before or after flags; anything else unknown is a usage error.
    stray = [item for item in extra if item.startswith("-") or "=" not in item]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = list(args.overrides) + extra
    from src.errors import PipelineError

    try:
        return _dispatch(args)
    except PipelineError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished epochs are saved; continue with --resume", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from src.config import load_config
    from src.errors import PipelineError
    from src.experiment import Experiment

    # Only the asked stage's module: `status` or `download` need not load torch, sklearn and matplotlib.
    step = importlib.import_module(f"src.steps.{args.stage}")
    if args.stage == "bench":
        step.run(args.config, args.overrides, quick=args.quick, out_json=Path(args.json) if args.json else None)
        return 0
    if args.stage == "status":
        output_dir = args.output_dir or (load_config(args.config, args.overrides).output_dir if args.config else ".")
        step.run(Path(output_dir), Path(args.configs), clean_cache=args.clean_cache)
        return 0

    if args.stage == "download":
        slug = args.competition or (load_config(args.config, args.overrides).competition if args.config else None)
        if not slug:
            raise PipelineError("download: name the competition: --competition <slug> (or --config with competition: set)")
        step.run(slug, args.dest)
        return 0
    config = load_config(args.config, args.overrides)
    exp = Experiment(config, Path(args.config))
    if args.stage == "folds":
        step.run(exp)
    elif args.stage == "train":
        step.run(exp, args.fold, full=args.full, resume=args.resume, stop_after_epochs=args.stop_after_epochs, quiet=args.quiet)
    elif args.stage == "submit":
        step.run(exp, to_kaggle=args.kaggle, quiet=args.quiet)
    elif args.stage == "kernel":
        step.run(exp, push=args.push, status=args.status, output=args.output, check=args.check, quiet=args.quiet,
                 submit=args.submit)
    else:  # oof, thresholds, demo, report
        step.run(exp, quiet=args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
