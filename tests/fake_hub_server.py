"""A local stand-in for the Hugging Face hub, just big enough for the real `hf_hub_download` (and timm's use of it).

What the client asks (huggingface_hub 2.x, file_download.py): `HEAD {endpoint}/{repo_id}/resolve/{revision}/{file}`
for the file's metadata, then `GET` of the same URL (with `Range: bytes=N-` when it resumes). The HEAD answer must
carry `X-Repo-Commit` (the commit the revision points at), an `ETag` and the size; for an LFS file the hub adds
`X-Linked-Etag` (the file's SHA-256) and `X-Linked-Size`, which the client prefers. The real hub then redirects the
download to a CDN host; here the same URL answers the GET itself. A missing file is a 404 with
`X-Error-Code: EntryNotFound`, a missing repository a 401 with `X-Error-Code: RepoNotFound` (as the hub answers, so
that private repositories do not show). The client also asks `GET /api/agent-harnesses` once a day (a registry of
AI coding agents for its user-agent header; cached under HF_HOME): it gets an empty registry. Every request is
recorded, so a test can count them.

The `fake_hub` fixture points huggingface_hub at this server (its constants are read at import, so they are
patched), gives it an empty cache and no token, and refuses any socket connection from this process that is not
to the loopback address: no request leaves 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from local_server import LocalServer

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
AGENT_REGISTRY = "/api/agent-harnesses"


@dataclass
class HubRequest:
    method: str
    path: str
    headers: dict[str, str]


class FakeHub(LocalServer):
    """Repositories of files (`repos[repo_id][file name] = bytes`) served on 127.0.0.1:<free port>."""

    owner_attribute, thread_name = "hub", "fake-hub"

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _Handler

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, str] = {}
        self.requests: list[HubRequest] = []
        self.failures: dict[str, int] = {}  # file name -> HTTP status to answer instead
        self.claimed_sha256: dict[str, str] = {}  # file name -> the SHA-256 its ETag claims (a damaged transfer)

    def add_repo(self, repo_id: str, files: dict[str, bytes]) -> str:
        """Serve `files` as the latest commit of `repo_id`; return that commit's hash."""
        self.repos[repo_id] = dict(files)
        self.commits[repo_id] = hashlib.sha1(
            repo_id.encode() + b"".join(files[name] for name in sorted(files))
        ).hexdigest()
        return self.commits[repo_id]

    def record(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(HubRequest(method, path, headers))

    def answer(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        """(status, body, headers) for a request of `path`, as the hub answers `/{repo}/resolve/{rev}/{file}`."""
        if urlsplit(path).path == AGENT_REGISTRY:
            return (
                200,
                json.dumps({"standardEnvVars": [], "harnesses": {}}).encode(),
                {"Content-Type": "application/json"},
            )
        repo_id, sep, rest = unquote(urlsplit(path).path).lstrip("/").partition("/resolve/")
        revision, _, name = rest.partition("/")
        if not sep or repo_id not in self.repos:
            return (
                401,
                b"Repository not found",
                {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
            )
        commit = self.commits[repo_id]
        if revision not in ("main", commit):
            return 404, b"Revision not found", {"X-Error-Code": "RevisionNotFound", "X-Repo-Commit": commit}
        if name in self.failures:
            return self.failures[name], b"injected failure", {"X-Repo-Commit": commit}
        if name not in self.repos[repo_id]:
            return (
                404,
                b"Entry not found",
                {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found", "X-Repo-Commit": commit},
            )
        data = self.repos[repo_id][name]
        sha256 = self.claimed_sha256.get(name) or hashlib.sha256(data).hexdigest()
        return (
            200,
            data,
            {
                "X-Repo-Commit": commit,
                "ETag": f'"{sha256}"',
                "X-Linked-Etag": f'"{sha256}"',
                "X-Linked-Size": str(len(data)),
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
            },
        )


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    timeout = 15

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def _reply(self, with_body: bool) -> None:
        self.hub.record(self.command, self.path, dict(self.headers))
        status, data, headers = self.hub.answer(self.path)
        first = 0
        ranged = self.headers.get("Range", "")
        if status == 200 and ranged.startswith("bytes=") and ranged[6:].rstrip("-").isdigit():
            first = int(ranged[6:].rstrip("-"))
            status = 206
            headers["Content-Range"] = f"bytes {first}-{len(data) - 1}/{len(data)}"
        body = data[first:]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self._reply(with_body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._reply(with_body=True)


def _loopback_only(real_connect):
    def connect(sock: socket.socket, address) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in _LOOPBACK:
            raise AssertionError(f"test tried to reach {address}: only 127.0.0.1 is allowed")
        return real_connect(sock, address)

    return connect


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The fake hub, with this process's huggingface_hub pointed at it (empty cache, no token, no proxy for it)."""
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(socket.socket, "connect", _loopback_only(socket.socket.connect))
    with FakeHub() as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
        monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-home" / "stored_tokens"))
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "hf-home" / "agent_harnesses.json"))
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_DISABLE_PROGRESS_BARS"):
            monkeypatch.delenv(name, raising=False)
        for name in ("NO_PROXY", "no_proxy"):  # the fake Kaggle server may be this process's proxy: not for the hub
            monkeypatch.setenv(name, "127.0.0.1")
        huggingface_hub.close_session()  # its HTTP client reads proxy settings when it is made: make it afresh
        yield hub
        huggingface_hub.close_session()
