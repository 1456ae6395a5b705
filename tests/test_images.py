"""Image decoding of every mode, refusal of broken files, and the decoded-image cache's invalidation rule."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from src.data.cache import load_or_build
from src.data.images import load_rgb
from src.errors import PipelineError


@pytest.mark.parametrize(
    "mode, suffix",
    [
        ("RGB", ".png"),
        ("L", ".jpg"),
        ("RGBA", ".png"),
        ("CMYK", ".jpg"),
        ("P", ".png"),
        ("I;16", ".png"),
        ("LA", ".png"),
    ],
)
def test_every_mode_becomes_rgb_uint8(tmp_path, mode, suffix):
    path = tmp_path / f"image{suffix}"
    Image.new(mode, (13, 7)).save(path)
    array = load_rgb(path)
    assert array.shape == (7, 13, 3) and array.dtype == np.uint8


def test_transparent_pixels_become_white(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(path)
    assert (load_rgb(path) == 255).all()


@pytest.mark.parametrize("content", [b"", b"not an image at all", "truncated"])
def test_broken_files_are_refused_with_the_path(tmp_path, content):
    path = tmp_path / "bad.jpg"
    if content == "truncated":
        Image.new("RGB", (64, 64), (200, 10, 10)).save(path, quality=95)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(PipelineError, match=r"bad.jpg: unreadable image .*skip_unreadable"):
        load_rgb(path)
    with pytest.raises(PipelineError, match="is missing"):
        load_rgb(tmp_path / "none.png")


def test_cache_is_reused_and_rebuilt_when_an_image_changes(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (20, 10), (i * 50, 0, 0)).save(paths[-1])
    cache_dir = tmp_path / "cache"
    first = load_or_build(paths, 8, cache_dir, skip_unreadable=False, quiet=True)
    assert first.images.shape == (3, 8, 8, 3) and first.images[1, 0, 0, 0] == 50
    assert len(list(cache_dir.glob("*.npy"))) == 1
    load_or_build(paths, 8, cache_dir, skip_unreadable=False, quiet=True)
    assert len(list(cache_dir.glob("*.npy"))) == 1  # reused
    Image.new("RGB", (20, 10), (99, 0, 0)).save(paths[1])
    os.utime(paths[1], ns=(1, 1))
    rebuilt = load_or_build(paths, 8, cache_dir, skip_unreadable=False, quiet=True)
    assert rebuilt.images[1, 0, 0, 0] == 99
    assert len(list(cache_dir.glob("*.npy"))) == 2


def test_unreadable_training_images_stop_or_are_skipped(tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.new("RGB", (8, 8)).save(good)
    bad.write_bytes(b"")
    with pytest.raises(PipelineError, match="bad.png"):
        load_or_build([good, bad], 8, tmp_path / "c1", skip_unreadable=False, quiet=True)
    assert not list((tmp_path / "c1").glob("*.npy"))
    cache = load_or_build([good, bad], 8, tmp_path / "c2", skip_unreadable=True, quiet=True)
    assert list(cache.unreadable) == [1]


def test_cache_decodes_straight_into_the_file_not_into_memory(tmp_path, monkeypatch):
    """The array being filled is a memory map of the file being written: building never holds it all in RAM."""
    from src.data import cache as cache_module

    seen = []
    real = cache_module._decode_into

    def spy(images, *args, **kwargs):
        seen.append((type(images), str(images.filename)))
        return real(images, *args, **kwargs)

    monkeypatch.setattr(cache_module, "_decode_into", spy)
    paths = [tmp_path / f"{i}.png" for i in range(4)]
    for i, path in enumerate(paths):
        Image.new("RGB", (12, 9), (10 * i, 20, 30)).save(path)
    built = load_or_build(paths, 6, tmp_path / "cache", skip_unreadable=False, quiet=True)
    ((kind, filename),) = seen
    assert issubclass(kind, np.memmap) and filename.endswith(".tmp") and filename.startswith(str(tmp_path / "cache"))
    assert built.images.shape == (4, 6, 6, 3) and built.images[3, 0, 0].tolist() == [30, 20, 30]
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_an_image_over_the_pixel_limit_is_refused_before_decoding_or_skipped(tmp_path):
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    Image.new("RGB", (30, 30), (10, 20, 30)).save(small)
    Image.new("RGB", (40, 30), (10, 20, 30)).save(large)
    assert load_rgb(small, max_pixels=900).shape == (30, 30, 3)
    with pytest.raises(PipelineError) as error:
        load_rgb(large, max_pixels=900)
    assert str(error.value) == (
        f"{large}: image is 40 x 30 = 1,200 pixels, more than 900 (a decompression bomb?); shrink or remove it, "
        "raise data.max_pixels, or set data.skip_unreadable=true"
    )
    assert load_rgb(large).shape == (30, 40, 3)  # the default limit, 100M pixels
    cache = load_or_build([small, large], 16, None, skip_unreadable=True, quiet=True, max_pixels=900)
    assert list(cache.unreadable) == [1] and "more than 900" in cache.unreadable[1]


def test_pillows_own_bomb_error_is_one_line_too(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow raises past twice its limit
    with pytest.raises(PipelineError, match="bomb.png: unreadable image .*decompression bomb"):
        load_rgb(path)


def test_data_max_pixels_reaches_the_decoder_of_a_stage(tiny_imet_root, tmp_path, capsys):
    from helpers import tiny_config

    from src.stage import main

    root, _ = tiny_imet_root
    config = tiny_config(tmp_path, "imet", root, {"data": {"max_pixels": 100}, "train": {"epochs": 1}})
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    assert main(["train", "--config", str(config), "--fold", "0", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "pixels, more than 100 (a decompression bomb?)" in error
