"""Runtime choices that depend on the machine: DataLoader workers never exceed the usable cores."""
from __future__ import annotations

import os

import torch

from src.predict import make_eval_loader
from src.runtime import loader_workers, make_runtime


def test_loader_workers_are_capped_at_the_usable_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert [loader_workers(n) for n in (0, 1, 2, 8)] == [0, 1, 2, 2]
    loader = make_eval_loader(torch.utils.data.TensorDataset(torch.zeros(4, 1)), 2, 8, make_runtime("cpu"))
    assert loader.num_workers == 2 and isinstance(loader.sampler, torch.utils.data.SequentialSampler)
