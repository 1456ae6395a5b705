"""src/confine.py: no downloaded name leaves its target folder; links, bombs and extra files are refused; a failed
check keeps the staging folder and names it. The download paths run the real `kaggle` CLI against the fake server."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import pytest
from fake_kaggle_server import FAKE_USER, hostile_names, symlink_member
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src import confine
from src.errors import PipelineError
from src.kaggle.local import cli

SLUG = "some-competition"
KERNEL = f"{FAKE_USER}/some-kernel"

# Pieces a hostile name is made of: traversal, separators, NUL and control characters, unicode, very long parts.
_PIECES = st.sampled_from(
    ["..", ".", "", "/", "\\", "\x00", "\n", "a", "b.csv", "é", "\u2025", "\uff0e\uff0e", "~", " ", "C:", "x" * 300]
)
NAMES = st.one_of(st.lists(_PIECES, max_size=8).map("".join), st.text(max_size=40))


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([os.path.realpath(path), root]) == root


@settings(max_examples=500, deadline=None)
@given(NAMES)
def test_no_accepted_name_leaves_its_folder(name):
    """As the CLI joins a listing's name (os.path.join) or unzips a member: an accepted name stays inside."""
    root = os.path.realpath("/srv/target")
    if confine.is_safe_name(name):
        assert _inside(os.path.join(root, name), root)
        assert all(part not in ("", ".", "..") for part in name.split("/")) and "\\" not in name and "\0" not in name


@pytest.mark.filterwarnings("ignore:Duplicate name")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(NAMES, min_size=1, max_size=4))
def test_no_zip_member_is_written_outside_its_folder(tmp_path, names):
    box = Path(tempfile.mkdtemp(dir=os.path.realpath(tmp_path)))  # hypothesis calls this many times per tmp_path
    into = box / "a" / "into"
    into.mkdir(parents=True)
    archive = box / "d.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name in names:
            zipped.writestr(name.split("\0")[0] or "empty", b"data")  # a zip name ends at NUL (zipfile cuts it)
    try:
        written = confine.extract_zip(archive, into)
    except PipelineError as exc:
        assert "\n" not in str(exc)
        written = []
    archive.unlink()
    outside = [p for p in box.rglob("*") if not p.is_dir() and not _inside(str(p), str(into))]
    assert outside == []
    assert all((into / name).is_file() and confine.is_safe_name(name) for name in written)


def test_hidden_members_are_left_out_and_a_file_folder_clash_is_one_line(tmp_path):
    archive = tmp_path / "d.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name in ["train.csv", "train/a.png", ".DS_Store", "__MACOSX/._train.csv", "train/.hidden/x"]:
            zipped.writestr(name, b"x")
    (tmp_path / "into").mkdir()
    assert confine.extract_zip(archive, tmp_path / "into") == ["train.csv", "train/a.png"]
    assert confine.plain_files(tmp_path / "into", "the test") == ["train.csv", "train/a.png"]
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("train", b"a file")
        zipped.writestr("train/a.png", b"and a folder")
    (tmp_path / "again").mkdir()
    with pytest.raises(PipelineError, match=r"member 'train/a.png' cannot be written .* refusing to unzip it"):
        confine.extract_zip(archive, tmp_path / "again")


def test_links_and_devices_are_refused(tmp_path):
    folder = tmp_path / "download"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "best.pt").write_bytes(b"w")
    assert confine.plain_files(folder, "the test") == ["sub/best.pt"]
    (folder / "link.pt").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PipelineError, match="link.pt: not a plain file"):
        confine.plain_files(folder, "the test")
    (folder / "link.pt").unlink()
    os.mkfifo(folder / "pipe")
    with pytest.raises(PipelineError, match="pipe: not a plain file"):
        confine.plain_files(folder, "the test")


def test_only_the_expected_files_are_accepted(tmp_path):
    (tmp_path / "a.csv").write_text("x")
    (tmp_path / "extra.bin").write_text("x")
    with pytest.raises(PipelineError, match=r"extra.bin: not listed in the manifest: nothing used"):
        confine.expected_files(tmp_path, ["a.csv"], "the manifest")
    with pytest.raises(PipelineError, match=r"b.csv: listed in the manifest but not downloaded"):
        confine.expected_files(tmp_path, ["a.csv", "b.csv", "extra.bin"], "the manifest")


def test_staging_is_kept_and_named_only_when_a_check_fails(tmp_path):
    with confine.staging(tmp_path, ".dl-") as folder:
        (folder / "f").write_text("x")
    assert not folder.exists()
    with pytest.raises(PipelineError, match="bad"), confine.staging(tmp_path, ".dl-") as empty:
        raise PipelineError("bad")
    assert not empty.exists()  # nothing to look at
    with pytest.raises(PipelineError) as raised, confine.staging(tmp_path, ".dl-") as kept:
        (kept / "f").write_text("x")
        raise PipelineError("bad")
    assert str(raised.value) == f"bad; the download stays in {kept} for a look" and (kept / "f").is_file()


# ---- the download paths, hostile (the real CLI against the fake server) -------------------------------------


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize(
    "member, why",
    [
        (symlink_member("train/link.png", "/etc/passwd"), "is a link or a device"),
        (("/tmp/absolute.csv", b"x"), "is outside the folder"),
        (("train\\..\\..\\x.csv", b"x"), "is outside the folder"),
        (("train.csv", b"second"), "is a second member of that name"),
        (("zeros.bin", bytes(80 << 20)), "(a decompression bomb)"),
    ],
)
def test_a_hostile_competition_zip_writes_nothing(fake_kaggle, tmp_path, member, why):
    fake_kaggle.serve_zip(SLUG, [("train.csv", b"id\n1\n"), member])
    dest = tmp_path / "input" / SLUG
    with pytest.raises(PipelineError) as raised:
        cli.download_competition(SLUG, dest)
    message = str(raised.value)
    [kept] = list(dest.iterdir())  # the staging folder only, named in the one line
    assert why in message and "\n" not in message and message.endswith(f"the download stays in {kept} for a look")
    assert not Path("/tmp/absolute.csv").exists() and not (kept / "files" / "train" / "link.png").exists()


def test_a_hostile_output_listing_gives_only_plain_names_inside_the_target(fake_kaggle, tmp_path):
    fake_kaggle.serve_hostile_output(KERNEL, {"submission.csv": b"id\n1\n"}, escape_to=tmp_path)
    target = tmp_path / "kernels" / "out"
    files = cli.kernel_output(KERNEL, target)
    everything = sorted(p for p in tmp_path.rglob("*") if p.is_file() and ".kaggle" not in p.parts)
    assert all(target in p.parents for p in everything if "home" not in p.parts)
    assert sorted(p.relative_to(target).as_posix() for p in files) == sorted(
        ["submission.csv", "UNLISTED.bin", "some-kernel.log"]
    )
    assert not any(p.name.startswith(("escaped", "absolute", "dot", "empty")) for p in everything)
    assert "..\\backslash.txt" in hostile_names(tmp_path)  # served, and refused by name


def test_a_listing_longer_than_any_competition_is_refused_before_it_is_read(tmp_path, monkeypatch):
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for i in range(3):
            zipped.writestr(f"train/{i}.png", b"x")
    data = bytearray(archive.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    data[end + 8 : end + 12] = (60_000).to_bytes(2, "little") * 2  # entries on this disk, entries in all
    archive.write_bytes(bytes(data))
    monkeypatch.setattr(confine, "MAX_ZIP_MEMBERS", 50_000)
    (tmp_path / "into").mkdir()

    # Read first, the listing would be "not a valid zip" (it holds 3 of the 60,000 it declares): the count came first.
    with pytest.raises(PipelineError, match=r"many.zip: declares 60,000 members, more than any image competition"):
        confine.extract_zip(archive, tmp_path / "into")
    assert list((tmp_path / "into").iterdir()) == []


def test_more_members_than_free_inodes_is_one_line(tmp_path, monkeypatch):
    archive = tmp_path / "d.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for i in range(3):
            zipped.writestr(f"train/{i}.png", b"x")
    (tmp_path / "into").mkdir()
    real = os.statvfs(tmp_path)
    monkeypatch.setattr(
        confine.os, "statvfs", lambda path: os.statvfs_result((*real[:5], 100, 2, 2, *real[8:]))
    )  # f_files, f_ffree, f_favail

    with pytest.raises(PipelineError, match=r"holds 3 members but .* has 2 free inodes"):
        confine.extract_zip(archive, tmp_path / "into")
    assert list((tmp_path / "into").iterdir()) == []
