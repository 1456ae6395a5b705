"""GPU check in one command: `python scripts/gpu_check.py` (about 3-5 minutes on one CUDA GPU).

On real demo images (iMet layout, src.demo) with resnet50 at 224 px it measures:
- model speed: training-step and forward images/s on batches already on the GPU, fp32 / AMP (bf16 where
  supported, else fp16) x NCHW / channels_last, and AMP + channels_last + `train.compile` (when the config
  has that key; else a note);
- the data path at 224 px: training and inference ratios (src.bench: the real loaders vs resident batches);
- one short train -> oof -> thresholds -> submit on a tiny demo, each stage through `src.stage.main`.
It prints a table and writes JSON (default oof/_bench/gpu-check.json). `--cpu --tiny` runs the same code on
the CPU at tiny sizes (the test suite does, in well under a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@dataclass(frozen=True)
class CheckSizes:
    """How big each part of the check is; `TINY` keeps a CPU run to seconds."""

    model: str
    image_size: int
    train_batch: int
    predict_batch: int
    images: int  # demo images decoded for the speed and data-path parts
    speed_rounds: int  # interleaved rounds over the model-speed variants
    train_repeats: int  # data-path training epochs per side
    predict_repeats: int  # data-path inference passes per side
    chain_train: int  # the tiny demo of the train -> submit chain
    chain_test: int
    chain_size: int
    chain_model: str


FULL = CheckSizes("resnet50", 224, 128, 256, 1024, 3, 3, 6, 128, 32, 224, "resnet50")
TINY = CheckSizes("test_resnet", 32, 8, 16, 32, 1, 1, 1, 24, 8, 32, "test_resnet")


def check_config(sizes: CheckSizes, device: str, overrides: list[str] = ()):
    """The demo config with the check's model, image size, batch sizes and device."""
    from src.config import load_config

    return load_config(
        REPO_ROOT / "configs" / "demo-imet.yaml",
        [
            f"model.name={sizes.model}",
            f"data.image_size={sizes.image_size}",
            f"train.device={device}",
            f"train.batch_size={sizes.train_batch}",
            f"predict.batch_size={sizes.predict_batch}",
            *overrides,
        ],
    )


def has_compile_key(config) -> bool:
    """Whether this checkout's config has `train.compile` (the check measures compile only then)."""
    return "compile" in type(config.train).model_fields


def variants(config, device, with_compile: bool = True) -> list[tuple[str, object, bool]]:
    """(name, Runtime, compiled) for each precision x memory format, then compile where the config knows it."""
    import torch

    from src.runtime import Runtime

    amp = None
    if device.type == "cuda":
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        amp = torch.bfloat16  # CPU autocast: bf16 only
    amp_name = "bf16" if amp == torch.bfloat16 else "fp16"
    rows = [
        ("fp32 NCHW", Runtime(device, None, False), False),
        ("fp32 channels_last", Runtime(device, None, True), False),
        (f"{amp_name} NCHW", Runtime(device, amp, False), False),
        (f"{amp_name} channels_last", Runtime(device, amp, True), False),
    ]
    if with_compile and has_compile_key(config):
        rows.append((f"{amp_name} channels_last compile", Runtime(device, amp, True), True))
    return rows


def _speed_sides(
    config, data, name: str, runtime, compiled: bool, log
) -> tuple[Callable[[], int], Callable[[], int], dict]:
    """(one training pass, one forward pass, compile seconds) for one variant, on resident batches."""
    import numpy as np
    import torch

    from src import bench
    from src.data.dataset import CachedImageDataset
    from src.data.transforms import transform_from_config
    from src.engine import Training, build_grad_scaler, build_optimizer, train_one_epoch
    from src.losses import MultiHeadLoss
    from src.predict_loop import make_eval_loader

    tc = config.train
    model = bench.fresh_model(config, data.heads, runtime)
    loss_fn = MultiHeadLoss(data.heads, tc.loss).to(runtime.device)
    optimizer = build_optimizer(model, loss_fn, tc)
    trained = torch.compile(model) if compiled else model
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    training = Training(model, trained, loss_fn, optimizer, scheduler, build_grad_scaler(runtime))
    dataset = CachedImageDataset(
        data.images, np.arange(len(data.images)), data.targets, transform_from_config(config, "eval")
    )
    batches = list(make_eval_loader(dataset, tc.batch_size, 0, runtime))

    def sync(images: int) -> int:
        if runtime.on_cuda:
            torch.cuda.synchronize()
        return images

    def train_pass() -> int:
        return sync(train_one_epoch(training, batches, runtime)[1])

    @torch.no_grad()
    def forward_pass() -> int:
        trained.eval()
        with runtime.autocast():
            for images, _, _ in batches:
                trained(images)
        return sync(sum(len(images) for images, _, _ in batches))

    started = time.perf_counter()
    train_pass(), forward_pass()  # warm-up: compilation, cuDNN autotuning, allocations
    warmup = time.perf_counter() - started
    log(f"  {name}: warm-up {warmup:.1f}s")
    return train_pass, forward_pass, {"warmup_seconds": warmup}


def model_speed(config, data, sizes: CheckSizes, device, log, with_compile: bool = True) -> dict:
    """Training and forward images/s per variant (interleaved rounds, medians), and each one's speed-up over fp32 NCHW;
    a variant that cannot run here (e.g. compile without its toolchain) is reported with its error."""
    from src import bench

    sides, info, failed = {}, {}, {}
    for name, runtime, compiled in variants(config, device, with_compile):
        try:
            train_pass, forward_pass, info[name] = _speed_sides(config, data, name, runtime, compiled, log)
        except Exception as error:  # one variant's failure (compile on a bare machine) leaves the others measured
            failed[name] = {"error": f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"}
            continue
        sides[f"train|{name}"], sides[f"forward|{name}"] = train_pass, forward_pass
    rates = bench.interleaved(sides, sizes.speed_rounds)
    result = {}
    for name in info:
        train, forward = statistics.median(rates[f"train|{name}"]), statistics.median(rates[f"forward|{name}"])
        result[name] = {"train_images_per_s": train, "forward_images_per_s": forward, **info[name]}
    base = result["fp32 NCHW"]
    for row in result.values():
        row["train_speedup"] = row["train_images_per_s"] / base["train_images_per_s"]
        row["forward_speedup"] = row["forward_images_per_s"] / base["forward_images_per_s"]
    return {"variants": {**result, **failed}, "compile": _compile_note(config, with_compile)}


def _compile_note(config, with_compile: bool) -> str:
    if not has_compile_key(config):
        return "skipped: this checkout's config has no train.compile key"
    return "measured" if with_compile else "skipped (--skip-compile)"


def data_path(config, data, sizes: CheckSizes) -> dict:
    """Training and inference data-path ratios at the check's size with the config's runtime (AMP + channels_last)."""
    from src import bench

    training = bench.bench_training(config, data, sizes.images, sizes.train_repeats)
    inference = bench.bench_inference(config, data, sizes.images, sizes.predict_repeats)
    return {"training": training, "inference": inference}


def chain(sizes: CheckSizes, device: str, workdir: Path) -> dict:
    """folds -> train --fold all -> oof -> thresholds -> submit on a tiny demo; seconds and exit code per stage."""
    import yaml

    from src.config import config_to_dict
    from src.demo import build_demo
    from src.stage import main

    paths = build_demo("imet", workdir / "chain" / "demo-imet", n_train=sizes.chain_train, n_test=sizes.chain_test)
    config = check_config(sizes, device, [f"model.name={sizes.chain_model}", f"data.image_size={sizes.chain_size}"])
    body = config_to_dict(config)
    body["output_dir"] = str(workdir / "chain" / "out")
    body["data"].update(
        {"root": str(paths.root), "n_folds": 2, "solution": [str(path) for path in paths.solution_files]}
    )
    body["train"].update({"epochs": 1, "batch_size": min(sizes.train_batch, 32)})
    body["thresholds"].update({"optuna_trials": 5, "honest_folds": 2})
    body["submit"].update({"checkpoint": "fold-0"})
    config_path = workdir / "chain" / "gpu-check.yaml"
    config_path.write_text(yaml.safe_dump(body, sort_keys=False))
    stages, log_path = {}, workdir / "chain" / "stages.log"
    with open(log_path, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        for argv in (["folds"], ["train", "--fold", "all"], ["oof"], ["thresholds"], ["submit"]):
            started = time.perf_counter()
            code = main([*argv, "--config", str(config_path), "--quiet"])
            stages[argv[0]] = {"exit_code": code, "seconds": time.perf_counter() - started}
            if code != 0:
                break
    scores = workdir / "chain" / "out" / "oof" / "gpu-check" / "oof_scores.json"
    submission = workdir / "chain" / "out" / "submissions" / "gpu-check" / "submission.csv"
    ok = all(stage["exit_code"] == 0 for stage in stages.values()) and len(stages) == 5
    return {
        "stages": stages,
        "ok": ok,
        "oof_scores": json.loads(scores.read_text()) if scores.exists() else None,
        "submission_rows": len(submission.read_text().splitlines()) - 1 if submission.exists() else None,
        "log_tail": [] if ok else log_path.read_text().splitlines()[-20:],
    }


def run_check(
    sizes: CheckSizes, device: str, workdir: Path, log: Callable[[str], None] = print, with_compile: bool = True
) -> dict:
    """Every part of the check; a part that fails is recorded with its error and the others still run."""
    import torch

    from src import bench

    config = check_config(sizes, device)
    runtime = bench.bench_runtime(config)
    result: dict = {
        "sizes": asdict(sizes),
        "machine": bench.machine(),
        "device": str(runtime.device),
        "amp": str(runtime.amp_dtype),
        "channels_last": runtime.channels_last,
        "parts": {},
    }
    log(
        f"gpu check on {result['machine']['cuda'] or 'CPU'}: {sizes.model} @{sizes.image_size}px, "
        f"batch {sizes.train_batch} (train) / {sizes.predict_batch} (predict)"
    )
    data = bench.demo_data(workdir, sizes.image_size, sizes.images, log)
    parts = (
        ("model_speed", lambda: model_speed(config, data, sizes, runtime.device, log, with_compile)),
        ("data_path", lambda: data_path(config, data, sizes)),
        ("chain", lambda: chain(sizes, device, workdir)),
    )
    for name, measure in parts:
        log(f"{name} ...")
        started = time.perf_counter()
        try:
            result["parts"][name] = measure()
        except Exception as error:  # the check reports every part it can: one failure must not hide the rest
            result["parts"][name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
        result["parts"][name]["seconds"] = time.perf_counter() - started
        if runtime.on_cuda:
            torch.cuda.empty_cache()
    return result


def table(result: dict) -> str:
    """The check's figures as aligned text."""
    parts, lines = (
        result["parts"],
        [
            f"gpu check: {result['machine']['cuda'] or 'CPU'}, {result['sizes']['model']} "
            f"@{result['sizes']['image_size']}px, amp {result['amp']}",
            "",
        ],
    )
    speed = parts["model_speed"]
    if "error" in speed:
        lines.append(f"model speed: FAILED {speed['error']}")
    else:
        lines.append(
            f"{'model speed (resident batches)':<36} {'train img/s':>12} {'x fp32':>7} {'forward img/s':>14} {'x fp32':>7}"
        )
        for name, row in speed["variants"].items():
            lines.append(
                f"{name:<36} FAILED {row['error']}"
                if "error" in row
                else f"{name:<36} {row['train_images_per_s']:>12.0f} {row['train_speedup']:>7.2f} "
                f"{row['forward_images_per_s']:>14.0f} {row['forward_speedup']:>7.2f}"
            )
        if speed["compile"] != "measured":
            lines.append(f"compile: {speed['compile']}")
    path = parts["data_path"]
    lines.append("")
    if "error" in path:
        lines.append(f"data path: FAILED {path['error']}")
    else:
        lines += bench_lines(path)
    lines.append("")
    done = parts["chain"]
    if "error" in done:
        lines.append(f"train -> submit: FAILED {done['error']}")
    else:
        stages = ", ".join(
            f"{name} {stage['seconds']:.0f}s" + ("" if stage["exit_code"] == 0 else f" (exit {stage['exit_code']})")
            for name, stage in done["stages"].items()
        )
        lines.append(
            f"train -> submit on a tiny demo: {'ok' if done['ok'] else 'FAILED'} ({stages}); "
            f"submission rows {done['submission_rows']}"
        )
    return "\n".join(lines)


def bench_lines(path: dict) -> list[str]:
    """The data-path row in the bench's own table format."""
    from src.bench import data_path_lines

    return data_path_lines({f"data path @{path['training']['num_workers']} workers": path})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="GPU speed check: AMP, channels_last, compile, data path, a tiny chain"
    )
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (to test the script; slow at full sizes)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (test_resnet at 32 px, a few images)")
    parser.add_argument("--skip-compile", action="store_true", help="leave the train.compile variant out")
    parser.add_argument(
        "--json",
        type=Path,
        default=REPO_ROOT / "oof" / "_bench" / "gpu-check.json",
        help="where to write the results (default: oof/_bench/gpu-check.json)",
    )
    args = parser.parse_args(argv)
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print(
            "error: no CUDA device is visible; run on a GPU machine, or add --cpu (--tiny) to test the script",
            file=sys.stderr,
        )
        return 2
    if not args.cpu:
        from src.errors import PipelineError
        from src.runtime import check_gpu_supported

        try:
            check_gpu_supported()  # the same one-line stop as train on a GPU this torch cannot run (a P100)
        except PipelineError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    started = time.perf_counter()
    try:
        result = run_check(
            TINY if args.tiny else FULL, "cpu" if args.cpu else "cuda", workdir, with_compile=not args.skip_compile
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["seconds"] = time.perf_counter() - started
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print("\n" + table(result) + f"\n\n{result['seconds']:.0f}s in all; wrote {args.json}")
    return 0 if all("error" not in part for part in result["parts"].values()) and result["parts"]["chain"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
