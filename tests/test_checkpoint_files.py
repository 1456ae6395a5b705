"""Checkpoint files (src/checkpoint_files.py): round trip, SHA-256 sidecar, damage refused, fallback to `<name>.prev.pt`."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from src.checkpoint_files import checkpoint_exists, load_checkpoint, save_checkpoint
from src.errors import PipelineError

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # OpenMP spin-waits: 1 thread on a shared box


def payload(epoch: int) -> dict:
    generator = torch.Generator().manual_seed(epoch)
    return {
        "epoch": epoch,
        "model": {"w": torch.randn(4, 3, generator=generator), "b": torch.arange(3)},
        "optimizer": {"lr": 0.01 * epoch, "betas": [0.9, 0.999]},
        "note": f"epoch {epoch}",
    }


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def refused(path: Path, **kwargs) -> str:
    """The one-line message load_checkpoint refuses `path` with."""
    with pytest.raises(PipelineError) as error:
        load_checkpoint(path, log=lambda message: None, **kwargs)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


def test_round_trip_keeps_every_value(tmp_path):
    path = tmp_path / "run" / "last.pt"
    save_checkpoint(path, payload(3))
    loaded = load_checkpoint(path)
    assert (
        loaded["epoch"] == 3
        and loaded["note"] == "epoch 3"
        and loaded["optimizer"] == {"lr": 0.03, "betas": [0.9, 0.999]}
    )
    assert torch.equal(loaded["model"]["w"], payload(3)["model"]["w"]) and loaded["model"]["b"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt", "last.pt.sha256"]  # no temp file left


def test_sidecar_holds_the_files_size_and_sha256(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint(path, payload(1))
    data = path.read_bytes()
    assert json.loads(sidecar(path).read_text()) == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_a_flipped_byte_is_refused_in_one_line(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint(path, payload(1))
    flip_a_byte(path)
    message = refused(path)
    assert "damaged checkpoint" in message and "does not match its SHA-256" in message
    assert message.endswith("delete the run folder and train again")
    # Damage is never excused by fallback when there is nothing to fall back to.
    assert "damaged on disk" in refused(path, fallback=True)


def test_a_truncated_file_is_refused_by_its_size(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, payload(1))
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:100])
    assert f"size 100 bytes, expected {size}" in refused(path)


def test_keep_previous_rotates_the_old_file_and_its_hash(tmp_path):
    path = tmp_path / "last.pt"
    previous = tmp_path / "last.prev.pt"
    save_checkpoint(path, payload(1), keep_previous=True)
    assert not previous.exists()
    for epoch in (2, 3):
        save_checkpoint(path, payload(epoch), keep_previous=True)
    assert load_checkpoint(path)["epoch"] == 3 and load_checkpoint(previous)["epoch"] == 2  # both verified
    save_checkpoint(tmp_path / "best.pt", payload(1))
    save_checkpoint(tmp_path / "best.pt", payload(2))
    assert not (tmp_path / "best.prev.pt").exists() and load_checkpoint(tmp_path / "best.pt")["epoch"] == 2


def test_fallback_uses_the_previous_file_when_the_newest_is_damaged(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, payload(1), keep_previous=True)
    save_checkpoint(path, payload(2), keep_previous=True)
    flip_a_byte(path)
    messages = []
    assert load_checkpoint(path, fallback=True, log=messages.append)["epoch"] == 1
    assert len(messages) == 1 and "last.prev.pt" in messages[0] and "damaged on disk" in messages[0]
    assert "damaged checkpoint" in refused(path)  # without fallback the damaged newest is refused


@pytest.mark.parametrize("problem", ["no sidecar", "missing"])
def test_fallback_prefers_the_verified_previous_file(tmp_path, problem):
    path = tmp_path / "last.pt"
    save_checkpoint(path, payload(1), keep_previous=True)
    save_checkpoint(path, payload(2), keep_previous=True)
    (sidecar(path) if problem == "no sidecar" else path).unlink()
    messages = []
    assert load_checkpoint(path, fallback=True, log=messages.append)["epoch"] == 1
    why = "no hash file" if problem == "no sidecar" else "missing"
    assert len(messages) == 1 and f"last.pt: {why}" in messages[0]


def test_a_file_without_sidecar_is_used_only_when_nothing_verified_exists(tmp_path):
    path = tmp_path / "last.pt"
    torch.save(payload(5), path)  # copied by hand: no hash file
    assert load_checkpoint(path)["epoch"] == 5
    assert load_checkpoint(path, fallback=True)["epoch"] == 5
    save_checkpoint(tmp_path / "last.prev.pt", payload(4))
    assert load_checkpoint(path, fallback=True, log=lambda message: None)["epoch"] == 4


def test_a_payload_that_weights_only_refuses_is_an_error_not_an_unpickle(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1, "path": Path("/somewhere")})
    message = refused(path)
    assert "damaged checkpoint" in message and "last.pt:" in message


def test_not_found(tmp_path):
    assert refused(tmp_path / "fold-0" / "last.pt") == f"{tmp_path / 'fold-0' / 'last.pt'}: checkpoint not found"
    assert refused(tmp_path / "last.pt", fallback=True).endswith("checkpoint not found")


def test_checkpoint_exists(tmp_path):
    path = tmp_path / "last.pt"
    assert not checkpoint_exists(path)
    save_checkpoint(tmp_path / "last.prev.pt", payload(1))
    assert checkpoint_exists(path)
    (tmp_path / "last.prev.pt").unlink()
    save_checkpoint(path, payload(1))
    assert checkpoint_exists(path) and not checkpoint_exists(tmp_path / "best.pt")


def test_a_write_killed_half_way_leaves_the_previous_checkpoint(tmp_path):
    """SIGKILL inside the second save's write (after the rotation): the previous good file is what loads."""
    path = tmp_path / "last.pt"
    code = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); from src.checkpoint_files import save_checkpoint; "
        "[save_checkpoint(sys.argv[2], {'epoch': e, 'w': torch.zeros(1000)}, keep_previous=True) for e in (1, 2)]"
    )
    env = {**os.environ, "PIPELINE_CRASH_AT": "write_last.pt:2"}
    killed = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), str(path)], env=env, capture_output=True, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not path.exists() and list(tmp_path.glob(".last.pt.*.tmp"))  # the torn bytes stayed in the temp file
    messages = []
    assert load_checkpoint(path, fallback=True, log=messages.append)["epoch"] == 1 and "last.pt: missing" in messages[0]
    save_checkpoint(path, payload(2), keep_previous=True)
    assert not list(tmp_path.glob(".*.tmp")) and load_checkpoint(path)["epoch"] == 2


def test_killed_between_the_two_rotation_renames_still_resumes(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, payload(1), keep_previous=True)
    save_checkpoint(path, payload(2), keep_previous=True)
    real_replace, calls = os.replace, []

    def replace_then_die(source, target):
        calls.append(target)
        if len(calls) == 2:  # the sidecar's rename: the process dies just before it
            raise RuntimeError("killed")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(RuntimeError, match="killed"):
        save_checkpoint(path, payload(3), keep_previous=True)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not path.exists() and (tmp_path / "last.prev.pt").exists()
    assert load_checkpoint(path, fallback=True, log=lambda message: None)["epoch"] == 2


def test_rotating_an_unverified_file_does_not_pair_it_with_a_stale_hash(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, payload(1), keep_previous=True)
    save_checkpoint(path, payload(2), keep_previous=True)
    sidecar(path).unlink()  # killed after last.pt was renamed into place, before its hash landed
    save_checkpoint(path, payload(3), keep_previous=True)
    flip_a_byte(path)
    assert load_checkpoint(path, fallback=True, log=lambda message: None)["epoch"] == 2
