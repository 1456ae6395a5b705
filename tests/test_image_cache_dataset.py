"""The training images' packed cache shipped as a dataset (src/data/prebuilt.py, src/kaggle/local/image_cache_dataset.py,
`kernel cache`, data.prebuilt_cache): matched by path and byte size, refused in one line when it does not fit, the
same training as a local packed cache, uploaded through the REAL `kaggle` CLI to the fake server, attached to the
training kernel, which reads its training images from it on "Kaggle"."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_kaggle_server import FAKE_USER  # noqa: E402
from helpers import kaggle_demo_experiment  # noqa: E402

from src.artifacts import Experiment  # noqa: E402
from src.data.cache import CACHE_VERSION, CachePolicy, decode_table, load_or_build  # noqa: E402
from src.data.images import MAX_PIXELS  # noqa: E402
from src.data.prebuilt import SOURCE_FILE, CacheSettings, export_prebuilt, open_prebuilt  # noqa: E402
from src.errors import PipelineError  # noqa: E402
from src.kaggle.local import image_cache_dataset, training_kernel  # noqa: E402
from src.steps import kernel as kernel_step  # noqa: E402
from src.steps import status, train  # noqa: E402

POLICY = CachePolicy(24, "short_side", "packed", "jpeg", 90)
WANTED = CacheSettings(CACHE_VERSION, 24, "short_side", MAX_PIXELS)


@pytest.fixture
def shipped(tmp_path) -> tuple[Path, list[Path], Path]:
    """(a prebuilt cache folder, the images it holds, data.root): real photos of varied aspect in two folders."""
    root = tmp_path / "competition"
    paths = []
    for i, (width, height) in enumerate([(60, 30), (24, 48), (40, 40), (90, 45), (33, 66), (50, 20)]):
        path = root / ("train" if i % 2 else "extra") / f"img{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 255, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    packed = load_or_build(paths, 24, tmp_path / "cache", False, quiet=True, policy=POLICY).images
    return export_prebuilt(packed.folder, tmp_path / "shipped" / "cache", paths, root), paths, root


def test_a_subset_in_another_order_reads_the_very_cached_pixels(shipped):
    folder, paths, root = shipped
    rows = [4, 1, 5]
    images, unreadable = open_prebuilt(folder, [paths[row] for row in rows], root, WANTED)

    store, _ = open_prebuilt(folder, paths, root, WANTED)
    assert unreadable == {} and len(images) == 3
    for i, row in enumerate(rows):
        assert np.array_equal(images[i], store[row])
        assert min(images[i].shape[:2]) == 24  # short_side kept the aspect
    assert not (folder.parent / "cache.partial").exists()
    assert (folder / "images.bin").stat().st_nlink == 2  # hard-linked, not a second copy of the bytes


def test_decode_table_reads_a_prebuilt_cache_instead_of_building_one(shipped, tmp_path):
    folder, paths, root = shipped
    logs: list[str] = []
    cache_dir = tmp_path / "never-built"

    images, readable = decode_table(
        paths, 24, cache_dir, False, True, logs.append, "train", MAX_PIXELS, POLICY, folder, root
    )

    assert readable.all() and len(images) == len(paths) and not cache_dir.exists()
    assert logs == [f"train: 6 images read from the prebuilt cache {folder} (jpeg)"]


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda folder, paths: (folder / SOURCE_FILE).unlink(), r"not a prebuilt image cache \(source.json missing\)"),
        (
            lambda folder, paths: paths[2].write_bytes(paths[2].read_bytes() + b"x"),
            r"img2.png: \d[\d,]* bytes, but the prebuilt cache .* was made from a [\d,]+-byte extra/img2.png",
        ),
        (lambda folder, paths: paths[3].unlink(), r"img3.png: missing, but the prebuilt cache"),
    ],
    ids=["not-a-cache", "image-changed", "image-gone"],
)
def test_a_cache_that_does_not_fit_the_images_is_one_line(shipped, spoil, message):
    folder, paths, root = shipped
    spoil(folder, paths)
    with pytest.raises(PipelineError, match=message):
        open_prebuilt(folder, paths, root, WANTED)


def test_other_settings_or_images_outside_the_cache_are_refused_by_name(shipped, tmp_path):
    folder, paths, root = shipped
    other = CacheSettings(CACHE_VERSION, 32, "squash", MAX_PIXELS)
    with pytest.raises(PipelineError, match=r"other settings \(size cached 24, wanted 32; resize cached 'short_side'"):
        open_prebuilt(folder, paths, root, other)
    stranger = root / "train" / "new.png"
    shutil.copyfile(paths[0], stranger)
    with pytest.raises(
        PipelineError, match=r"1 of the 7 images are not in the prebuilt cache \(first: train/new.png\)"
    ):
        open_prebuilt(folder, [*paths, stranger], root, WANTED)
    with pytest.raises(PipelineError, match="is not under data.root"):
        open_prebuilt(folder, [tmp_path / "elsewhere.png"], root, WANTED)


def test_unreadable_cached_images_follow_their_rows(tmp_path):
    root = tmp_path / "competition"
    (root / "train").mkdir(parents=True)
    paths = [root / "train" / f"{i}.png" for i in range(3)]
    for path in paths:
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path)
    paths[1].write_bytes(b"not an image")
    packed = load_or_build(paths, 24, tmp_path / "cache", True, quiet=True, policy=POLICY).images
    folder = export_prebuilt(packed.folder, tmp_path / "shipped", paths, root)

    _, unreadable = open_prebuilt(folder, [paths[2], paths[1]], root, WANTED)

    assert list(unreadable) == [1] and "1.png" in unreadable[1]
    with pytest.raises(PipelineError, match="1.png"):
        decode_table([paths[1]], 24, None, False, True, [].append, "train", MAX_PIXELS, POLICY, folder, root)


@pytest.mark.slow
def test_kernel_cache_ships_the_images_and_the_training_kernel_reads_them(tmp_path_factory, fake_kaggle, monkeypatch):
    exp = kaggle_demo_experiment(
        tmp_path_factory.mktemp("image-cache"),
        "demo-imet",
        40,
        6,
        {
            "kaggle": {"username": FAKE_USER},
            "data": {"resize": "short_side", "cache_size": 36, "image_size": 32, "cache": "packed"},
            "train": {"epochs": 1},
        },
    )
    logs: list[str] = []

    built = kernel_step.cache(exp, push=True, quiet=True, log=logs.append)
    kernel_step.cache(exp, push=True, quiet=True, log=logs.append)  # unchanged: not uploaded again

    slug = "demo-imet-short-side-36-jpeg95"
    assert built.folder == exp.output_dir / "kernels" / "_image-cache" / slug and built.count == 40
    uploaded = fake_kaggle.datasets[f"{FAKE_USER}/{slug}"].files
    assert {name: uploaded[name] for name in built.files} == {n: (built.folder / n).read_bytes() for n in built.files}
    assert any(line.endswith("unchanged since the last push: not uploading it again") for line in logs), logs
    shown: list[str] = []
    status.show(exp.output_dir, exp.config_path.parent, shown.append)
    assert any(line.endswith(f"{slug}: uploaded as {FAKE_USER}/{slug}") for line in shown), shown

    monkeypatch.setattr(training_kernel, "CHECK_IMAGES", 12)
    fake_kaggle.serve_competition_of(exp)
    kernel_step.train(exp, fold="0", check=True, push=True, quiet=True, log=logs.append)
    fake_kaggle.wait_for_runs()
    kernel_step.pull(exp, log=logs.append)

    metadata = json.loads((exp.train_kernel_dir / "kernel-metadata.json").read_text())
    assert f"{FAKE_USER}/{slug}" in metadata["dataset_sources"]
    assert "12 images read from the prebuilt cache" in exp.train_check_log.read_text()  # the local check read it
    kernel_log = fake_kaggle.kernel_logs[f"{FAKE_USER}/tiny-train"]
    assert "checking the image-cache dataset" in kernel_log and "images read from the prebuilt cache" in kernel_log
    assert any(f"training images read from {FAKE_USER}/{slug} (jpeg)" in line for line in logs), logs
    # The same run as a local train from the local packed cache: the very pixels, so the very weights.
    config = exp.config.model_copy(deep=True)
    config.output_dir = tmp_path_factory.mktemp("local")
    local = Experiment(config, exp.config_path)
    train.run(local, "0", quiet=True, log=[].append)
    pulled = {p.name: p.read_bytes() for p in exp.run_dir(0).iterdir() if p.is_file()}
    here = {p.name: p.read_bytes() for p in local.run_dir(0).iterdir() if p.is_file()}
    assert training_kernel.compare_runs({"fold-0": pulled}, {"fold-0": here}) == []


def test_the_slug_names_the_competition_and_every_pixel_setting(tmp_path_factory):
    exp = kaggle_demo_experiment(tmp_path_factory.mktemp("slug"), "imet-2019-fgvc6", 8, 2, {})
    assert image_cache_dataset.image_cache_slug(exp) == "imet-2019-fgvc6-squash-32-jpeg95"
    exp.config.data.cache_format, exp.config.data.max_pixels = "png", 1000
    assert image_cache_dataset.image_cache_slug(exp) == "imet-2019-fgvc6-squash-32-png-max1000"
