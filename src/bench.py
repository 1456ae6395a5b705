"""Benchmarks that report ratios measured side by side in one run, so a loaded machine cancels out.

Every comparison runs its sides interleaved (order reversed every other round), repeats (data-path comparisons
also for a minimum time), and reports the median of the per-round ratios with its quartiles and a distribution-free
95% interval of the median:
- data path, for each model asked for: training images/s of the real train data path (CachedImageDataset
  over the uint8 memmap cache, the loader training builds, uint8 batches normalised on the device,
  `engine.train_one_epoch`) against the same step on batches already normalised on the device; inference
  images/s of `predict_probs` over the loader oof/submit build, with and without flip TTA, against
  forward-only on batches already on the device;
- image cache: the raw uint8 cache against packed sets (PNG, JPEG, WebP) of the same images, bytes on disk and
  images/s read back one image at a time, each as a ratio to raw;
- thresholds: exact coordinate ascent, an Optuna study and one global threshold on a synthetic OOF
  matrix with iMet-like long-tail label frequencies;
- folds: seconds and peak memory of `make_folds` on iMet-like label matrices, in fresh processes;
- memory: peak resident memory of each stage (`python -m src.stage ...`) on a tiny demo.

Nothing here reads argv or prints: results are plain dicts, `log` receives progress lines.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from src.config import Config
from src.errors import PipelineError

REPO_ROOT = Path(__file__).resolve().parents[1]

# iMet 2019 train.csv: 109,237 images, 1,103 attributes; the most frequent (tag::men) is on 19,970
# images, the rarest on 1. Labels per image is an approximation (most images carry 2-6 attributes).
IMET_ROWS, IMET_CLASSES, IMET_TOP_COUNT, IMET_LABELS_PER_IMAGE = 109_237, 1_103, 19_970, 4.4


@dataclass(frozen=True)
class BenchSizes:
    """How much work each section does; `quick` sizes keep the whole run to a minute or two."""

    train_images: int  # images per measured training epoch
    train_repeats: int
    predict_images: int
    predict_repeats: int
    data_path_seconds: float  # each data-path comparison runs at least its repeats and on for this long
    oof_rows: int
    oof_classes: int
    optuna_trials: int
    folds_ladder: tuple[int, ...]  # subsample sizes timed to show how make_folds scales
    folds_full: bool  # also time the full 109,237-row matrix (else: extrapolated)
    demo_train: int  # tiny demo for per-stage memory
    demo_test: int
    stages: int  # how many of STAGE_RUNS (a prefix: each needs the one before) get a process
    allocator_pairs: int  # process pairs (glibc defaults / freed memory reused) per model
    allocator_steps: tuple[int, int]  # training steps, forward passes timed in each of those processes
    allocator_all_models: bool  # every model asked for, else the first

    @property
    def label(self) -> str:
        return "quick" if self is QUICK else "full"


# fmt: off
FULL = BenchSizes(train_images=960, train_repeats=3, predict_images=512, predict_repeats=32, data_path_seconds=60.0,
    oof_rows=20_000, oof_classes=IMET_CLASSES, optuna_trials=200, folds_ladder=(5_000, 10_000, 20_000),
    folds_full=True, demo_train=240, demo_test=60, stages=5, allocator_pairs=2, allocator_steps=(12, 8),
    allocator_all_models=True)
QUICK = BenchSizes(train_images=96, train_repeats=2, predict_images=128, predict_repeats=4, data_path_seconds=0.0,
    oof_rows=3_000, oof_classes=IMET_CLASSES, optuna_trials=12, folds_ladder=(1_000, 2_000, 4_000), folds_full=False,
    demo_train=96, demo_test=24, stages=1, allocator_pairs=1, allocator_steps=(3, 2), allocator_all_models=False)
# fmt: on


# --------------------------------------------------------------------------------------------
# Timing helpers


def interleaved(
    sides: dict[str, Callable[[], int]], repeats: int, min_seconds: float = 0.0, max_repeats: int | None = None
) -> dict[str, list[float]]:
    """Run every side at least `repeats` times, in rotating order, and on until `min_seconds` have passed (at most
    `max_repeats` rounds, default 20 x `repeats`); return images/s per side per round.

    A side is a function that does its work and returns how many images it processed. Fast sides get more rounds
    in the same time: a short round is the one a burst of load moves most.
    """
    names = list(sides)
    rates: dict[str, list[float]] = {name: [] for name in names}
    limit = max_repeats if max_repeats is not None else 20 * repeats
    started, repeat = time.perf_counter(), 0
    while repeat < repeats or (repeat < limit and time.perf_counter() - started < min_seconds):
        order = names if repeat % 2 == 0 else names[::-1]
        for name in order:
            side_started = time.perf_counter()
            images = sides[name]()
            rates[name].append(images / max(time.perf_counter() - side_started, 1e-9))
        repeat += 1
    return rates


def median_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval for the median of `values`: the order statistics [low, n-1-low] (0-based), low
    the largest with P(Binomial(n, 1/2) <= low) <= (1 - confidence) / 2; (min, max) when n is too small for one."""
    ordered = sorted(values)
    n = len(ordered)
    parts = 10**6  # integer arithmetic: 2**n overflows a float past n = 1023
    tail_allowed = round((1 - confidence) / 2 * parts) * 2**n
    cumulative, low = 0, 0
    for count in range(n // 2):
        cumulative += math.comb(n, count)
        if cumulative * parts > tail_allowed:
            break
        low = count
    return float(ordered[low]), float(ordered[n - 1 - low])


def ratio_summary(rates: dict[str, list[float]], numerator: str, denominator: str) -> dict:
    """Median, quartiles and a 95% interval of the median (`median_interval`) of the per-round ratio
    numerator/denominator (same round = same load)."""
    ratios = np.array([a / b for a, b in zip(rates[numerator], rates[denominator])])
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    low, high = median_interval(ratios.tolist())
    return {"median": float(median), "q1": float(q1), "q3": float(q3), "ci95": [low, high], "pairs": int(ratios.size)}


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def current_rss_mb() -> float:
    """Resident set size of this process now (MB)."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak resident set size of this process's own memory (MB): VmHWM, which starts afresh at exec
    (getrusage's ru_maxrss would carry the parent's peak over exec)."""
    return _status_mb("VmHWM")


# --------------------------------------------------------------------------------------------
# Data: real demo images through the real cache


@dataclass
class DemoData:
    images: np.ndarray  # [n, S, S, 3] uint8, memory-mapped from the cache
    targets: dict[str, np.ndarray]
    heads: list
    paths: list = field(default_factory=list)  # the image files (the cache comparison builds its own sets from them)


def demo_data(workdir: Path, image_size: int, n_train: int, log: Callable[[str], None]) -> DemoData:
    """iMet demo images (real digit scans, src.demo) decoded once into the uint8 cache at `image_size`."""
    from src.data.cache import load_or_build
    from src.demo import build_demo
    from src.formats import create_format

    paths = build_demo("imet", workdir / "demo-imet", n_train=n_train, n_test=max(8, n_train // 8))
    fmt = create_format("imet", paths.root)
    table = fmt.read_train()
    started = time.perf_counter()
    cache = load_or_build(table.paths, image_size, workdir / "cache", skip_unreadable=False, quiet=True)
    log(f"  decoded {len(table)} demo images into the cache at {image_size}px in {time.perf_counter() - started:.1f}s")
    return DemoData(cache.images, table.targets, fmt.heads(), list(table.paths))


PACKED_CODECS = (("png", 0), ("jpeg", 95), ("jpeg", 90), ("webp", 90))


def bench_cache(
    paths: list, image_size: int, workdir: Path, repeats: int, min_seconds: float = 0.0, codecs=PACKED_CODECS
) -> dict:
    """The raw cache against each packed codec on the same images: bytes on disk, build seconds and images/s read back
    one image at a time (as a loader worker reads them), in interleaved rounds; ratios packed / raw."""
    from src.data.cache import CachePolicy, load_or_build

    sets, build_seconds = {}, {}
    policies = {"raw": CachePolicy(image_size)}
    for codec, quality in codecs:
        name = codec if codec == "png" else f"{codec}{quality}"  # PNG is lossless: no quality
        policies[name] = CachePolicy(image_size, kind="packed", codec=codec, quality=quality)
    for name, policy in policies.items():
        started = time.perf_counter()
        cache_dir = workdir / f"cache-{name}"
        sets[name] = load_or_build(paths, image_size, cache_dir, False, quiet=True, policy=policy).images
        build_seconds[name] = time.perf_counter() - started

    def reader(store) -> Callable[[], int]:
        def read_all() -> int:
            for row in range(len(store)):
                np.array(store[row])  # a copy: the raw side really reads its pages, as a batch does
            return len(store)

        return read_all

    rates = interleaved({name: reader(store) for name, store in sets.items()}, repeats, min_seconds)
    bytes_on_disk = {name: _bytes_in(workdir / f"cache-{name}") for name in sets}
    return {
        "images": len(paths),
        "image_size": image_size,
        "sets": {
            name: {
                "bytes": bytes_on_disk[name],
                "bytes_ratio": bytes_on_disk[name] / bytes_on_disk["raw"],
                "build_seconds": build_seconds[name],
                "images_per_s": statistics.median(rates[name]),
                "speed_ratio": ratio_summary(rates, name, "raw"),
            }
            for name in sets
        },
    }


def _bytes_in(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and path.suffix != ".lock")


def cache_lines(section: dict) -> list[str]:
    """One line per cache set: bytes on disk and images/s read back, each as a ratio to the raw cache."""
    lines = [
        f"{'image cache':<12} {section['images']} demo images at {section['image_size']} px: "
        "MB on disk (/ raw)      images/s read (/ raw [95% interval])   build s"
    ]
    for name, entry in section["sets"].items():
        lines.append(
            f"{'':<12} {name:<8} {entry['bytes'] / 2**20:>10.2f} ({entry['bytes_ratio']:.3f})"
            f"{entry['images_per_s']:>18.0f} ({_ratio(entry['speed_ratio'])})   {entry['build_seconds']:.1f}"
        )
    return lines


# --------------------------------------------------------------------------------------------
# Training and inference: real data path against tensors already in memory


def bench_runtime(config: Config, inference: bool = False):
    """The Runtime the config's `train` section asks for (CUDA + AMP + channels_last where there is a GPU)."""
    from src.runtime import runtime_from_config

    return runtime_from_config(config.train, inference=inference)


def fresh_model(config: Config, heads, runtime):
    """The config's architecture with fresh weights, on the runtime's device and in its memory format."""
    import torch

    from src.model import build_model

    model = build_model(config.model.name, heads, None, config.model.drop_rate)
    model.to(runtime.device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def resident_batches(batches, runtime) -> list:
    """Batches moved to the device once, so a step on them pays no data path at all."""
    return [
        (runtime.to_device(images), {name: value.to(runtime.device) for name, value in targets.items()}, rows)
        for images, targets, rows in batches
    ]


class _BatchStream:
    """One batch at a time from `loader`, starting a new epoch (order, augmentations) when one ends; times the fetches."""

    def __init__(self, loader, dataset):
        self.loader, self.dataset = loader, dataset
        self.epoch, self.batches = 0, iter(())
        self.fetch_seconds, self.images = 0.0, 0

    def next(self):
        started = time.perf_counter()
        batch = next(self.batches, None)
        if batch is None:
            self.epoch += 1
            self.dataset.set_epoch(self.epoch)
            self.batches = iter(self.loader)
            batch = next(self.batches)
        self.fetch_seconds += time.perf_counter() - started
        self.images += len(batch[0])
        return batch

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.fetch_seconds, 1e-9)


def _pairing(workers: int) -> str:
    # Without workers the data path runs in series with the model, so sides can alternate batch by batch
    # (many pairs, each under the same load). Workers prefetch while the model runs, so only whole epochs
    # (worker start-up included, as in training) compare fairly.
    return "batch" if workers == 0 else "epoch"


def bench_training(
    config: Config,
    data: DemoData,
    n_images: int,
    repeats: int,
    num_workers: int | None = None,
    min_seconds: float = 0.0,
) -> dict:
    """images/s of training on the real data path vs on resident batches; same model, step and threads.

    Both sides call `engine.train_one_epoch`: the real one on batches from the training loader
    `engine.build_train_data` builds (CachedImageDataset, augmentations on the uint8 cache, uint8 batches
    normalised on the device), the other on the same batches already normalised on the device. At least `repeats`
    epochs of `n_images`, and on for `min_seconds`; the ratio is the median over pairs.
    """
    import torch

    from src.engine import Training, build_grad_scaler, build_optimizer, build_train_data, train_one_epoch
    from src.losses import MultiHeadLoss
    from src.runtime import seed_everything

    tc = config.train
    runtime = bench_runtime(config)
    seed_everything(tc.seed)
    model = fresh_model(config, data.heads, runtime)
    loss_fn = MultiHeadLoss(data.heads, tc.loss).to(runtime.device)
    optimizer = build_optimizer(model, loss_fn, tc)
    constant_lr = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    training = Training(model, model, loss_fn, optimizer, constant_lr, build_grad_scaler(runtime))
    train_data = build_train_data(
        config, data.images, np.arange(n_images) % len(data.images), data.targets, runtime, num_workers=num_workers
    )
    workers = train_data.loader.loader.num_workers
    resident = resident_batches(list(train_data.loader), runtime)

    def step(batches) -> int:
        _, seen = train_one_epoch(training, batches, runtime, desc="bench")
        if runtime.on_cuda:
            torch.cuda.synchronize()
        return seen

    step(resident[:2])  # warm-up: first-call allocations and kernel selection stay out of the timings
    rates, loader_rate = _training_rates(
        step, train_data.loader, train_data.dataset, resident, workers, repeats, min_seconds
    )
    return {
        "images_per_epoch": len(resident) * tc.batch_size,
        "num_workers": workers,
        "epochs": len(rates["real"]) / (len(resident) if _pairing(workers) == "batch" else 1),
        "paired_by": _pairing(workers),
        "real_images_per_s": statistics.median(rates["real"]),
        "resident_images_per_s": statistics.median(rates["resident"]),
        "loader_only_images_per_s": loader_rate,
        "ratio": ratio_summary(rates, "real", "resident"),
    }


def _training_rates(
    step: Callable[[list], int], loader, dataset, resident: list, workers: int, repeats: int, min_seconds: float
) -> tuple[dict[str, list[float]], float]:
    """(images/s per side per round, images/s of the loader alone): batch by batch without workers, else by epoch."""
    stream, cycle = _BatchStream(loader, dataset), itertools.cycle(resident)
    if _pairing(workers) == "batch":
        rates = interleaved(
            {"real": lambda: step([stream.next()]), "resident": lambda: step([next(cycle)])},
            repeats * len(resident),
            min_seconds,
        )
        return rates, stream.images_per_s

    def real_epoch() -> int:
        stream.epoch += 1
        dataset.set_epoch(stream.epoch)
        return step(loader)

    def loader_only() -> int:
        stream.epoch += 1
        dataset.set_epoch(stream.epoch)
        return sum(len(images) for images, _, _ in loader)

    rates = interleaved(
        {"real": real_epoch, "resident": lambda: step(resident), "loader_only": loader_only}, repeats, min_seconds
    )
    return rates, statistics.median(rates["loader_only"])


def bench_inference(config: Config, data: DemoData, n_images: int, repeats: int, min_seconds: float = 0.0) -> dict:
    """images/s of predict_probs (no TTA, flip TTA) over the loader oof/submit build vs forward-only on resident batches;
    at least `repeats` passes of each, and on for `min_seconds`."""
    import torch

    from src.predict_loop import config_eval_loader, predict_probs

    runtime = bench_runtime(config, inference=True)
    model = fresh_model(config, data.heads, runtime).eval()
    rows = np.arange(n_images) % len(data.images)
    loader = config_eval_loader(config, data.images, rows, runtime)
    workers = loader.loader.num_workers
    resident = resident_batches(list(loader), runtime)

    @torch.no_grad()
    def forward_only(batches) -> int:
        with runtime.autocast():
            for images, _, _ in batches:
                model(images)
        if runtime.on_cuda:
            torch.cuda.synchronize()
        return sum(len(images) for images, _, _ in batches)

    def predict(batches, tta: bool) -> int:
        probs, _ = predict_probs(model, batches, data.heads, runtime, tta_flip=tta, quiet=True)
        return len(next(iter(probs.values())))

    forward_only(resident[:1])  # warm-up
    # Whole passes, as oof and submit call predict_probs once per image set (its per-call set-up, e.g. model.eval(),
    # is not a per-batch cost); a pass of a few batches is short, so each pair still runs under one load.
    sides = {
        "predict": lambda: predict(loader, False),
        "predict_tta": lambda: predict(loader, True),
        "forward_only": lambda: forward_only(resident),
    }
    rates = interleaved(sides, repeats, min_seconds)
    return {
        "images": n_images,
        "repeats": len(rates["predict"]),
        "batch_size": config.predict.batch_size,
        "num_workers": workers,
        "paired_by": "pass",
        "predict_images_per_s": statistics.median(rates["predict"]),
        "predict_tta_images_per_s": statistics.median(rates["predict_tta"]),
        "forward_only_images_per_s": statistics.median(rates["forward_only"]),
        "ratio": ratio_summary(rates, "predict", "forward_only"),
        # TTA runs two forwards per image: 0.5 here is a TTA path with no overhead of its own.
        "tta_ratio": ratio_summary(rates, "predict_tta", "forward_only"),
    }


def with_model(config: Config, name: str) -> Config:
    """`config` with another timm architecture, from scratch (the bench measures speed, not weights)."""
    model = config.model.model_copy(update={"name": name, "pretrained": None, "weights": None})
    return config.model_copy(update={"model": model})


def bench_data_path(
    config: Config, data: DemoData, sizes: BenchSizes, models: list[str], log: Callable[[str], None]
) -> dict:
    """{"models": {model: {"training": bench_training, "inference": bench_inference}}} for each architecture in `models`."""
    results = {}
    for name in models:
        model_config = with_model(config, name)
        training = bench_training(
            model_config, data, sizes.train_images, sizes.train_repeats, min_seconds=sizes.data_path_seconds
        )
        inference = bench_inference(
            model_config, data, sizes.predict_images, sizes.predict_repeats, sizes.data_path_seconds
        )
        results[name] = {"training": training, "inference": inference}
        log(
            f"  {name:<24} training {training['ratio']['median']:.3f} ({training['real_images_per_s']:.0f} vs "
            f"{training['resident_images_per_s']:.0f} img/s), inference {inference['ratio']['median']:.3f} "
            f"({inference['predict_images_per_s']:.0f} vs {inference['forward_only_images_per_s']:.0f} img/s)"
        )
    return {"models": results}


# --------------------------------------------------------------------------------------------
# The C allocator: glibc's defaults against src.runtime.reuse_freed_memory, each in its own process


def allocator_child(
    model: str,
    image_size: int,
    batch_size: int,
    predict_batch_size: int,
    threads: int | None,
    reuse: bool,
    train_steps: int,
    predict_passes: int,
) -> dict:
    """(In a fresh process: the allocator setting is process-wide) images/s of training steps and of forward passes
    of `model` on the CPU, on random normalised batches, with or without `reuse_freed_memory`; and the minor page
    faults per training step."""
    import resource

    import torch

    from src.formats.base import HeadSpec
    from src.model import build_model
    from src.runtime import make_runtime, reuse_freed_memory

    make_runtime("cpu", threads=threads, reuse_memory=False)
    reused = reuse_freed_memory() if reuse else False
    torch.manual_seed(0)
    heads = [HeadSpec("labels", "multilabel", tuple(f"c{index}" for index in range(12)))]
    network = build_model(model, heads)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    images, targets = torch.randn(batch_size, 3, image_size, image_size), torch.rand(batch_size, 12)
    batch = torch.randn(predict_batch_size, 3, image_size, image_size)

    def train_step() -> None:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(network(images)["labels"], targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def timed(step: Callable[[], None], warm_up: int, repeats: int) -> tuple[float, int]:
        for _ in range(warm_up):  # glibc settles within a few rounds of the same sizes
            step()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        started = time.perf_counter()
        for _ in range(repeats):
            step()
        return (time.perf_counter() - started) / repeats, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults

    network.train()
    step_seconds, step_faults = timed(train_step, 6, train_steps)
    network.eval()
    with torch.no_grad():
        pass_seconds, _ = timed(lambda: network(batch), 6, predict_passes)
    return {
        "reused": reused,
        "train_images_per_s": batch_size / step_seconds,
        "predict_images_per_s": predict_batch_size / pass_seconds,
        "faults_per_train_step": step_faults / train_steps,
    }


def bench_allocator(
    config: Config, models: list[str], pairs: int, train_steps: int, predict_passes: int, log: Callable[[str], None]
) -> dict:
    """Training and inference images/s on the CPU with `reuse_freed_memory` over without it, per model: fresh processes
    in alternating order, `pairs` of them; the ratio is the median over pairs (> 1: reuse is faster)."""
    results = {}
    for name in models:
        arguments = {
            "model": name,
            "image_size": config.data.image_size,
            "batch_size": config.train.batch_size,
            "predict_batch_size": config.predict.batch_size,
            "threads": config.train.threads,
            "train_steps": train_steps,
            "predict_passes": predict_passes,
        }
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for pair in range(pairs):
            for reuse in (False, True) if pair % 2 == 0 else (True, False):
                runs[reuse].append(_run_child("allocator_child", {**arguments, "reuse": reuse}))
        rates = {
            f"{part}_{setting}": [run[f"{part}_images_per_s"] for run in runs[reuse]]
            for part in ("train", "predict")
            for setting, reuse in (("default", False), ("reuse", True))
        }
        results[name] = {
            "pairs": pairs,
            "reused": all(run["reused"] for run in runs[True]),
            "training": ratio_summary(rates, "train_reuse", "train_default"),
            "inference": ratio_summary(rates, "predict_reuse", "predict_default"),
            **{f"{key}_images_per_s": statistics.median(values) for key, values in rates.items()},
            "faults_per_train_step": {
                setting: statistics.median(run["faults_per_train_step"] for run in runs[reuse])
                for setting, reuse in (("default", False), ("reuse", True))
            },
        }
        log(
            f"  {name:<24} training x{results[name]['training']['median']:.3f}, inference "
            f"x{results[name]['inference']['median']:.3f} with freed memory reused"
        )
    return {"models": results}


# --------------------------------------------------------------------------------------------
# Thresholds on a synthetic iMet-scale OOF matrix


def imet_like_frequencies(
    n_classes: int = IMET_CLASSES,
    n_reference: int = IMET_ROWS,
    top_count: int = IMET_TOP_COUNT,
    labels_per_image: float = IMET_LABELS_PER_IMAGE,
) -> np.ndarray:
    """Positive rate of each class, most frequent first: from top_count/n_reference down to 1/n_reference.

    log(count) falls from log(top_count) to 0 as 1 - u**k with u = log(rank)/log(n_classes); k is
    solved so the rates sum to `labels_per_image` (k = 1 would be a pure Zipf law, far too light a head).
    """
    u = np.log(np.arange(1, n_classes + 1)) / math.log(max(n_classes, 2))

    def mean_labels(k: float) -> float:
        return float(np.exp(math.log(top_count) * (1 - u**k)).sum() / n_reference)

    low, high = 0.05, 64.0
    if not mean_labels(low) <= labels_per_image <= mean_labels(high):
        raise PipelineError(f"no long-tail curve gives {labels_per_image} labels per image over {n_classes} classes")
    for _ in range(80):
        middle = math.sqrt(low * high)
        low, high = (middle, high) if mean_labels(middle) < labels_per_image else (low, middle)
    return np.exp(math.log(top_count) * (1 - u**low)) / n_reference


def synthetic_labels(n_rows: int, frequencies: np.ndarray, seed: int) -> np.ndarray:
    """Bool n x c labels, each class drawn at its rate; an image with none gets one (every iMet image has labels)."""
    rng = np.random.default_rng(seed)
    labels = np.empty((n_rows, frequencies.size), dtype=bool)
    for start in range(0, n_rows, 4096):
        block = labels[start : start + 4096]
        block[:] = rng.random(block.shape, dtype=np.float32) < frequencies
    empty = np.flatnonzero(~labels.any(axis=1))
    labels[empty, rng.choice(frequencies.size, size=empty.size, p=frequencies / frequencies.sum())] = True
    return labels


def synthetic_oof(
    n_rows: int, n_classes: int = IMET_CLASSES, seed: int = 0, rows_seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(probs float32 via float16 as OOF files store them, bool targets) that look like a decent iMet model's.

    logit = logit(class rate) + N(0, 1) + separation_c * target, separation_c ~ U(1.5, 4.5): some
    classes easy, some hard, rare classes low-scored even when present. `seed` fixes the classes,
    `rows_seed` the images, so another `rows_seed` gives fresh rows of the same problem.
    """
    frequencies = imet_like_frequencies(n_classes)
    separation = np.random.default_rng(seed).uniform(1.5, 4.5, n_classes).astype(np.float32)
    prior = np.log(frequencies / (1 - frequencies)).astype(np.float32)
    targets = synthetic_labels(n_rows, frequencies, 1_000 + rows_seed)
    rng = np.random.default_rng(2_000 + rows_seed)
    probs = np.empty((n_rows, n_classes), dtype=np.float16)
    for start in range(0, n_rows, 4096):
        block = targets[start : start + 4096]
        logits = prior + rng.standard_normal(block.shape, dtype=np.float32) + separation * block
        probs[start : start + 4096] = 1 / (1 + np.exp(-logits))
    return probs.astype(np.float32), targets


def bench_thresholds(
    n_rows: int, n_classes: int, optuna_trials: int, log: Callable[[str], None], seed: int = 0
) -> dict:
    """Seconds and per-image F2 of one global threshold, exact per-class and Optuna per-class thresholds.

    `f2`: on the rows they were tuned on (what each optimizer maximises); `f2_fresh_rows`: the same
    thresholds on as many fresh rows of the same synthetic problem (how much of the gain is real).
    Raw optimizer output: the thresholds stage also shrinks rare classes toward the global threshold.
    """
    from src import thresholds as th
    from src.objectives import SamplesFbeta

    probs, targets = synthetic_oof(n_rows, n_classes, seed, rows_seed=0)
    fresh_probs, fresh_targets = synthetic_oof(n_rows, n_classes, seed, rows_seed=1)
    objective = SamplesFbeta(2.0)
    result = {
        "rows": n_rows,
        "classes": n_classes,
        "labels_per_image": float(targets.sum(axis=1).mean()),
        "classes_with_positives": int(targets.any(axis=0).sum()),
    }

    def record(name: str, thresholds, seconds: float, **extra) -> None:
        result[name] = {
            "seconds": seconds,
            "f2": th.score(probs, targets, thresholds, objective),
            "f2_fresh_rows": th.score(fresh_probs, fresh_targets, thresholds, objective),
            **extra,
        }
        log(
            f"  {name:<7} F2 {result[name]['f2']:.4f} (fresh rows {result[name]['f2_fresh_rows']:.4f}) "
            f"in {seconds:.1f}s"
        )

    started = time.perf_counter()
    value, _ = th.best_global_threshold(probs, targets, objective)
    record("global", value, time.perf_counter() - started, threshold=value)
    started = time.perf_counter()
    exact = th.exact_thresholds(probs, targets, objective)
    record("exact", exact, time.perf_counter() - started)
    log(f"  optuna: {optuna_trials} trials over {n_classes} parameters (in-memory storage)...")
    started = time.perf_counter()
    tuned, _ = th.optuna_thresholds(probs, targets, objective, optuna_trials, storage=None, seed=seed)
    record("optuna", tuned, time.perf_counter() - started, trials=optuna_trials)
    return result


# --------------------------------------------------------------------------------------------
# Child processes: folds at iMet scale, and every stage on a tiny demo


def _child_env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))


def _run_child(function: str, arguments: dict) -> dict:
    """Call `src.bench.<function>(**arguments)` in a fresh Python process; return the dict it returns."""
    code = (
        "import json, sys\nfrom src import bench\n"
        f"result = bench.{function}(**json.loads(sys.stdin.read()))\n"
        "print('\\n' + json.dumps(result))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(arguments),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=_child_env(),
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise PipelineError(f"bench child {function} failed (exit {done.returncode}): " + " | ".join(tail))
    return json.loads(done.stdout.strip().splitlines()[-1])


def folds_child(sizes: list[int], n_classes: int, n_splits: int = 5, seed: int = 0) -> dict:
    """(In a fresh process) for each row count, ascending: time make_folds on an iMet-like matrix; peak RSS after it.

    Peak RSS never falls, so with ascending sizes the figure after a size is that size's peak.
    """
    from src.data.folds import make_folds

    runs = []
    for n_rows in sorted(sizes):
        labels = synthetic_labels(n_rows, imet_like_frequencies(n_classes), seed).view(np.uint8)
        before = current_rss_mb()
        started = time.perf_counter()
        fold_of_row = make_folds(labels, n_splits, seed)
        seconds = time.perf_counter() - started
        counts = np.bincount(fold_of_row, minlength=n_splits)
        runs.append(
            {
                "rows": n_rows,
                "classes": n_classes,
                "seconds": seconds,
                "rss_before_mb": before,
                "peak_rss_mb": peak_rss_mb(),
                "matrix_mb": labels.nbytes / 2**20,
                "fold_size_spread": int(counts.max() - counts.min()),
            }
        )
        del labels
    return {"runs": runs}


def bench_folds(ladder: tuple[int, ...], full: bool, n_classes: int, log: Callable[[str], None]) -> dict:
    """make_folds seconds and peak memory on a ladder of row counts, and at 109,237 rows (measured or extrapolated)."""
    runs = _run_child("folds_child", {"sizes": list(ladder), "n_classes": n_classes})["runs"]
    if full:  # its own process, so its peak is its own
        runs += _run_child("folds_child", {"sizes": [IMET_ROWS], "n_classes": n_classes})["runs"]
    for run in runs:
        log(
            f"  {run['rows']:>7} x {n_classes}: {run['seconds']:.1f}s, peak {run['peak_rss_mb']:.0f} MB "
            f"({run['rss_before_mb']:.0f} MB before make_folds)"
        )
    # Power law through the ladder: seconds = a * rows ** b.
    exponent, intercept = np.polyfit(
        np.log([r["rows"] for r in runs[: len(ladder)]]), np.log([r["seconds"] for r in runs[: len(ladder)]]), 1
    )
    result = {
        "runs": runs,
        "scaling_exponent": float(exponent),
        "imet_seconds_extrapolated": float(math.exp(intercept) * IMET_ROWS**exponent),
    }
    if full:
        result["imet"] = runs[-1]
    return result


STAGE_RUNS = (
    ("folds", ["folds"]),
    ("train", ["train", "--fold", "all"]),
    ("oof", ["oof"]),
    ("thresholds", ["thresholds"]),
    ("submit", ["submit"]),
)

# Runs each stage as `python -m src.stage ...` and reads its peak RSS with wait4. It imports nothing
# but the standard library: exec carries the parent's peak into the child's ru_maxrss, so the parent
# of a measured process must itself be small (the bench process is not).
_STAGE_RUNNER = """
import json, os, subprocess, sys, time
spec = json.loads(sys.stdin.read())
results = {}
for name, argv, log_path in spec["runs"]:
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=spec["cwd"])
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = code = os.waitstatus_to_exitcode(status)
    results[name] = {"peak_rss_mb": usage.ru_maxrss / 1024, "seconds": time.perf_counter() - started, "exit_code": code}
    if code != 0:
        break
print(json.dumps(results))
"""


def bench_stage_memory(config: Config, workdir: Path, sizes: BenchSizes, log: Callable[[str], None]) -> dict:
    """Peak RSS of each stage, each `python -m src.stage` process on a tiny iMet demo with this config's model.

    The figure is the process's own peak, or a DataLoader worker's if larger (wait4 reports the max, not a sum).
    """
    import yaml

    from src.config import config_to_dict
    from src.demo import build_demo

    folder = workdir / "stages"
    paths = build_demo("imet", folder / "demo-imet", n_train=sizes.demo_train, n_test=sizes.demo_test)
    body = config_to_dict(config)
    body.update(
        {"competition": "bench-demo-imet", "format": "imet", "format_options": {}, "output_dir": str(folder / "out")}
    )
    body["data"].update({"root": str(paths.root), "n_folds": 2, "solution": [], "skip_unreadable": False})
    body["model"].update({"weights": None})
    body["train"].update({"epochs": 1, "early_stopping_patience": None, "tensorboard": False})
    body["thresholds"].update(
        {"optuna_trials": min(config.thresholds.optuna_trials, 20), "honest_folds": 2, "storage": None}
    )
    body["submit"].update({"checkpoint": "fold-0"})
    config_path = folder / "bench-stages.yaml"
    config_path.write_text(yaml.safe_dump(body, sort_keys=False))
    runs = [
        [
            name,
            [sys.executable, "-m", "src.stage", *argv, "--config", str(config_path), "--quiet"],
            str(folder / f"{argv[0]}.log"),
        ]
        for name, argv in STAGE_RUNS[: sizes.stages]
    ]
    done = subprocess.run(
        [sys.executable, "-c", _STAGE_RUNNER],
        input=json.dumps({"runs": runs, "cwd": str(REPO_ROOT)}),
        capture_output=True,
        text=True,
        env=_child_env(),
    )
    if done.returncode != 0:
        raise PipelineError("bench stage runner failed: " + " | ".join(done.stderr.strip().splitlines()[-3:]))
    stages = json.loads(done.stdout.strip().splitlines()[-1])
    for name, run in stages.items():
        if run["exit_code"] != 0:
            tail = " | ".join(Path(runs[[r[0] for r in runs].index(name)][2]).read_text().strip().splitlines()[-3:])
            raise PipelineError(f"stage {name} failed (exit {run['exit_code']}) in the memory run: {tail}")
        log(f"  {name:<12} peak {run['peak_rss_mb']:6.0f} MB  ({run['seconds']:.1f}s)")
    return {
        "stages": stages,
        "demo_train_images": sizes.demo_train,
        "demo_test_images": sizes.demo_test,
        "n_folds": 2,
        "epochs": 1,
    }


# --------------------------------------------------------------------------------------------
# Everything, with the goals


def machine() -> dict:
    import torch

    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": list(os.getloadavg()),
    }


DATA_PATH_GOAL = 0.95  # training and inference ratio per model, 2 CPU cores at 64 px


def goals(result: dict) -> list[dict]:
    """The issue's goals against what was measured (a quick run measures smaller sizes than the goals name)."""
    thresholds = result["thresholds"]
    # `interval`: the 95% interval of the median; a goal inside it is one this run cannot tell apart from what it measured.
    data_path = [
        {
            "goal": f"{name} {part} data-path ratio >= {DATA_PATH_GOAL}",
            "measured": ratio["median"],
            "met": ratio["median"] >= DATA_PATH_GOAL,
            "target": DATA_PATH_GOAL,
            "interval": ratio["ci95"],
        }
        for name, model in result["data_path"]["models"].items()
        for part in ("training", "inference")
        for ratio in [model[part]["ratio"]]
    ]
    return [
        *data_path,
        {
            "goal": f"exact thresholds <= 10 s ({thresholds['rows']} x {thresholds['classes']})",
            "measured": thresholds["exact"]["seconds"],
            "met": thresholds["exact"]["seconds"] <= 10.0,
        },
        {
            "goal": f"exact F2 >= Optuna F2 ({thresholds['optuna']['trials']} trials)",
            "measured": thresholds["exact"]["f2"] - thresholds["optuna"]["f2"],
            "met": thresholds["exact"]["f2"] >= thresholds["optuna"]["f2"],
        },
    ]


def run_all(
    config: Config,
    sizes: BenchSizes,
    workdir: Path,
    log: Callable[[str], None] = print,
    models: list[str] | None = None,
) -> dict:
    """Every section, in one run; the data path for each of `models` (default: the config's); returns the result
    dict (see the module docstring)."""
    started = time.perf_counter()
    workdir = Path(workdir)
    models = list(models or [config.model.name])
    result = _result_header(config, sizes, models)
    log(
        f"bench ({sizes.label}): {', '.join(models)} @{config.data.image_size}px, batch {config.train.batch_size}, "
        f"num_workers {config.train.num_workers}, load average {result['machine']['load_average'][0]:.1f} "
        f"on {result['machine']['cpus']} CPUs"
    )
    _measure_sections(config, sizes, workdir, models, result, log)
    result["machine"]["load_average_end"] = list(os.getloadavg())
    result["goals"] = goals(result)
    result["seconds"] = time.perf_counter() - started
    return result


def _result_header(config: Config, sizes: BenchSizes, models: list[str]) -> dict:
    """The config, sizes and machine of a run over `models`; returns the result dict's first keys."""
    return {
        "mode": sizes.label,
        "sizes": asdict(sizes),
        "machine": machine(),
        "setup": {
            "models": models,
            "image_size": config.data.image_size,
            "batch_size": config.train.batch_size,
            "predict_batch_size": config.predict.batch_size,
            "threads": config.train.threads,
            "num_workers": config.train.num_workers,
            "device": config.train.device,
        },
    }


def _measure_sections(
    config: Config, sizes: BenchSizes, workdir: Path, models: list[str], result: dict, log: Callable[[str], None]
) -> None:
    """Every section in turn on demo data in `workdir`; each one's figures go into `result` under its name."""
    data = demo_data(workdir, config.data.image_size, max(sizes.train_images, sizes.predict_images), log)
    _record_section(
        result,
        "data_path",
        "data path per model: training (real path vs resident batches), inference (predict_probs vs forward-only)",
        lambda: bench_data_path(config, data, sizes, models, log),
        log,
    )
    _record_section(
        result,
        "cache",
        "image cache: raw vs packed (png, jpeg, webp) on the same images, bytes on disk and images/s read back",
        lambda: bench_cache(
            data.paths, config.data.image_size, workdir, sizes.predict_repeats, sizes.data_path_seconds
        ),
        log,
    )
    allocator_models = models if sizes.allocator_all_models else models[:1]
    _record_section(
        result,
        "allocator",
        "C allocator: CPU training and inference with freed memory reused vs glibc's defaults, fresh processes",
        lambda: bench_allocator(config, allocator_models, sizes.allocator_pairs, *sizes.allocator_steps, log),
        log,
    )
    _record_section(
        result,
        "thresholds",
        f"thresholds: synthetic OOF {sizes.oof_rows} x {sizes.oof_classes}",
        lambda: bench_thresholds(sizes.oof_rows, sizes.oof_classes, sizes.optuna_trials, log),
        log,
    )
    _record_section(
        result,
        "folds",
        "folds: make_folds (MultilabelStratifiedKFold) in a fresh process",
        lambda: bench_folds(sizes.folds_ladder, sizes.folds_full, IMET_CLASSES, log),
        log,
    )
    _record_section(
        result,
        "memory",
        f"memory: {', '.join(name for name, _ in STAGE_RUNS[: sizes.stages])}, each its own process "
        f"on a {sizes.demo_train}-image demo",
        lambda: bench_stage_memory(config, workdir, sizes, log),
        log,
    )


def _record_section(
    result: dict, name: str, title: str, measure: Callable[[], dict], log: Callable[[str], None]
) -> None:
    """Logs `title`, runs `measure` and stores its dict, with the section's own seconds, in `result[name]`."""
    log(title)
    section_started = time.perf_counter()
    result[name] = measure()
    result[name]["section_seconds"] = time.perf_counter() - section_started


def summary_table(result: dict) -> str:
    """The figures as aligned text lines."""
    th, f, m = (result[key] for key in ("thresholds", "folds", "memory"))
    setup, models = result["setup"], result["data_path"]["models"]
    workers = next(iter(models.values()))["training"]["num_workers"]
    lines = [
        f"bench ({result['mode']}), {', '.join(models)} @{setup['image_size']}px, batch {setup['batch_size']}, "
        f"{setup['threads'] or result['machine']['torch_threads']} torch threads, num_workers {workers}, "
        f"load average {result['machine']['load_average'][0]:.1f}->{result['machine']['load_average_end'][0]:.1f} "
        f"on {result['machine']['cpus']} CPUs",
        "",
        *data_path_lines(models),
        "",
        *allocator_lines(result["allocator"]["models"]),
        "",
        *(cache_lines(result["cache"]) + [""] if "cache" in result else []),
        f"thresholds   {th['rows']} x {th['classes']} synthetic OOF ({th['labels_per_image']:.1f} labels/image): "
        f"per-image F2",
        "             method   F2 tuned rows   F2 fresh rows   seconds",
        *(
            f"             {name:<8} {th[name]['f2']:>13.4f}   {th[name]['f2_fresh_rows']:>13.4f}   {th[name]['seconds']:>7.1f}"
            + (f"   ({th[name]['trials']} trials)" if name == "optuna" else "")
            for name in ("global", "exact", "optuna")
        ),
        "",
        "folds        make_folds, "
        + ", ".join(f"{r['rows']} rows {r['seconds']:.1f}s / {r['peak_rss_mb']:.0f} MB" for r in f["runs"]),
        f"             seconds ~ rows^{f['scaling_exponent']:.2f}; at {IMET_ROWS} x {IMET_CLASSES}: "
        + (
            f"measured {f['imet']['seconds']:.0f}s, peak {f['imet']['peak_rss_mb']:.0f} MB"
            if "imet" in f
            else f"extrapolated ~{f['imet_seconds_extrapolated']:.0f}s (not measured in this mode)"
        ),
        "",
        "memory       peak RSS per stage (python -m src.stage, own process): "
        + ", ".join(f"{name} {run['peak_rss_mb']:.0f} MB" for name, run in m["stages"].items()),
        "",
    ]
    if len(m["stages"]) < len(STAGE_RUNS):
        lines.insert(-1, f"             (this mode measures the first {len(m['stages'])} of {len(STAGE_RUNS)} stages)")
    lines += [goal_line(goal) for goal in result["goals"]]
    if result["mode"] == "quick":
        lines.append(
            "quick mode: smaller sizes than the goals name (see sizes in the JSON); run without --quick for the figures"
        )
    return "\n".join(lines)


def data_path_lines(models: dict) -> list[str]:
    """One line per model: training and inference images/s and ratios (median [95% interval]), flip TTA."""
    lines = [
        f"{'data path':<24} {'training: real / resident img/s':<32} {'ratio [95% interval]':<21} "
        f"{'inference: predict / forward':<30} {'ratio [95% interval]':<21} flip TTA (0.5 = free)"
    ]
    for name, model in models.items():
        t, i = model["training"], model["inference"]
        lines.append(
            f"{name:<24} {t['real_images_per_s']:>9.0f} / {t['resident_images_per_s']:<19.0f} {_ratio(t['ratio'])}  "
            f"{i['predict_images_per_s']:>9.0f} / {i['forward_only_images_per_s']:<17.0f} {_ratio(i['ratio'])}  "
            f"{_ratio(i['tta_ratio'])}"
        )
    return lines


def allocator_lines(models: dict) -> list[str]:
    """One line per model: CPU images/s with freed memory reused over glibc's defaults, training and inference."""
    lines = [
        f"{'C allocator (CPU)':<24} training: reuse / default img/s  ratio                 "
        f"inference: reuse / default    ratio                 page faults per step"
    ]
    for name, run in models.items():
        faults = run["faults_per_train_step"]
        lines.append(
            f"{name:<24} {run['train_reuse_images_per_s']:>9.0f} / {run['train_default_images_per_s']:<19.0f} "
            f"{_ratio(run['training'])}  {run['predict_reuse_images_per_s']:>9.0f} / "
            f"{run['predict_default_images_per_s']:<17.0f} {_ratio(run['inference'])}  "
            f"{faults['default']:.0f} -> {faults['reuse']:.0f}" + ("" if run["reused"] else "  (not glibc: no effect)")
        )
    return lines


def _ratio(ratio: dict) -> str:
    low, high = ratio["ci95"]
    return f"{ratio['median']:.3f} [{low:.3f}-{high:.3f}]"


def goal_line(goal: dict) -> str:
    """'goal: ...: met (measured x)', with the 95% interval of the median where there is one, and whether the goal
    lies inside it (then this run does not tell the two apart)."""
    line = f"goal: {goal['goal']}: {'met' if goal['met'] else 'NOT met'} (measured {goal['measured']:.3f}"
    if "interval" not in goal:
        return line + ")"
    low, high = goal["interval"]
    inside = low <= goal["target"] <= high
    return line + f", 95% interval {low:.3f}-{high:.3f}" + (": the goal is inside it)" if inside else ")")
