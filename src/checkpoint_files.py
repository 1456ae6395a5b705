"""Checkpoint files on disk that are never torn and whose damage is detected (what they hold: src.engine.checkpoint).

Each `<name>.pt` has a sidecar `<name>.pt.sha256` (size and SHA-256). Writes go temp file -> fsync ->
rename. A resumable checkpoint keeps its predecessor as `<name>.prev.pt`, so when the newest one is
missing, unverified (crash between the two renames) or damaged (bits changed on disk), loading falls
back to the previous good one. Loading always uses `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from src.atomic import atomic_path, write_text
from src.errors import PipelineError
from src.faults import crash_point


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _previous(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def save_checkpoint(path: Path, payload: dict, keep_previous: bool = False) -> None:
    """Write `payload` atomically with its hash; with `keep_previous` the old file becomes `<name>.prev.pt`."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    if keep_previous and path.exists():
        # The old hash goes first: at every instant a file sits beside its own hash or beside none (unverified,
        # used only as a last resort), never beside another file's hash (refused as damaged).
        _sidecar(_previous(path)).unlink(missing_ok=True)
        os.replace(path, _previous(path))
        if _sidecar(path).exists():
            os.replace(_sidecar(path), _sidecar(_previous(path)))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            crash_point(f"write_{path.name}")
            handle.write(data[len(data) // 2 :])
    write_text(_sidecar(path), json.dumps({"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}))


def _verified_bytes(path: Path) -> tuple[bytes | None, str]:
    """(file bytes, '') when the file matches its sidecar; (None, why) otherwise."""
    if not path.exists():
        return None, "missing"
    data = path.read_bytes()
    sidecar = _sidecar(path)
    if not sidecar.exists():
        return None, "no hash file (write interrupted?)"
    try:
        expected = json.loads(sidecar.read_text())
    except ValueError:
        return None, "unreadable hash file"
    if len(data) != expected.get("size"):
        return None, f"size {len(data)} bytes, expected {expected.get('size')}"
    if hashlib.sha256(data).hexdigest() != expected.get("sha256"):
        return None, "content does not match its SHA-256 (damaged on disk)"
    return data, ""


def load_checkpoint(path: Path, fallback: bool = False, log: Callable[[str], None] = print) -> dict:
    """Load a verified checkpoint; with `fallback`, use `<name>.prev.pt` when the newest is bad.

    A file without a hash file (copied by hand, or a write interrupted before its hash landed) is
    used only when no verified candidate exists; a file whose hash does not match is never used.
    """
    path = Path(path)
    candidates = [path, _previous(path)] if fallback else [path]
    problems, unverified = [], []
    for candidate in candidates:
        data, why = _verified_bytes(candidate)
        if data is None:
            problems.append(f"{candidate.name}: {why}")
            if why.startswith("no hash file"):
                unverified.append(candidate)
            continue
        if candidate != path:
            log(f"warning: {path} unusable ({problems[0]}); resuming from the previous good checkpoint {candidate}")
        loaded = _torch_load(data, candidate, problems)
        if loaded is not None:
            return loaded
    for candidate in unverified:
        loaded = _torch_load(candidate.read_bytes(), candidate, problems)
        if loaded is not None:
            return loaded
    if not any(candidate.exists() for candidate in candidates):
        raise PipelineError(f"{path}: checkpoint not found")
    raise PipelineError(f"{path}: damaged checkpoint ({'; '.join(problems)}); delete the run folder and train again")


def _torch_load(data: bytes, source: Path, problems: list[str]) -> dict | None:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        problems.append(f"{source.name}: {str(exc).splitlines()[0][:100]}")
        return None


def checkpoint_exists(path: Path) -> bool:
    """True when a resumable checkpoint (or its predecessor) is there."""
    return Path(path).exists() or _previous(Path(path)).exists()
