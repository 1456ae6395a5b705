"""Where and how tensors run: device, mixed precision, memory format, threads, the C allocator, seeds."""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from src.errors import PipelineError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None = full precision
    channels_last: bool

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def needs_grad_scaler(self) -> bool:
        return self.amp_dtype == torch.float16

    def to_device(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images


# glibc's mallopt parameters (malloc.h) and the values `reuse_freed_memory` sets.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES = 256 * 2**20, 512 * 2**20
_freed_memory_reused = False


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory for the next tensor instead of handing it back to the OS; True when in effect.

    By default every CPU tensor above glibc's (adaptive, at most 32 MB) mmap threshold is a fresh mapping, and
    a freed heap top is trimmed, so each batch's activations and inputs page-fault in anew: about 10,000
    minor faults per training step of a small model at 64 px, measured. With allocations up to 256 MB served
    from the heap and up to 512 MB of free heap kept, they stop (`bench`: the 'C allocator' line). Once per
    process, which it changes as a whole (DataLoader workers forked later inherit it); a no-op and False off
    glibc (macOS, Windows, musl).
    """
    global _freed_memory_reused
    if _freed_memory_reused or not sys.platform.startswith("linux"):
        return _freed_memory_reused
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _freed_memory_reused = (
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    )
    return _freed_memory_reused


def make_runtime(
    device: str = "auto",
    amp: bool = True,
    channels_last: bool = True,
    threads: int | None = None,
    local_rank: int = 0,
    inference: bool = False,
    reuse_memory: bool = True,
) -> Runtime:
    """CUDA (with AMP: bf16 where supported, else fp16; channels_last) when available, else CPU fp32.
    `reuse_memory`: `reuse_freed_memory` (process-wide, and not undone by a later call without it)."""
    if threads:
        torch.set_num_threads(threads)
    if reuse_memory:
        reuse_freed_memory()
    if device == "cuda" and not torch.cuda.is_available():
        raise PipelineError("config train.device: cuda requested but no CUDA device is visible; use device=auto or cpu")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if not use_cuda:
        return Runtime(torch.device("cpu"), None, False)
    check_gpu_supported(local_rank)
    # Autotuned kernels speed training; inference stays deterministic so kernel and submit agree bit for bit.
    torch.backends.cudnn.benchmark = not inference
    amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if amp else None
    return Runtime(torch.device("cuda", local_rank), amp_dtype, channels_last)


def gpu_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether torch built for `arch_list` (torch.cuda.get_arch_list(): 'sm_75', 'compute_90', ...) runs on a GPU of
    compute `capability`: a cubin of the same major version at or below its minor, or PTX at or below it (JIT)."""
    major, minor = capability
    for arch in arch_list:
        kind, _, number = arch.partition("_")
        if not number.isdigit() or len(number) < 2:
            continue
        built = (int(number[:-1]), int(number[-1]))
        if (kind == "sm" and built[0] == major and built[1] <= minor) or (kind == "compute" and built <= capability):
            return True
    return False


def check_gpu_supported(index: int = 0) -> None:
    """Stop in one line, before any work, when the installed torch has no kernels for this GPU (e.g. Kaggle's P100,
    sm_60, under a torch built from sm_70 on: its first CUDA operation would fail)."""
    capability, arch_list = torch.cuda.get_device_capability(index), torch.cuda.get_arch_list()
    if arch_list and not gpu_supported(capability, arch_list):
        name = torch.cuda.get_device_name(index)
        raise PipelineError(
            f"GPU {name} (compute capability {capability[0]}.{capability[1]}) is not supported by the installed torch "
            f"{torch.__version__} (built for {', '.join(arch_list)}); choose another accelerator (on Kaggle: "
            "'GPU T4 x2' instead of 'GPU P100') or train on the CPU with train.device=cpu"
        )


def runtime_from_config(train_config, local_rank: int = 0, inference: bool = False) -> Runtime:
    """The Runtime a config's `train` section asks for (device, AMP, channels_last, threads)."""
    tc = train_config
    return make_runtime(
        tc.device,
        tc.amp,
        tc.channels_last,
        tc.threads,
        local_rank,
        inference=inference,
        reuse_memory=tc.reuse_freed_memory,
    )


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def loader_workers(requested: int | str, runtime: Runtime | None = None) -> int:
    """DataLoader worker processes. "auto": min(cores - 1, 8) on CUDA (the CPU only feeds the GPU), 0 on CPU
    (the model's threads already use every core; the data path runs between its steps, about 2-5% of the
    time). A number is taken as configured, but never more than the usable cores (a config written for a
    16-core GPU box then runs on a 2-core laptop without oversubscribing it)."""
    cores = usable_cores()
    if requested == "auto":
        return min(cores - 1, 8) if runtime is not None and runtime.on_cuda else 0
    return min(int(requested), cores)


def loader_options(
    runtime: Runtime,
    num_workers: int | str = "auto",
    persistent_workers: bool | None = None,
    prefetch_factor: int | None = None,
) -> dict:
    """DataLoader keyword arguments for workers: their number (`loader_workers`), persistent across epochs
    unless told otherwise (no re-spawn per epoch), and about 8 batches queued in all (at least 2 per worker)."""
    workers = loader_workers(num_workers, runtime)
    if workers == 0:
        return {"num_workers": 0}
    return {
        "num_workers": workers,
        "persistent_workers": True if persistent_workers is None else persistent_workers,
        "prefetch_factor": prefetch_factor or max(2, 8 // workers),
    }


class DeviceLoader:
    """Batches of `loader` ((uint8 images [B, H, W, C], {head: targets}, rows)) as model input on the device:
    images float32, normalised by `normalize` and in the runtime's memory format, targets on the device.

    On CUDA (like timm's PrefetchLoader) the next batch is copied (non-blocking, from pinned memory) and
    normalised on a side stream while the current one computes; on CPU each batch is prepared when asked for.
    """

    def __init__(self, loader, runtime: Runtime, normalize: Callable[[torch.Tensor, bool], torch.Tensor]):
        self.loader, self.runtime, self.normalize = loader, runtime, normalize

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def dataset(self):
        return self.loader.dataset

    def prepare(self, batch):
        """One batch as the model takes it, on the device (rows stay on the CPU)."""
        images, targets, rows = batch
        device = self.runtime.device
        images = self.normalize(images.to(device, non_blocking=True), self.runtime.channels_last)
        return images, {name: value.to(device, non_blocking=True) for name, value in targets.items()}, rows

    def __iter__(self):
        if not self.runtime.on_cuda:
            yield from (self.prepare(batch) for batch in self.loader)
            return
        side = torch.cuda.Stream(self.runtime.device)
        main = torch.cuda.current_stream(self.runtime.device)
        ready = None
        for batch in self.loader:
            with torch.cuda.stream(side):
                upcoming = self.prepare(batch)
            if ready is not None:
                yield ready
            main.wait_stream(side)
            for tensor in [upcoming[0], *upcoming[1].values()]:
                tensor.record_stream(main)  # made on the side stream, used on the main one: not reused too early
            ready = upcoming
        if ready is not None:
            yield ready


def peak_memory_mb(runtime: Runtime) -> float:
    """Peak memory of this process: CUDA allocator peak on GPU, resident set size on CPU."""
    if runtime.on_cuda:
        return torch.cuda.max_memory_allocated(runtime.device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def rng_state() -> dict:
    """All global RNG states, as types `torch.load(weights_only=True)` accepts (tensors, ints, strings)."""
    name, keys, position, has_gauss, cached_gauss = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in internal.tolist()), gauss))
    name, keys, position, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
