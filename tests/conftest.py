"""Shared test setup: the repo root on sys.path, offline hub, small thread counts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI (CI=true) replays the same examples every run, so main cannot go red on a draw; a local run explores anew.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
from fake_hub_server import fake_hub  # noqa: E402,F401 (fixture for every test module)
from fake_kaggle_server import fake_kaggle  # noqa: E402,F401 (fixture for every test module)


@pytest.fixture(scope="session")
def tiny_imet_root(tmp_path_factory) -> tuple[Path, Path]:
    """A small iMet-layout demo competition (real digit images) and its held-apart answers folder."""
    from src.demo import build_demo

    base = tmp_path_factory.mktemp("imet-data")
    paths = build_demo("imet", base / "demo-imet", n_train=150, n_test=40, seed=3)
    return paths.root, paths.solution_files[0]


@pytest.fixture
def one_torch_thread():
    """torch on one CPU thread for the test, restored after it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    """Markers that follow from what a test uses: the fake Kaggle API -> `kaggle`; torchrun (`ddp`) -> `slow` too."""
    for item in items:
        if "fake_kaggle" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kaggle)
        if item.get_closest_marker("ddp") is not None:
            item.add_marker(pytest.mark.slow)
