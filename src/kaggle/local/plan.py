"""A plan before a push: what the runs a training kernel is asked for will cost on a named machine.

For the config and a machine (a Kaggle accelerator name, or `this` machine) it estimates the image cache's disk size
(raw uint8 = images x size^2 x 3 bytes; packed at PACKED_BYTES_PER_PIXEL), the RAM that cache wants, the time of an
epoch and of a run, the sessions the runs need within `kaggle.session_timeout_s` (and `train.time_budget_s`), and the
GPU hours against what `kaggle quota` says is left. Throughput (training images/s on one GPU): `kaggle.images_per_s`
when set, a short measured run on `this` machine, scripts/gpu_check.py's figures when they were measured on the
machine's GPU, else TRAIN_IMAGES_PER_S_224 below. It says plainly what will not fit and what to change.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from src.artifacts import EPOCHS_CSV, RUN_SUMMARY, Experiment, fold_run_name
from src.config import REFUSED_ACCELERATORS
from src.errors import PipelineError

GB = 1e9
KAGGLE_SESSION_S = 12 * 3600  # Kaggle's limit for a GPU session (kaggle.com/docs/notebooks)
# JPEG-like packing at about 2 bits per pixel: "indistinguishable from the original" in G. K. Wallace, "The JPEG still
# picture compression standard", Communications of the ACM 34(4), 1991 (1.5-2 bits/pixel); 2 bits = 0.25 bytes.
PACKED_BYTES_PER_PIXEL = 0.25
# A training step (forward + backward) costs about 3 forward passes; validation is forward only.
TRAIN_TO_INFERENCE = 3.0


@dataclass(frozen=True)
class Machine:
    """What a session gets: GPUs, RAM, the saved disk (/kaggle/working), the session's length, or why it is refused."""

    title: str
    gpus: int
    ram_gb: float
    disk_gb: float
    refused: str | None = None


MACHINES = {
    "NvidiaTeslaT4": Machine("Kaggle GPU T4 x2", 2, 29.0, 20.0),
    "NvidiaTeslaP100": Machine("Kaggle GPU P100", 1, 29.0, 20.0, REFUSED_ACCELERATORS["NvidiaTeslaP100"]),
}
ALIASES = {"t4x2": "NvidiaTeslaT4", "t4": "NvidiaTeslaT4", "p100": "NvidiaTeslaP100"}
THIS = "this"

# Training images/s on ONE GPU at 224 px, {amp: rate}, for model names whose timm architecture is in the table.
# T4: NVIDIA DeepLearningExamples, PyTorch ResNet50 v1.5 README, "Inference performance: NVIDIA T4" at batch 128:
# 1190 img/s mixed precision, 426 img/s FP32, divided by TRAIN_TO_INFERENCE. P100 (no NVIDIA PyTorch figure): the same
# README's V100 16GB FP32 training, 367 img/s, times the FP32 peaks' ratio 9.3/15.7 TFLOPS; no tensor cores, so AMP
# gains nothing. Another size scales by (224/size)^2 (the work is proportional to the pixels).
TRAIN_IMAGES_PER_S_224 = {
    ("NvidiaTeslaT4", "resnet50"): {True: 397.0, False: 142.0},
    ("NvidiaTeslaP100", "resnet50"): {True: 217.0, False: 217.0},
}
THROUGHPUT_SOURCE = (
    "NVIDIA DeepLearningExamples ResNet50 v1.5 (PyTorch) README, scaled as src/kaggle/local/plan.py says"
)


@dataclass
class Plan:
    """The estimate; `problems` are what will not fit (each with what to change), `notes` what the figures rest on."""

    machine: str
    title: str
    runs: list[str]
    epochs_left: dict[str, int]
    n_images: int
    image_size: int
    raw_cache_gb: float
    packed_cache_gb: float
    images_per_s: float | None  # None: no figure for this model and machine (throughput_source says why)
    throughput_source: str
    epoch_s: float | None
    session_s: float
    sessions: int | None
    gpu_hours: float | None
    quota_left_h: float | None = None
    quota_note: str = ""
    problems: list[str] = field(default_factory=list)  # what will not fit the machine or a session
    quota_problem: str | None = None  # more GPU hours than the week has left
    notes: list[str] = field(default_factory=list)
    shipped_cache: str = ""  # the image-cache dataset `kernel cache` made, in words ("": the kernel builds its cache)

    @property
    def next_session_h(self) -> float:
        """The GPU hours the next session may spend: a whole session, or what is left of the work when less."""
        return self.session_s / 3600 if self.gpu_hours is None else min(self.session_s / 3600, self.gpu_hours)

    @property
    def all_problems(self) -> list[str]:
        return [*self.problems, *([self.quota_problem] if self.quota_problem else [])]

    @property
    def hours_name(self) -> str:
        return "machine hours" if self.machine == THIS else "GPU hours"

    def summary(self) -> str:
        """One line: what, where, how long, how many sessions and GPU hours, and whether it fits."""
        quota = f", {self.quota_left_h:.1f} h left this week" if self.quota_left_h is not None else ""
        verdict = "fits" if not self.all_problems else f"WILL NOT FIT: {self.all_problems[0]}"
        timing = (
            f"{_hours(self.epoch_s)}/epoch at {self.images_per_s:.0f} images/s, {self.sessions} session(s), "
            f"{self.gpu_hours:.1f} {self.hours_name}"
            if self.epoch_s is not None
            else "time unknown (no throughput figure)"
        )
        return (
            f"plan on {self.title}: {len(self.runs)} run(s), {sum(self.epochs_left.values())} epoch(s) left, "
            f"{timing}{quota}; raw cache {_size(self.raw_cache_gb)}; {verdict}"
        )

    def lines(self) -> list[str]:
        """The whole plan, a line per figure, then what does not fit."""
        runs = ", ".join(f"{run} ({self.epochs_left[run]} epochs left)" for run in self.runs)
        return [
            f"plan for {self.title} ({self.machine}):",
            f"  runs: {runs}",
            f"  image cache: {self.n_images} images at {self.image_size} px: raw {_size(self.raw_cache_gb)}, packed "
            f"about {_size(self.packed_cache_gb)} ({PACKED_BYTES_PER_PIXEL} bytes/pixel, JPEG at ~2 bits/pixel: "
            "Wallace 1991)",
            *([f"  image cache shipped: {self.shipped_cache}"] if self.shipped_cache else []),
            f"  RAM: the memory-mapped raw cache wants {_size(self.raw_cache_gb)} of page cache",
            *self._timing_lines(),
            *(f"  note: {note}" for note in self.notes),
            *(f"  WILL NOT FIT: {problem}" for problem in self.all_problems),
        ]

    def _timing_lines(self) -> list[str]:
        if self.images_per_s is None or self.epoch_s is None:
            return [f"  throughput: unknown: {self.throughput_source}", "  time, sessions, hours: unknown"]
        longest = self.epoch_s * max(self.epochs_left.values(), default=0)
        sessions = (
            f"  sessions: {self.sessions} of at most {_hours(self.session_s)} each (one run per session)"
            if self.machine != THIS
            else "  sessions: none here (no session limit on this machine)"
        )
        return [
            f"  throughput: {self.images_per_s:.1f} training images/s ({self.throughput_source})",
            f"  time: {_hours(self.epoch_s)} per epoch, {_hours(longest)} for the longest run",
            sessions,
            f"  {self.hours_name}: {self.gpu_hours:.1f}"
            + (f" of {self.quota_left_h:.1f} left this week" if self.quota_left_h is not None else "")
            + (f" ({self.quota_note})" if self.quota_note else ""),
        ]


def _size(gigabytes: float) -> str:
    return f"{gigabytes:.2f} GB" if gigabytes >= 1 else f"{gigabytes * 1000:.1f} MB"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def machine_key(name: str) -> str:
    """A machine name as given (an accelerator, an alias t4x2 / p100, or `this`) -> its key; unknown: one line."""
    key = ALIASES.get(name.lower(), name) if name.lower() != THIS else THIS
    if key != THIS and key not in MACHINES:
        known = ", ".join([*MACHINES, *ALIASES, THIS])
        raise PipelineError(f"--machine {name}: not a machine the plan knows; one of {known}")
    return key


def requested_runs(exp: Experiment, fold: str | None, full: bool) -> list[str]:
    """The run folder names `kernel train --fold/--full` asks for."""
    if full:
        return [fold_run_name(None)]
    if fold == "all":
        return [fold_run_name(k) for k in range(exp.config.data.n_folds)]
    if fold is None or not str(fold).isdigit():
        raise PipelineError(f"--fold {fold}: give a fold number, all, or --full")
    return [fold_run_name(int(fold))]


def epochs_left(exp: Experiment, run: str) -> int:
    """Epochs the local run folder `run` still needs: all of them without one, 0 once it finished (summary.json)."""
    run_dir = exp.oof_dir / run
    if (run_dir / RUN_SUMMARY).is_file():
        return 0
    csv = run_dir / EPOCHS_CSV
    done = max(0, len(csv.read_text().strip().splitlines()) - 1) if csv.is_file() else 0
    return max(0, exp.config.train.epochs - done)


def make_plan(
    exp: Experiment,
    runs: list[str],
    machine: str,
    measure: Callable[[Experiment], float] | None = None,
    quota: Callable[[], object] | None = None,
) -> Plan:
    """The plan for `runs` on `machine` (a key of MACHINES or `this`); `measure` times this machine (images/s),
    `quota` reads `kaggle quota` (a cli.GpuQuota); either may be None to leave it out."""
    config, key = exp.config, machine_key(machine)
    n_images, size = len(exp.fmt.read_train()), config.data.source_size  # the cached side (data.cache_size)
    k = config.data.n_folds
    rate, source = _throughput(exp, key, measure)
    processes = kernel_processes(exp, key)  # the table and gpu_check figures are one GPU's; images_per_s the kernel's
    if rate is not None and processes > 1 and key != THIS and config.kaggle.images_per_s is None:
        rate, source = rate * processes * DDP_EFFICIENCY, f"{source}; x {processes} DDP processes x {DDP_EFFICIENCY}"
    full = runs == [fold_run_name(None)]
    train_images = config.train.sampler.samples_per_epoch or (n_images if full else n_images * (k - 1) / k)
    epoch_s = (
        None if rate is None else train_images / rate + (0 if full else n_images / k / (rate * TRAIN_TO_INFERENCE))
    )
    session_s = float(config.kaggle.session_timeout_s or KAGGLE_SESSION_S)
    usable_s = min(session_s, config.train.time_budget_s or session_s)
    left = {run: epochs_left(exp, run) for run in runs}
    per_session = None if epoch_s is None else _epochs_per_session(epoch_s, session_s, usable_s)
    sessions = (
        None if per_session is None else sum(math.ceil(n / per_session) for n in left.values() if n and per_session)
    )
    plan = Plan(
        key,
        "this machine" if key == THIS else MACHINES[key].title,
        runs,
        left,
        n_images,
        size,
        n_images * size * size * 3 / GB,
        n_images * size * size * PACKED_BYTES_PER_PIXEL / GB,
        rate,
        source,
        epoch_s,
        session_s,
        sessions,
        None if epoch_s is None else sum(left.values()) * epoch_s / 3600,
    )
    plan.shipped_cache = _shipped_cache(exp)
    _check_fit(plan, exp, per_session)
    if key != THIS and quota is not None:
        _add_quota(plan, quota)
    return plan


# Two GPUs train a ResNet-50 about 1.8-1.9x as fast as one under DDP (NVIDIA DeepLearningExamples' multi-GPU training
# tables scale about that well); 0.9 per GPU is assumed, not measured here.
DDP_EFFICIENCY = 0.9


def kernel_processes(exp: Experiment, key: str) -> int:
    """The training kernel's processes on machine `key`: kaggle.train_processes, else one per GPU (1 here)."""
    if exp.config.kaggle.train_processes:
        return exp.config.kaggle.train_processes
    machine = MACHINES.get(key)
    return machine.gpus if machine is not None else 1


def _epochs_per_session(epoch_s: float, session_s: float, usable_s: float) -> int:
    """Whole epochs a session trains: as many as the time budget allows, at least the one that starts it (the budget
    is judged after an epoch), none when one epoch outlasts the session itself (Kaggle stops it)."""
    if epoch_s > session_s:
        return 0
    return max(1, math.floor(usable_s / epoch_s)) if epoch_s > 0 else 1


def _throughput(exp: Experiment, key: str, measure: Callable[[Experiment], float] | None) -> tuple[float | None, str]:
    """(training images/s of the kernel: one process, one GPU, where the figure came from); (None, what to do) when
    there is no figure for the model on that machine."""
    config = exp.config
    if config.kaggle.images_per_s is not None:
        return config.kaggle.images_per_s, "kaggle.images_per_s in the config"
    if key == THIS:
        if measure is None:
            raise PipelineError("the plan for this machine needs a measured run: none was given")
        return measure(exp), f"measured here: a short training run of {config.model.name}"
    arch = config.model.name.split(".")[0]
    measured = gpu_check_rate(exp, key, arch)
    if measured is not None:
        return measured
    rates = TRAIN_IMAGES_PER_S_224.get((key, arch))
    if rates is None:
        known = ", ".join(sorted({name for machine, name in TRAIN_IMAGES_PER_S_224 if machine == key}))
        return None, (
            f"no throughput figure for {arch} on {key} (the table has {known}): measure it on such a GPU "
            f"(python scripts/gpu_check.py, or `kernel train --plan --machine this` there) and set "
            f"kaggle.images_per_s in {exp.config_path}"
        )
    rate = rates[config.train.amp] * (224 / config.data.image_size) ** 2
    return rate, f"table: {arch} on {key} at 224 px, AMP {'on' if config.train.amp else 'off'}, scaled to " + (
        f"{config.data.image_size} px; {THROUGHPUT_SOURCE}"
    )


GPU_NAMES = {"T4": "NvidiaTeslaT4", "P100": "NvidiaTeslaP100"}  # a part of torch.cuda.get_device_name -> machine


def gpu_check_rate(exp: Experiment, key: str, arch: str) -> tuple[float, str] | None:
    """(images/s, source) from scripts/gpu_check.py's figures when they were measured on `key`'s GPU for `arch`: its
    channels_last training rate with AMP (or fp32, as the config trains), scaled to the config's size; else None."""
    import json

    path = exp.gpu_check_path
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        gpu, sizes, variants = (
            result["machine"]["cuda"] or "",
            result["sizes"],
            result["parts"]["model_speed"]["variants"],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if sizes.get("model") != arch or not any(part in gpu and GPU_NAMES[part] == key for part in GPU_NAMES):
        return None
    precisions = ("bf16", "fp16") if exp.config.train.amp else ("fp32",)
    for name, row in variants.items():
        if name.split(" ")[0] in precisions and name.endswith(" channels_last") and "train_images_per_s" in row:
            rate = row["train_images_per_s"] * (sizes["image_size"] / exp.config.data.image_size) ** 2
            return rate, f"{path}: measured on {gpu} ({name}, {sizes['image_size']} px), scaled to the config's size"
    return None


def _check_fit(plan: Plan, exp: Experiment, per_session: int | None) -> None:
    """What will not fit on the machine, each with what to change."""
    config, machine = exp.config, MACHINES.get(plan.machine)
    if machine is not None and machine.refused:
        plan.problems.append(f"{plan.machine}: {machine.refused}")
    if machine is not None and machine.gpus > 1:
        processes = kernel_processes(exp, plan.machine)
        plan.notes.append(
            f"the kernel trains in {processes} DDP process(es) on the {machine.gpus} GPUs (kaggle.train_processes)"
        )
    _check_cache_fit(plan, config.data, machine)
    if machine is None or plan.epoch_s is None or per_session is None:  # no session limit here, or no timing
        return
    if any(plan.epochs_left.values()) and per_session == 0:
        plan.problems.append(
            f"one epoch ({_hours(plan.epoch_s)}) is longer than a session's {_hours(plan.session_s)} "
            "(kaggle.session_timeout_s; Kaggle's limit 12 h): lower data.image_size or "
            "train.sampler.samples_per_epoch"
        )
    if config.train.time_budget_s is None and plan.sessions > len([n for n in plan.epochs_left.values() if n]):
        plan.notes.append(
            "train.time_budget_s is not set: a session cut off by Kaggle loses its epoch in progress; set it "
            f"about one epoch below the session ({plan.session_s - plan.epoch_s:.0f} s)"
        )


def _check_cache_fit(plan: Plan, data, machine) -> None:
    """Whether the training images' cache fits the session's disk (and the raw one its RAM), unless shipped."""
    if plan.shipped_cache or machine is None:  # shipped: read-only from a dataset, no cache in the session
        return
    packed = _packed_cache_chosen(data, plan.raw_cache_gb, machine)
    if packed and plan.packed_cache_gb > machine.disk_gb:
        plan.problems.append(
            f"even the packed image cache (about {plan.packed_cache_gb:.1f} GB) is larger than the session's "
            f"{machine.disk_gb:.0f} GB disk: lower data.cache_size or data.cache_quality"
        )
    elif not packed and plan.raw_cache_gb > machine.disk_gb:
        fits = int(math.sqrt(machine.disk_gb * GB * 0.9 / (plan.n_images * 3)))
        plan.problems.append(
            f"the raw image cache ({plan.raw_cache_gb:.1f} GB) is larger than the session's {machine.disk_gb:.0f} GB "
            f"disk (/kaggle/working): lower data.cache_size (or data.image_size) to {fits} px or less, or set "
            f"data.cache: packed (about {plan.packed_cache_gb:.1f} GB)"
        )
    if not packed and plan.raw_cache_gb > machine.ram_gb:
        plan.notes.append(
            f"the raw cache ({plan.raw_cache_gb:.1f} GB) exceeds the {machine.ram_gb:.0f} GB of RAM: every epoch "
            "reads part of it from disk"
        )


def _shipped_cache(exp: Experiment) -> str:
    """The image-cache dataset `kernel cache` made for this config, in words ("" when there is none)."""
    from src.data.cache import size_on_disk
    from src.data.prebuilt import SOURCE_FILE
    from src.kaggle.local.image_cache_dataset import image_cache_folder

    folder = image_cache_folder(exp)
    if not (folder / SOURCE_FILE).is_file():
        return ""
    size = size_on_disk(folder) / GB
    return (
        f"{folder} ({_size(size)}), attached by `kernel train`: read in place from /kaggle/input, so nothing is "
        "decoded or written to the session's disk for the training images"
    )


def _packed_cache_chosen(data, raw_gb: float, machine) -> bool:
    """Whether the run's image cache is the packed one: data.cache says so, or `auto` finds that raw does not fit
    (the cache's own rule, with the session's disk as the free space; none known here: the budget alone)."""
    from src.data.cache import raw_fits

    if data.cache != "auto":
        return data.cache == "packed"
    free = machine.disk_gb * GB if machine is not None else math.inf
    return not raw_fits(raw_gb * GB, free, data.cache_disk_budget_gb)


def _add_quota(plan: Plan, quota: Callable[[], object]) -> None:
    """Compare the GPU hours with `kaggle quota`; no answer is a note, not a failure."""
    try:
        found = quota()
    except PipelineError as error:
        plan.quota_note = f"quota unknown: {error}"
        return
    plan.quota_left_h, plan.quota_note = found.left_h, f"refreshes {found.refresh_at}" if found.refresh_at else ""
    if plan.gpu_hours is not None and plan.gpu_hours > found.left_h:
        plan.quota_problem = (
            f"the runs need {plan.gpu_hours:.1f} GPU hours, {found.left_h:.1f} are left this week: train fewer "
            "folds now (--fold K) and the rest after the quota refreshes"
            + (f" ({found.refresh_at})" if found.refresh_at else "")
        )


def measure_images_per_s(exp: Experiment, steps: int | None = None, log: Callable[[str], None] = print) -> float:
    """Training images/s of the config's model at its image size on this machine: a few forward + backward steps on
    random images (fresh weights, the runtime the config asks for), after one warm-up step."""
    import torch

    from src.bench import bench_runtime, fresh_model

    config = exp.config
    runtime = bench_runtime(config)
    steps = steps or (20 if runtime.on_cuda else 3)
    batch = min(config.train.batch_size, 32 if runtime.on_cuda else 8)
    model = fresh_model(config, exp.fmt.heads(), runtime)
    images = runtime.to_device(torch.randint(0, 256, (batch, 3, config.data.image_size, config.data.image_size)))
    images = images.float() / 255 if not images.is_floating_point() else images
    log(f"plan: timing {steps} training steps of {config.model.name} at {config.data.image_size} px, batch {batch}")

    def step() -> None:
        with runtime.autocast():
            loss = sum(output.float().mean() for output in model(images).values())
        loss.backward()
        if runtime.on_cuda:
            torch.cuda.synchronize()

    step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - started)
