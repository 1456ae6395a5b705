"""Decode/crop policy (data.resize, cache_size, eval_crop, N-crop TTA) and the packed, resumable cache with its
disk-space checks (src/data/crops.py, src/data/packed.py, src/data/cache.py), on real image files."""

from __future__ import annotations

import collections
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.data import cache as cache_module
from src.data import packed as packed_module
from src.data.cache import CachePolicy, cache_usage, clear_cache, load_or_build
from src.data.crops import CROP_POSITIONS, crop_at, resize_pad, resize_short_side
from src.data.packed import PackedImages
from src.errors import PipelineError

ROOT = Path(__file__).resolve().parents[1]


def gradient(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image (photo-like for the codecs) with a position code: red ~ x, green ~ y."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), np.full_like(x, 40 + seed)], -1)
    return image.astype(np.uint8)


@pytest.fixture
def photos(tmp_path) -> list[Path]:
    """Real PNG/JPEG files of varied aspect (wide, tall, square, small)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    sizes = [(60, 30), (24, 48), (40, 40), (10, 14), (90, 45), (33, 66)]
    paths = []
    for i, (width, height) in enumerate(sizes):
        path = folder / f"{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(gradient(width, height, i)).save(path, quality=95)
        paths.append(path)
    return paths


def many_photos(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:04d}.png"
        Image.fromarray(gradient(12 + i % 7, 10 + i % 5, i % 200)).save(path)
        paths.append(path)
    return paths


def test_short_side_keeps_the_aspect_and_pad_letterboxes():
    wide = gradient(60, 30)
    assert resize_short_side(wide, 16).shape == (16, 32, 3)
    assert resize_short_side(gradient(24, 48), 16).shape == (32, 16, 3)
    padded = resize_pad(wide, 16)
    assert padded.shape == (16, 16, 3)
    assert (padded[:4] == 0).all() and (padded[-4:] == 0).all() and padded[4:12].max() > 0  # bars above and below


def test_crops_are_cut_where_they_say():
    image = gradient(40, 30)
    assert np.array_equal(crop_at(image, 20, "center", "top_left"), image[:20, :20])
    assert np.array_equal(crop_at(image, 20, "center", "bottom_right"), image[10:, 20:])
    assert np.array_equal(crop_at(image, 20, "center", "center"), image[5:25, 10:30])
    whole = crop_at(image, 20, "resize")  # shorter side to 20 first: the whole height in view
    assert whole.shape == (20, 20, 3) and abs(int(whole[0, 10, 1]) - 0) <= 3 and whole[-1, 10, 1] >= 245
    assert crop_at(gradient(20, 20), 20) is not None and crop_at(image[:20, :20], 20).shape == (20, 20, 3)


def test_short_side_cache_stores_each_image_at_its_aspect(photos, tmp_path):
    policy = CachePolicy(16, resize="short_side")
    cache = load_or_build(photos, 16, tmp_path / "cache", skip_unreadable=False, quiet=True, policy=policy)
    assert isinstance(cache.images, PackedImages) and cache.images.codec == "raw"
    assert [cache.images[i].shape for i in range(3)] == [(16, 32, 3), (32, 16, 3), (16, 16, 3)]
    in_memory = load_or_build(photos, 16, None, skip_unreadable=False, quiet=True, policy=policy)
    for row in range(len(photos)):
        assert np.array_equal(cache.images[row], in_memory.images[row])
    # another policy is another cache: the square one is built beside it, not read from it
    square = load_or_build(photos, 16, tmp_path / "cache", skip_unreadable=False, quiet=True)
    assert square.images.shape == (6, 16, 16, 3)
    assert len(list((tmp_path / "cache").glob("*.pack"))) == 1 and len(list((tmp_path / "cache").glob("*.npy"))) == 1


def test_packed_png_is_the_raw_cache_bit_for_bit_and_jpeg_is_smaller_and_close(photos, tmp_path):
    raw = load_or_build(photos, 32, tmp_path / "cache", skip_unreadable=False, quiet=True)
    png = load_or_build(
        photos, 32, tmp_path / "cache", False, quiet=True, policy=CachePolicy(32, kind="packed", codec="png")
    )
    jpeg = load_or_build(
        photos, 32, tmp_path / "cache", False, quiet=True, policy=CachePolicy(32, kind="packed", quality=90)
    )
    for row in range(len(photos)):
        assert np.array_equal(png.images[row], raw.images[row])
        assert np.abs(jpeg.images[row].astype(int) - raw.images[row]).mean() < 4
    jpeg_bytes = (jpeg.images.folder / "images.bin").stat().st_size
    assert jpeg_bytes < raw.images.nbytes
    assert (jpeg.images.folder / "names.txt").read_text().splitlines() == [path.name for path in photos]
    meta = json.loads((jpeg.images.folder / "meta.json").read_text())
    assert (meta["codec"], meta["quality"], meta["count"]) == ("jpeg", 90, len(photos))
    usage = cache_usage(tmp_path / "cache")
    assert usage.entries == 3 and any(what.startswith("jpeg 6 images") for what, _ in usage.sets)
    assert any(what.startswith("raw 6 images at 32 px") for what, _ in usage.sets)


def test_a_killed_packed_build_resumes_from_its_last_chunk(tmp_path, monkeypatch):
    paths = many_photos(tmp_path / "many", 300)  # chunks of 64: five of them
    cache_dir = tmp_path / "cache"
    script = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
        "from src.data.cache import CachePolicy, load_or_build; "
        "load_or_build([Path(p) for p in sys.argv[3:]], 8, Path(sys.argv[2]), False, quiet=True, "
        "policy=CachePolicy(8, kind='packed', codec='png'))"
    )
    env = {**os.environ, "PIPELINE_CRASH_AT": "cache_chunk:3"}
    done = subprocess.run([sys.executable, "-c", script, str(ROOT), str(cache_dir), *map(str, paths)], env=env)
    assert done.returncode == -9  # SIGKILLed after its third chunk
    partial = next(cache_dir.glob("*.pack.partial"))
    progress = json.loads((partial / "progress.json").read_text())
    assert progress["rows"] == 3 * 64 and (partial / "images.bin").stat().st_size == progress["bytes"]
    with open(partial / "images.bin", "ab") as handle:
        handle.write(b"half a chunk written when the process died")

    decoded: list[Path] = []
    real = cache_module.load_rgb
    monkeypatch.setattr(cache_module, "load_rgb", lambda path, *limit: decoded.append(path) or real(path, *limit))
    resumed = load_or_build(paths, 8, cache_dir, False, quiet=True, policy=CachePolicy(8, kind="packed", codec="png"))
    assert len(decoded) == len(paths) - 3 * 64 and not partial.exists()
    fresh = load_or_build(paths, 8, None, False, quiet=True)
    for row in range(len(paths)):
        assert np.array_equal(resumed.images[row], fresh.images[row]), row


def test_too_little_free_space_stops_before_the_build_with_one_line(photos, tmp_path, monkeypatch):
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    cache_dir = tmp_path / "cache"
    with pytest.raises(PipelineError) as raised:
        load_or_build(photos, 32, cache_dir, False, quiet=True)
    message = str(raised.value)
    assert "\n" not in message and "needs about 0.00 GB" in message and "data.cache: packed" in message
    assert "cache_size" in message and not list(cache_dir.glob("*.npy")) and not list(cache_dir.glob(".*.tmp"))
    with pytest.raises(PipelineError, match="jpeg image cache of 6 images"):
        load_or_build(photos, 32, cache_dir, False, quiet=True, policy=CachePolicy(32, kind="packed"))


def test_a_full_disk_during_a_raw_build_is_one_line_and_no_temp_file(photos, tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module.os, "posix_fallocate", full)
    cache_dir = tmp_path / "cache"
    with pytest.raises(PipelineError) as raised:
        load_or_build(photos, 32, cache_dir, False, quiet=True)
    assert "\n" not in str(raised.value) and "no space left for the raw image cache" in str(raised.value)
    assert sorted(path.suffix for path in cache_dir.iterdir()) == [".lock"]  # no .npy, no temp file


def test_a_full_disk_during_a_packed_build_keeps_whole_chunks_only_and_resumes(tmp_path, monkeypatch):
    paths = many_photos(tmp_path / "many", 200)
    policy = CachePolicy(8, kind="packed", codec="png")
    cache_dir = tmp_path / "cache"
    real, calls = packed_module._append, []

    def filling(path, parts):
        calls.append(path.name)
        if len(calls) == 3:  # the second chunk's images: half of it lands, then the disk is full
            with open(path, "ab") as handle:
                handle.write(b"x" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, parts)

    monkeypatch.setattr(packed_module, "_append", filling)
    with pytest.raises(PipelineError) as raised:
        load_or_build(paths, 8, cache_dir, False, quiet=True, policy=policy)
    assert "\n" not in str(raised.value) and "disk filled up" in str(raised.value) and "64 of 200" in str(raised.value)
    partial = next(cache_dir.glob("*.pack.partial"))
    progress = json.loads((partial / "progress.json").read_text())
    assert progress["rows"] == 64 and (partial / "images.bin").stat().st_size == progress["bytes"]
    assert (partial / "index.bin").stat().st_size == 64 * 4 * 8 and not list(partial.glob(".*.tmp"))
    monkeypatch.setattr(packed_module, "_append", real)
    resumed = load_or_build(paths, 8, cache_dir, False, quiet=True, policy=policy)
    assert np.array_equal(resumed.images[150], load_or_build(paths, 8, None, False, quiet=True).images[150])
    assert clear_cache(cache_dir).entries == 1 and not list(cache_dir.iterdir())


def test_auto_takes_raw_within_the_budget_and_packed_beyond_it_then_keeps_what_is_built(photos, tmp_path):
    lines: list[str] = []
    small = CachePolicy(32, kind="auto", budget_gb=1e-6)  # about 1 KB: the raw 18 KB does not fit
    images, _ = cache_module.decode_table(photos, 32, tmp_path / "a", False, True, lines.append, "train", policy=small)
    assert isinstance(images, PackedImages) and "auto -> packed" in lines[-1]
    images, _ = cache_module.decode_table(
        photos, 32, tmp_path / "b", False, True, lines.append, "train", policy=CachePolicy(32, kind="auto")
    )
    assert isinstance(images, np.ndarray) and "auto -> raw" in lines[-1]
    images, _ = cache_module.decode_table(photos, 32, tmp_path / "a", False, True, lines.append, "train", policy=small)
    assert isinstance(images, PackedImages) and "already on disk" in lines[-1]


def short_side_config(tmp_path, *overrides: str):
    from src.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("competition: x\nformat: imet\ndata: {root: /tmp, image_size: 16}\n")
    return load_config(path, ["data.resize=short_side", "data.cache_size=20", *overrides])


def test_pipelines_crop_the_larger_source_to_image_size(photos, tmp_path):
    from src.config import load_config
    from src.data.transforms import transform_from_config

    config = short_side_config(tmp_path, "augment.train=[{name: RandomCrop}]")
    source = resize_short_side(gradient(60, 30), 20)  # 20 x 40
    train = transform_from_config(config, "train").augment(image=source)["image"]
    assert train.shape == (16, 16, 3)
    assert any(np.array_equal(train, source[y : y + 16, x : x + 16]) for y in range(5) for x in range(25))
    assert np.array_equal(transform_from_config(config, "eval").augment(image=source)["image"], crop_at(source, 16))
    corner = transform_from_config(config, "eval", "bottom_right").augment(image=source)["image"]
    assert np.array_equal(corner, source[4:, 24:])
    # no flip or crop in augment.train: the last fixed crop still gives the model its size
    plain = short_side_config(tmp_path, "augment.train=[]", "data.eval_crop=resize")
    assert transform_from_config(plain, "train").augment(image=source)["image"].shape == (16, 16, 3)
    default = load_config(tmp_path / "c.yaml")  # a cache at the input size: no step added, today's pipelines
    assert not transform_from_config(default, "eval").has_steps


def test_config_refuses_a_cache_below_the_input_and_crop_tta_on_a_square_at_input_size(tmp_path):
    with pytest.raises(PipelineError, match="data.cache_size: is below data.image_size"):
        short_side_config(tmp_path, "data.cache_size=12")
    with pytest.raises(PipelineError, match="are all the same image"):
        short_side_config(tmp_path, "data.resize=squash", "data.cache_size=16", "predict.tta_crops=5")
    assert short_side_config(tmp_path, "predict.tta_crops=5").predict.tta_crops == 5


def test_crop_tta_averages_the_crops_predictions(photos, tmp_path):
    import torch

    from src.formats.base import HeadSpec
    from src.model import build_model
    from src.predict_loop import config_eval_loader, predict_config_probs, predict_probs
    from src.runtime import runtime_from_config

    config = short_side_config(tmp_path, "predict.tta_crops=3", "predict.tta_flip=false", "train.num_workers=0")
    cache = load_or_build(photos, 20, tmp_path / "cache", False, quiet=True, policy=CachePolicy.from_data(config.data))
    heads = [HeadSpec("labels", "multilabel", tuple("abcde"))]
    torch.manual_seed(0)
    model = build_model("test_resnet", heads, None, 0.0)
    runtime = runtime_from_config(config.train, inference=True)
    rows = np.arange(len(photos))
    averaged = predict_config_probs(model, config, heads, cache.images, rows, runtime, True, "tta")
    each = [
        predict_probs(model, config_eval_loader(config, cache.images, rows, runtime, crop_position=p), heads, runtime)[
            0
        ]
        for p in CROP_POSITIONS[:3]
    ]
    assert not np.allclose(each[0]["labels"], each[1]["labels"])  # the crops really differ
    np.testing.assert_allclose(averaged["labels"], np.mean([e["labels"] for e in each], axis=0), rtol=1e-6)


@pytest.mark.slow
def test_a_chain_on_aspect_keeping_crops_from_a_packed_cache_read_by_loader_workers(tmp_path):
    from src.config import load_config
    from src.demo import build_demo
    from src.formats import create_format
    from src.stage import main

    paths = build_demo("folder", tmp_path / "demo-folder", n_train=120, n_test=30, seed=3)  # images of 24..80 px
    overrides = [
        f"output_dir={tmp_path / 'out'}",
        f"data.root={paths.root}",
        f"data.solution=[{paths.solution_files[0]}]",
        "data.image_size=32",
        "data.n_folds=2",
        "data.resize=short_side",
        "data.cache_size=40",
        "data.cache=packed",
        "data.cache_format=png",
        "augment.train=[{name: RandomCrop}, {name: HorizontalFlip}]",
        "predict.tta_crops=3",
        "model.pretrained=null",
        "model.name=test_efficientnet",
        "train.epochs=2",
        "train.batch_size=16",
        "train.threads=1",
        "train.num_workers=2",  # forked workers decode the packed images
        "thresholds.honest_folds=2",
        "submit.checkpoint=fold-0",
        "--quiet",
    ]
    config = ROOT / "configs" / "demo-folder.yaml"
    for stage in (["folds"], ["train", "--fold", "all"], ["oof"], ["thresholds"], ["submit"]):
        assert main([stage[0], "--config", str(config), *stage[1:], *overrides]) == 0, stage
    cache_dir = tmp_path / "out" / "oof" / "_image_cache"
    packs = sorted(cache_dir.glob("*.pack"))
    assert len(packs) == 2 and not list(cache_dir.glob("*.npy")) and not list(cache_dir.glob("*.partial"))
    shapes = {PackedImages(pack)[row].shape[:2] for pack in packs for row in range(10)}
    assert min(min(shape) for shape in shapes) == 40 and any(max(shape) > 40 for shape in shapes)
    fmt = create_format("folder", paths.root, load_config(config).format_options)
    ids, _ = fmt.read_submission([tmp_path / "out" / "submissions" / "demo-folder" / "submission.csv"])
    assert ids == fmt.read_test().ids


def test_status_lists_each_cache_set_with_its_size(photos, tmp_path):
    from src.steps import status

    cache_dir = tmp_path / "out" / "oof" / "_image_cache"
    load_or_build(photos, 16, cache_dir, False, quiet=True)
    load_or_build(photos, 16, cache_dir, False, quiet=True, policy=CachePolicy(20, resize="short_side", kind="packed"))
    lines: list[str] = []
    status.show(tmp_path / "out", tmp_path / "configs", lines.append)
    sets = [line for line in lines if line.strip().endswith("px") and "B  " in line]
    raw = [line for line in sets if "raw 6 images at 16 px" in line]
    assert len(sets) == 2 and len(raw) == 1 and any("jpeg 6 images, short_side at 20 px" in line for line in sets)
    raw_bytes = next(cache_dir.glob("*.npy")).stat().st_size
    assert raw_bytes > 6 * 16 * 16 * 3 and raw[0].split()[:2] == [f"{raw_bytes / 1024:.1f}", "KB"]
