"""No credential leaves this machine: scan built files (and the archives embedded in scripts) for secrets.

What counts as a secret: Kaggle's own credentials (key, tokens, kaggle.json) and the value of any environment
variable whose name says it is secret. The kernel builders and the course package scan before anything moves
into place.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from src.errors import PipelineError
from src.kaggle.local import cli
from src.kaggle.local.kernel_script import extract_archive
from src.kaggle.on_kaggle.install_wheels import tree_sha256

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE", re.IGNORECASE)


def seal(staging: Path) -> dict[str, str]:
    """Refuse a staged build holding a credential; return every staged file's sha256 (relative path -> sum)."""
    leaks = find_leaks(staging, secret_values())
    if leaks:
        raise PipelineError(
            f"refusing to build the kernel: {leaks[0]}{f' (and {len(leaks) - 1} more)' if len(leaks) > 1 else ''}: "
            "take the credential out of the config or code and build again"
        )
    return tree_sha256(staging)


def secret_values() -> dict[str, str]:
    """Every credential in reach -> where it comes from: Kaggle's (key, tokens, kaggle.json) and any
    environment variable whose name says it is secret."""
    found = {value: "a Kaggle credential" for value in cli._secrets()}
    for name, value in os.environ.items():
        if _SECRET_NAME.search(name) and len(value) >= 8 and value not in found:
            found[value] = f"the value of ${name}"
    return found


def find_leaks(root: Path, secrets: dict[str, str]) -> list[str]:
    """One line per file under `root` (and per file embedded in a script's archive) holding a secret."""
    leaks = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        shown = path.relative_to(root).as_posix()
        leaks += [f"{shown} holds {what}" for what in _secrets_in_file(path, secrets)]
        if path.suffix == ".py":
            for name, data in extract_archive(path.read_text(encoding="utf-8", errors="replace")).items():
                leaks += [f"{shown} embeds {name}, which holds {secrets[s]}" for s in secrets if s.encode() in data]
    return leaks


def _secrets_in_file(path: Path, secrets: dict[str, str]) -> list[str]:
    """Which secrets occur in the file, read in blocks (checkpoints can be large)."""
    if not secrets:
        return []
    needles = {s.encode(): what for s, what in secrets.items()}
    overlap = max(len(n) for n in needles) - 1
    hits, tail = set(), b""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            window = tail + block
            hits.update(what for needle, what in needles.items() if needle in window)
            tail = window[-overlap:] if overlap else b""
    return sorted(hits)
