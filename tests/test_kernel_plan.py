"""`kernel train --plan` (src/kaggle/local/plan.py) and the quota refusal of `kernel train --push`: on a tiny real
iMet demo, against the fake Kaggle server's `kaggle quota` through the REAL `kaggle` CLI."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_kaggle_server import FAKE_USER  # noqa: E402
from helpers import kaggle_demo_experiment  # noqa: E402

from src.artifacts import Experiment  # noqa: E402
from src.errors import PipelineError  # noqa: E402
from src.kaggle.local import plan as planning  # noqa: E402
from src.steps import kernel as kernel_step  # noqa: E402

COMPETITION = "demo-imet"
N_TRAIN = 40


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> Experiment:
    return kaggle_demo_experiment(
        tmp_path_factory.mktemp("plan"), COMPETITION, N_TRAIN, 4, {"kaggle": {"username": FAKE_USER}}
    )


def _with(exp: Experiment, **changes) -> Experiment:
    """The experiment with `section.key` values changed (e.g. data__image_size=320)."""
    config = exp.config.model_copy(deep=True)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        setattr(getattr(config, section), key, value)
    return Experiment(config, exp.config_path)


def test_plan_on_kaggles_t4_uses_the_table_and_the_weeks_quota(exp, fake_kaggle):
    fake_kaggle.gpu_used_s = 12.5 * 3600
    resnet = _with(exp, model__name="resnet50", data__image_size=320)
    logs: list[str] = []

    found = kernel_step.train(resnet, fold="all", plan=True, log=logs.append)

    assert found.n_images == N_TRAIN and found.runs == ["fold-0", "fold-1"]
    assert found.raw_cache_gb == N_TRAIN * 320 * 320 * 3 / 1e9  # uint8, 3 channels
    assert found.packed_cache_gb == pytest.approx(found.raw_cache_gb / 12)  # 0.25 of 3 bytes per pixel
    t4_224 = planning.TRAIN_IMAGES_PER_S_224[("NvidiaTeslaT4", "resnet50")][True]
    # (320/224)^2 times the pixels, on both T4s: two DDP processes at the assumed 0.9 each
    assert found.images_per_s == pytest.approx(t4_224 / 2.040816 * 2 * 0.9, rel=1e-5)
    assert found.epochs_left == {"fold-0": 2, "fold-1": 2} and found.sessions == 2  # one run per session
    assert found.gpu_hours == pytest.approx(4 * found.epoch_s / 3600)
    assert found.quota_left_h == 17.5 and not found.problems
    assert logs[0] == "plan for Kaggle GPU T4 x2 (NvidiaTeslaT4):" and "17.5 left this week" in "\n".join(logs)
    assert any("2 DDP process(es) on the 2 GPUs" in line for line in logs)
    one = kernel_step.train(_with(resnet, kaggle__train_processes=1), fold="all", plan=True, log=[].append)
    assert one.images_per_s == pytest.approx(t4_224 / 2.040816, rel=1e-5)  # kaggle.train_processes: 1
    assert (
        found.summary().startswith("plan on Kaggle GPU T4 x2: 2 run(s), 4 epoch(s) left") and "fits" in found.summary()
    )


def test_the_plan_says_what_will_not_fit_and_what_to_change(exp, fake_kaggle):
    huge = _with(exp, model__name="resnet50", data__image_size=14000)
    found = kernel_step.train(huge, fold="0", plan=True, machine="t4x2", log=[].append)

    [disk] = [p for p in found.problems if "disk" in p]
    assert f"raw image cache ({found.raw_cache_gb:.1f} GB) is larger than the session's 20 GB disk" in disk
    suggested = int(disk.split("lower data.cache_size (or data.image_size) to ")[1].split(" px")[0])
    assert N_TRAIN * suggested**2 * 3 <= 20e9 < N_TRAIN * 14000**2 * 3  # the size it names fits
    assert "data.cache: packed" in disk and "WILL NOT FIT" in found.summary()
    # A packed cache (asked for, or chosen by auto over its budget) is judged by its own size: it fits.
    for cache in ({"data__cache": "packed"}, {"data__cache": "auto", "data__cache_disk_budget_gb": 18.0}):
        packed = kernel_step.train(_with(huge, **cache), fold="0", plan=True, machine="t4x2", log=[].append)
        assert not [p for p in packed.problems if "disk" in p], cache
    bigger = _with(huge, data__image_size=60000, data__cache="packed")
    [disk] = [p for p in kernel_step.train(bigger, fold="0", plan=True, machine="t4x2", log=[].append).problems]
    assert disk.startswith("even the packed image cache")

    slow = _with(exp, kaggle__images_per_s=0.001, kaggle__session_timeout_s=600)
    found = kernel_step.train(slow, fold="0", plan=True, log=[].append)
    assert found.throughput_source == "kaggle.images_per_s in the config" and found.sessions == 0
    assert any("is longer than a session's 10.0 min" in p for p in found.problems)

    fake_kaggle.gpu_used_s = fake_kaggle.gpu_total_s - 60
    over = _with(exp, kaggle__images_per_s=1.0)
    assert any(
        "0.0 are left this week" in p
        for p in kernel_step.train(over, fold="all", plan=True, log=[].append).all_problems
    )

    logs: list[str] = []
    unknown = kernel_step.train(exp, fold="0", plan=True, log=logs.append)  # the rest of the plan still comes
    assert unknown.images_per_s is None and unknown.gpu_hours is None and unknown.raw_cache_gb > 0
    assert logs[4].startswith("  throughput: unknown: no throughput figure for test_resnet on NvidiaTeslaT4 (the table")
    assert "set kaggle.images_per_s" in logs[4] and "time unknown (no throughput figure)" in unknown.summary()
    with pytest.raises(PipelineError, match="--machine v100: not a machine the plan knows; one of NvidiaTeslaT4"):
        kernel_step.train(exp, fold="0", plan=True, machine="v100", log=[].append)
    p100 = kernel_step.train(_with(exp, model__name="resnet50"), fold="0", plan=True, machine="p100", log=[].append)
    assert any(p.startswith("NvidiaTeslaP100: the P100 (sm_60) has no kernels") for p in p100.problems)


def test_plan_for_this_machine_is_measured_here(exp):
    logs: list[str] = []

    found = kernel_step.train(exp, full=True, plan=True, machine="this", log=logs.append)

    assert found.runs == ["full"] and found.title == "this machine" and found.quota_left_h is None
    assert found.throughput_source.startswith("measured here") and math.isfinite(found.images_per_s)
    assert found.images_per_s > 0 and any(
        line.startswith("plan: timing 3 training steps of test_resnet") for line in logs
    )
    assert found.epoch_s == pytest.approx(N_TRAIN / found.images_per_s)  # a full fit has no validation


def test_push_refuses_when_the_quota_left_is_smaller_than_a_session(exp, fake_kaggle):
    fake_kaggle.gpu_used_s = fake_kaggle.gpu_total_s - 3600  # an hour left, a session may take 12
    logs: list[str] = []

    with pytest.raises(
        PipelineError, match=r"kaggle quota: 1.0 GPU hours left this week, the next session may take 12.0: not pushed"
    ):
        kernel_step.train(exp, fold="0", push=True, check=False, log=logs.append)

    assert not fake_kaggle.rpc_bodies("SaveKernel") and not fake_kaggle.rpc_bodies("CreateDataset")
    assert any(line.startswith("plan on Kaggle GPU T4 x2: 1 run(s), 2 epoch(s) left, time unknown") for line in logs)
    estimated = _with(exp, kaggle__images_per_s=50.0)  # a short session fits the hour: pushed, summary first
    kernel_step.train(estimated, fold="0", push=True, check=False, log=logs.append)
    assert len(fake_kaggle.rpc_bodies("SaveKernel")) == 1
    assert any(line.startswith("plan on Kaggle GPU T4 x2: 1 run(s), 2 epoch(s) left") for line in logs)
    fake_kaggle.gpu_used_s = fake_kaggle.gpu_total_s
    kernel_step.train(exp, fold="0", push=True, check=False, force=True, log=logs.append)
    assert len(fake_kaggle.rpc_bodies("SaveKernel")) == 2 and any("--force: pushing anyway" in line for line in logs)


def test_push_goes_on_when_kaggle_quota_does_not_answer(exp, fake_kaggle):
    fake_kaggle.fail("GetAcceleratorQuotaStatistics", 500, "backend error")
    logs: list[str] = []

    kernel_step.train(exp, fold="0", push=True, check=False, log=logs.append)

    assert len(fake_kaggle.rpc_bodies("SaveKernel")) == 1
    assert any(line.startswith("warning: quota unknown: kaggle quota: ") for line in logs)


def test_gpu_check_figures_measured_on_the_machines_gpu_come_before_the_table(exp, fake_kaggle):
    figures = exp.config.output_dir / "oof" / "_bench" / "gpu-check.json"
    figures.parent.mkdir(parents=True, exist_ok=True)
    variants = {
        "fp32 NCHW": {"train_images_per_s": 90.0},
        "fp32 channels_last": {"train_images_per_s": 100.0},
        "fp16 NCHW": {"train_images_per_s": 250.0},
        "fp16 channels_last": {"train_images_per_s": 300.0},
        "fp16 channels_last compile": {"error": "RuntimeError: no triton"},
    }
    result = {
        "machine": {"cuda": "Tesla T4"},
        "sizes": {"model": "resnet50", "image_size": 224},
        "parts": {"model_speed": {"variants": variants}},
    }
    figures.write_text(json.dumps(result))
    resnet = _with(exp, model__name="resnet50", data__image_size=448)
    try:
        t4 = kernel_step.train(resnet, fold="0", plan=True, log=[].append)
        fp32 = kernel_step.train(_with(resnet, train__amp=False), fold="0", plan=True, log=[].append)
        p100 = kernel_step.train(resnet, fold="0", plan=True, machine="p100", log=[].append)
    finally:
        figures.unlink()

    # One GPU's figure at 448 px (a quarter of the 224 px rate), on T4 x2's two GPUs at the assumed 0.9 each.
    assert t4.images_per_s == pytest.approx(300.0 / 4 * 2 * 0.9)
    assert "measured on Tesla T4 (fp16 channels_last, 224 px)" in t4.throughput_source
    assert fp32.images_per_s == pytest.approx(100.0 / 4 * 2 * 0.9)
    assert p100.throughput_source.startswith("table: resnet50 on NvidiaTeslaP100")  # measured on another GPU


def test_sessions_follow_the_time_budget_one_epoch_at_least(exp, fake_kaggle):
    fast = _with(exp, kaggle__images_per_s=1000.0)
    assert kernel_step.train(fast, fold="all", plan=True, log=[].append).sessions == 2  # both epochs fit one session

    paused = _with(fast, train__time_budget_s=0.001)  # the budget pauses after every epoch, never before the first
    found = kernel_step.train(paused, fold="all", plan=True, log=[].append)
    assert found.sessions == 4 and not found.problems


def test_a_shipped_image_cache_takes_the_training_images_off_the_sessions_disk(exp, fake_kaggle, monkeypatch):
    import dataclasses

    small = _with(exp, data__image_size=48)
    tiny_disk = dataclasses.replace(planning.MACHINES["NvidiaTeslaT4"], disk_gb=1e-6)
    monkeypatch.setitem(planning.MACHINES, "NvidiaTeslaT4", tiny_disk)
    before = kernel_step.train(small, fold="0", plan=True, machine="t4x2", log=[].append)
    assert any("larger than the session's" in p for p in before.problems) and not before.shipped_cache

    built = kernel_step.cache(small, quiet=True, log=[].append)
    logs: list[str] = []
    after = kernel_step.train(small, fold="0", plan=True, machine="t4x2", log=logs.append)

    assert not [p for p in after.problems if "disk" in p]
    assert any(line.startswith(f"  image cache shipped: {built.folder}") for line in logs), logs
    assert "nothing is decoded or written to the session's disk" in after.shipped_cache
