"""No credential leaves this machine: scan built files (and the archives embedded in scripts) for secrets.

What counts as a secret: Kaggle's own credentials (key, tokens, kaggle.json) and the value of any environment
variable whose name says it is secret, found by value; and anything shaped like a credential, found by its shape
with detect-secrets' maintained patterns (AWS keys, private keys, URLs with a password, GitHub, GitLab, OpenAI,
PyPI, Slack and Stripe tokens) plus Hugging Face tokens (hf_...), which detect-secrets has no plugin for. The
kernel builders and the course package scan before anything moves into place.
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
_HUGGING_FACE_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{30,}")


def credential_shapes() -> list[tuple[str, re.Pattern]]:
    """(what, pattern) of every credential shape looked for: detect-secrets' plugins' own patterns (its keyword and
    entropy detectors are left out: they flag ordinary code and every checksum), then Hugging Face tokens."""
    from detect_secrets.plugins import (
        aws,
        basic_auth,
        github_token,
        gitlab_token,
        openai,
        private_key,
        pypi_token,
        slack,
        stripe,
    )

    plugins = (
        aws.AWSKeyDetector, private_key.PrivateKeyDetector, basic_auth.BasicAuthDetector,
        github_token.GitHubTokenDetector, gitlab_token.GitLabTokenDetector, openai.OpenAIDetector,
        pypi_token.PypiTokenDetector, slack.SlackDetector, stripe.StripeDetector,
    )  # fmt: skip
    shapes = [(plugin.secret_type, pattern) for plugin in plugins for pattern in plugin().denylist]
    return [*shapes, ("Hugging Face Token", _HUGGING_FACE_TOKEN)]


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
    """One line per file under `root` (and per file embedded in a script's archive) holding a secret, by value or
    by shape."""
    leaks, shapes = [], credential_shapes()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        shown = path.relative_to(root).as_posix()
        leaks += [f"{shown} holds {what}" for what in _secrets_in_file(path, secrets, shapes)]
        if path.suffix == ".py":
            for name, data in extract_archive(path.read_text(encoding="utf-8", errors="replace")).items():
                leaks += [f"{shown} embeds {name}, which holds {secrets[s]}" for s in secrets if s.encode() in data]
                leaks += [f"{shown} embeds {name}, which holds {what}" for what in _shapes_in(data, shapes)]
    return leaks


def _shapes_in(data: bytes, shapes: list[tuple[str, re.Pattern]]) -> list[str]:
    """'what looks like a <kind>' for each credential shape found in `data` (read as latin-1: one char a byte)."""
    text = data.decode("latin-1")
    return sorted({f"what looks like a {kind}" for kind, pattern in shapes if pattern.search(text)})


def _secrets_in_file(path: Path, secrets: dict[str, str], shapes=()) -> list[str]:
    """Which secrets (by value) and credential shapes occur in the file, read in blocks (checkpoints can be large);
    blocks overlap by 4 KB so nothing is missed at a boundary."""
    needles = {s.encode(): what for s, what in secrets.items()}
    overlap = max([len(n) for n in needles] + [4096]) - 1
    hits, tail = set(), b""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            window = tail + block
            hits.update(what for needle, what in needles.items() if needle in window)
            hits.update(_shapes_in(window, shapes) if shapes else ())
            tail = window[-overlap:]
    return sorted(hits)
