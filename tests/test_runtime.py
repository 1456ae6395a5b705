"""Runtime choices that depend on the machine: DataLoader workers follow the usable cores and the device."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import src.runtime as runtime_module
from src.data.dataset import CachedImageDataset
from src.data.transforms import build_transform
from src.errors import PipelineError
from src.predict_loop import make_eval_loader
from src.runtime import Runtime, loader_options, loader_workers, make_runtime

CPU = make_runtime("cpu")
CUDA = Runtime(torch.device("cuda", 0), torch.bfloat16, True)  # only its device type is read here: no GPU needed


def two_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)


def test_loader_workers_are_capped_at_the_usable_cores(monkeypatch):
    two_cores(monkeypatch)
    assert [loader_workers(n) for n in (0, 1, 2, 8)] == [0, 1, 2, 2]
    dataset = CachedImageDataset(
        np.zeros((4, 2, 2, 3), np.uint8),
        np.arange(4),
        None,
        build_transform([], 2, (0.5,) * 3, (0.5,) * 3, "augment.eval"),
    )
    loader = make_eval_loader(dataset, 2, 8, CPU)
    assert loader.loader.num_workers == 2 and loader.loader.persistent_workers


def test_auto_workers_feed_a_gpu_and_leave_a_cpu_to_the_model(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert loader_workers("auto", CPU) == 0 and loader_workers("auto", CUDA) == 8
    two_cores(monkeypatch)
    assert loader_workers("auto", CUDA) == 1 and loader_workers("auto") == 0


def test_loader_options_persist_workers_and_queue_about_eight_batches(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert loader_options(CPU) == {"num_workers": 0}
    assert loader_options(CUDA) == {"num_workers": 8, "persistent_workers": True, "prefetch_factor": 2}
    assert loader_options(CPU, 2) == {"num_workers": 2, "persistent_workers": True, "prefetch_factor": 4}
    # a configured value wins
    assert loader_options(CUDA, 3, persistent_workers=False, prefetch_factor=6) == {
        "num_workers": 3,
        "persistent_workers": False,
        "prefetch_factor": 6,
    }


# --- the C allocator: freed tensors' memory is reused, not page-faulted in again ---------------------------------

FAULTS_CHILD = """
import resource, sys
import torch
from src.runtime import reuse_freed_memory
reused = reuse_freed_memory() if sys.argv[1] == "reuse" else False
def fresh_tensor():  # 64 MB, written, then freed: above glibc's largest adaptive mmap threshold (32 MB)
    torch.empty(16 * 2**20).fill_(1.0)
for _ in range(8):  # glibc settles within a few
    fresh_tensor()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    fresh_tensor()
print(reused, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.slow
def test_reused_memory_stops_a_fresh_tensor_from_page_faulting_in_again():
    def faults_per_tensor(mode: str) -> tuple[str, float]:
        done = subprocess.run(
            [sys.executable, "-c", FAULTS_CHILD, mode],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        reused, faults = done.stdout.split()
        return reused, float(faults)

    default, reused = faults_per_tensor("default"), faults_per_tensor("reuse")
    pages = 64 * 2**20 / os.sysconf("SC_PAGE_SIZE")
    assert default[0] == "False" and default[1] > pages / 2  # glibc maps and unmaps each one: every page faults
    assert reused[0] == "True" and reused[1] < pages / 100


def test_the_config_switch_reaches_the_allocator(monkeypatch):
    from src.config import TrainConfig

    calls = []
    monkeypatch.setattr(runtime_module, "reuse_freed_memory", lambda: calls.append(1) or True)
    runtime_module.runtime_from_config(TrainConfig(device="cpu", reuse_freed_memory=False))
    assert calls == []
    runtime_module.runtime_from_config(TrainConfig(device="cpu"))
    assert calls == [1]


@pytest.mark.parametrize(
    ("capability", "arch_list", "supported"),
    [
        ((6, 0), ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90"], False),  # Kaggle's P100 under a current torch
        ((7, 5), ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90"], True),  # a T4
        ((8, 9), ["sm_80", "sm_86", "sm_90"], True),  # same major, a lower minor's cubin runs
        ((12, 0), ["sm_80", "sm_90", "compute_90"], True),  # newer than every cubin: PTX is compiled at load
        ((12, 0), ["sm_80", "sm_90"], False),
        ((6, 0), ["sm_50", "sm_60", "sm_70"], True),
    ],
)
def test_gpu_supported_follows_cuda_compatibility(capability, arch_list, supported):
    assert runtime_module.gpu_supported(capability, arch_list) is supported


def test_an_unsupported_gpu_stops_in_one_line_before_any_work(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (6, 0))
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_70", "sm_75", "sm_80"])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Tesla P100-PCIE-16GB")
    with pytest.raises(PipelineError) as error:
        runtime_module.make_runtime("auto", reuse_memory=False)
    message = str(error.value)
    assert "\n" not in message and message.startswith(
        "GPU Tesla P100-PCIE-16GB (compute capability 6.0) is not supported"
    )
    assert "built for sm_70, sm_75, sm_80" in message and "'GPU T4 x2' instead of 'GPU P100'" in message
