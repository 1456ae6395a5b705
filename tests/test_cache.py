"""The decoded-image cache (src/data/cache.py): built once from real files, reused, rebuilt on any change, never torn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.data import cache as cache_module
from src.data.cache import load_or_build
from src.errors import PipelineError

ROOT = Path(__file__).resolve().parents[1]
SIZE = 8
RED, BLUE, GREEN, GREY = (220, 20, 20), (20, 20, 220), (20, 200, 40), (128, 128, 128)


def split_image(width: int, height: int, left, right) -> Image.Image:
    """Left half one colour, right half another: a resize that swaps width and height shows."""
    array = np.empty((height, width, 3), np.uint8)
    array[:, : width // 2], array[:, width // 2 :] = left, right
    return Image.fromarray(array)


@pytest.fixture
def image_files(tmp_path) -> list[Path]:
    """PNG and JPEG colour images of different sizes (larger, smaller and equal to SIZE)."""
    folder = tmp_path / "images"
    folder.mkdir()
    paths = [folder / "wide.png", folder / "tall.jpg", folder / "exact.png", folder / "tiny.jpg"]
    split_image(40, 20, RED, BLUE).save(paths[0])
    split_image(16, 30, GREEN, GREY).save(paths[1], quality=95)
    Image.new("RGB", (SIZE, SIZE), BLUE).save(paths[2])
    Image.new("RGB", (3, 5), GREEN).save(paths[3], quality=95)
    return paths


@pytest.fixture
def decodes(monkeypatch) -> list[Path]:
    """Every path the cache decodes (the real decoder still runs)."""
    seen: list[Path] = []
    lock = threading.Lock()
    real = cache_module.load_rgb

    def counting(path, *limit):
        with lock:
            seen.append(Path(path))
        return real(path, *limit)

    monkeypatch.setattr(cache_module, "load_rgb", counting)
    return seen


def check_content(images: np.ndarray) -> None:
    """The fixture's images, resized: colours where they were, within JPEG's error."""
    assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[0, :, : SIZE // 2 - 1], np.broadcast_to(RED, (SIZE, SIZE // 2 - 1, 3)))
    np.testing.assert_array_equal(images[0, :, SIZE // 2 + 1 :], np.broadcast_to(BLUE, (SIZE, SIZE // 2 - 1, 3)))
    assert (
        np.abs(images[1, :, 0].astype(int) - GREEN).max() <= 6
        and np.abs(images[1, :, -1].astype(int) - GREY).max() <= 6
    )
    assert (images[2] == BLUE).all()
    assert np.abs(images[3].astype(int) - GREEN).max() <= 6


def test_builds_a_uint8_square_array_from_png_and_jpeg(image_files, tmp_path, decodes):
    cache = load_or_build(image_files, SIZE, tmp_path / "cache", skip_unreadable=False, quiet=True)
    check_content(cache.images)
    assert cache.unreadable == {} and sorted(decodes) == sorted(image_files)
    assert isinstance(cache.images, np.memmap) and not cache.images.flags.writeable  # read from disk, not copied
    files = sorted(path.suffix for path in (tmp_path / "cache").iterdir())
    assert files == [".json", ".lock", ".npy"]
    in_memory = load_or_build(image_files, SIZE, None, skip_unreadable=False, quiet=True)
    np.testing.assert_array_equal(in_memory.images, cache.images)


def test_a_second_call_reuses_the_cache_without_decoding(image_files, tmp_path, decodes):
    first = load_or_build(image_files, SIZE, tmp_path / "cache", skip_unreadable=False, quiet=True)
    (array_file,) = (tmp_path / "cache").glob("*.npy")
    written = array_file.stat().st_mtime_ns
    decodes.clear()
    second = load_or_build(image_files, SIZE, tmp_path / "cache", skip_unreadable=False, quiet=True)
    assert decodes == [] and array_file.stat().st_mtime_ns == written
    np.testing.assert_array_equal(first.images, second.images)


def test_a_changed_image_rebuilds(image_files, tmp_path, decodes):
    cache_dir = tmp_path / "cache"
    load_or_build(image_files, SIZE, cache_dir, skip_unreadable=False, quiet=True)
    Image.new("RGB", (SIZE, SIZE), RED).save(image_files[2])  # same byte size as before, new content
    stat = image_files[2].stat()
    os.utime(image_files[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    decodes.clear()
    rebuilt = load_or_build(image_files, SIZE, cache_dir, skip_unreadable=False, quiet=True)
    assert len(decodes) == 4 and (rebuilt.images[2] == RED).all()
    assert len(list(cache_dir.glob("*.npy"))) == 2  # the old set is left for whoever still uses it


def test_a_touched_image_rebuilds_even_with_the_same_content(image_files, tmp_path, decodes):
    load_or_build(image_files, SIZE, tmp_path / "cache", skip_unreadable=False, quiet=True)
    os.utime(image_files[0], ns=(1, 1))
    decodes.clear()
    check_content(load_or_build(image_files, SIZE, tmp_path / "cache", skip_unreadable=False, quiet=True).images)
    assert len(decodes) == 4


def test_another_image_size_or_order_is_another_cache(image_files, tmp_path, decodes):
    cache_dir = tmp_path / "cache"
    load_or_build(image_files, SIZE, cache_dir, skip_unreadable=False, quiet=True)
    decodes.clear()
    larger = load_or_build(image_files, 12, cache_dir, skip_unreadable=False, quiet=True)
    assert larger.images.shape == (4, 12, 12, 3) and len(decodes) == 4 and (larger.images[2] == BLUE).all()
    decodes.clear()
    reordered = load_or_build(image_files[::-1], SIZE, cache_dir, skip_unreadable=False, quiet=True)
    assert len(decodes) == 4 and (reordered.images[1] == BLUE).all() and (reordered.images[3, :, 0] == RED).all()
    assert len(list(cache_dir.glob("*.npy"))) == 3


def test_an_unreadable_image_stops_the_build_in_one_line(image_files, tmp_path):
    image_files[1].write_bytes(b"not a jpeg")
    cache_dir = tmp_path / "cache"
    with pytest.raises(PipelineError) as error:
        load_or_build(image_files, SIZE, cache_dir, skip_unreadable=False, quiet=True)
    message = str(error.value)
    assert (
        message.startswith(f"{image_files[1]}: unreadable image")
        and "skip_unreadable" in message
        and "\n" not in message
    )
    assert sorted(path.suffix for path in cache_dir.iterdir()) == [".lock"]  # nothing half-built left to trust


def test_unreadable_images_are_listed_when_skipped(image_files, tmp_path, decodes):
    image_files[1].write_bytes(b"")
    image_files[3].unlink()
    cache_dir = tmp_path / "cache"
    cache = load_or_build(image_files, SIZE, cache_dir, skip_unreadable=True, quiet=True)
    assert sorted(cache.unreadable) == [1, 3]
    assert str(image_files[1]) in cache.unreadable[1] and "unreadable image" in cache.unreadable[1]
    assert str(image_files[3]) in cache.unreadable[3] and "missing" in cache.unreadable[3]
    assert (cache.images[1] == 0).all() and (cache.images[3] == 0).all() and (cache.images[2] == BLUE).all()
    decodes.clear()
    again = load_or_build(image_files, SIZE, cache_dir, skip_unreadable=True, quiet=True)
    assert decodes == [] and again.unreadable == cache.unreadable  # the list comes back from the cache, keys as ints
    with pytest.raises(PipelineError, match="unreadable image|is missing"):
        load_or_build(image_files, SIZE, cache_dir, skip_unreadable=False, quiet=True)


def test_a_build_that_fails_half_way_leaves_nothing_to_trust(image_files, tmp_path, monkeypatch):
    real = cache_module.load_rgb
    calls = []

    def dies_on_the_third(path, *limit):
        calls.append(path)
        if len(calls) == 3:
            raise MemoryError("killed mid-build")
        return real(path, *limit)

    monkeypatch.setattr(cache_module, "load_rgb", dies_on_the_third)
    cache_dir = tmp_path / "cache"
    with pytest.raises(MemoryError):
        load_or_build(image_files, SIZE, cache_dir, skip_unreadable=False, quiet=True)
    assert sorted(path.suffix for path in cache_dir.iterdir()) == [".lock"]
    monkeypatch.setattr(cache_module, "load_rgb", real)
    check_content(load_or_build(image_files, SIZE, cache_dir, skip_unreadable=False, quiet=True).images)


def build_in_a_process_killed_at(point: str, paths: list[Path], cache_dir: Path) -> None:
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); from src.data.cache import load_or_build; "
        "load_or_build([Path(p) for p in sys.argv[4:]], int(sys.argv[3]), Path(sys.argv[2]), False, quiet=True)"
    )
    env = {**os.environ, "PIPELINE_CRASH_AT": point}
    killed = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), str(cache_dir), str(SIZE), *map(str, paths)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]


def test_killed_while_writing_the_array_leaves_only_a_temp_file(image_files, tmp_path, decodes):
    cache_dir = tmp_path / "cache"
    build_in_a_process_killed_at("atomic_write:1", image_files, cache_dir)  # array written, not yet renamed
    assert not list(cache_dir.glob("*.npy")) and list(cache_dir.glob(".*.npy.*.tmp"))
    check_content(load_or_build(image_files, SIZE, cache_dir, skip_unreadable=False, quiet=True).images)
    assert len(decodes) == 4 and not list(cache_dir.glob("*.tmp"))


def test_killed_before_the_metadata_landed_the_array_is_rebuilt(image_files, tmp_path, decodes):
    cache_dir = tmp_path / "cache"
    build_in_a_process_killed_at("atomic_write:2", image_files, cache_dir)  # array in place, its .json not
    (orphan,) = cache_dir.glob("*.npy")
    assert not list(cache_dir.glob("*.json"))
    np.save(orphan, np.zeros((4, SIZE, SIZE, 3), np.uint8))  # were it trusted, these zeros would come back
    check_content(load_or_build(image_files, SIZE, cache_dir, skip_unreadable=False, quiet=True).images)
    assert len(decodes) == 4


def test_two_builders_at_once_decode_once(image_files, tmp_path, monkeypatch):
    real = cache_module.load_rgb
    calls = []

    def slow(path, *limit):
        calls.append(path)
        time.sleep(0.05)
        return real(path, *limit)

    monkeypatch.setattr(cache_module, "load_rgb", slow)
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                load_or_build(image_files, SIZE, tmp_path / "cache", skip_unreadable=False, quiet=True)
            )
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 2 and len(calls) == 4
    for result in results:
        check_content(result.images)
