"""A local fake of the Kaggle API, just big enough to drive the real `kaggle` CLI in tests.

How the CLI reaches it: with `KAGGLE_API_ENVIRONMENT=LOCALHOST` kagglesdk POSTs every RPC to
`http://localhost/api/v1/<service>/<Rpc>` (port 80, JSON body), and `requests` sends that through
`HTTP_PROXY`. This server *is* the proxy: it answers absolute-form requests for `localhost` /
`127.0.0.1` itself and refuses every other host (it never forwards anything anywhere).
Uploads go to the `createUrl` it hands out (a PUT to `/upload/<token>` on this server); downloads are
a 302 from the RPC to `/files/...` on this server, as the real service redirects to storage.
"""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from local_server import LocalServer

# Recognisable fake credentials: tests assert these never leak into output or errors.
FAKE_USER = "fakeuser"
FAKE_KEY = "FAKEKEY-0123456789abcdef-DO-NOT-LEAK"
FAKE_TOKEN = "KGAT_FAKETOKEN-fedcba9876543210-DO-NOT-LEAK"

_LOCAL_HOSTS = {"localhost", "127.0.0.1"}
_DROPPED_HEADERS = {"authorization", "proxy-authorization", "cookie"}
# Variables that could point the CLI at real Kaggle or at a real account.
_SCRUBBED_ENV_PREFIXES = ("KAGGLE_",)
_SCRUBBED_ENV_NAMES = {
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "VERBOSE",
    "VERBOSE_OUTPUT",
    "XDG_CONFIG_HOME",
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


@dataclass
class Failure:
    status: int
    body: str
    content_type: str
    headers: dict[str, str]


@dataclass
class FakeDataset:
    files: dict[str, bytes]
    title: str
    versions: list[str] = field(default_factory=list)  # version notes, one per version after the first


class FakeKaggle(LocalServer):
    """The fake service's state plus the HTTP server that exposes it on 127.0.0.1:<free port>."""

    owner_attribute, thread_name = "fake", "fake-kaggle"

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _Handler

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self.uploads: dict[str, bytes] = {}  # upload token -> bytes PUT to its createUrl
        self.upload_names: dict[str, str] = {}  # upload token -> file name announced for it
        self.competition_files: dict[str, dict[str, bytes]] = {}  # slug -> files served as <slug>.zip
        self.competition_zips: dict[str, bytes] = {}  # slug -> raw zip bytes (overrides the files)
        self.submissions: list[dict[str, Any]] = []
        # what `competitions submission-limits` answers (a test sets numAllowedNow 0 for a spent day)
        self.submission_limits: dict[str, Any] = {"numToday": 1, "numTotal": 3, "numAllowedNow": 4}
        self.submission_rows: list[dict[str, Any]] = []  # what ListSubmissions shows, one per submission
        # Scoring: a submission stays PENDING for its first `pending_listings` listings, then is COMPLETE
        # with scores[slug] (public, private) as the strings the API sends (None = not shown).
        self.pending_listings = 0
        self.scores: dict[str, tuple[str | None, str | None]] = {}
        self.datasets: dict[str, FakeDataset] = {}  # "owner/slug" -> dataset
        self.kernels: dict[str, dict[str, Any]] = {}  # "owner/slug" -> SaveKernel body + "version"
        self.kernel_status: dict[str, tuple[str, str | None]] = {}  # ref -> (status, failure message)
        self.kernel_outputs: dict[str, dict[str, bytes]] = {}  # ref -> output files
        self.kernel_logs: dict[str, str] = {}  # ref -> what its last run printed (served as Kaggle's JSON events)
        # `kaggle quota`: the week's GPU hours; a GPU run adds its wall-clock seconds times `gpu_seconds_per_second`
        # (a test makes one short run cost a Kaggle session's hours); a test sets gpu_used_s for a spent week
        self.gpu_used_s, self.gpu_total_s, self.gpu_seconds_per_second = 0.0, 30 * 3600.0, 1.0
        self.quota_refresh_time = "2026-12-07T00:00:00Z"
        # With run_pushed, a pushed kernel is run (src.kaggle.local.offline_sandbox.run_offline: network blocked) on the
        # competition files and datasets it names, in a thread; its working folder becomes its output.
        self.run_pushed = False
        self._runs: list[threading.Thread] = []
        self.failures: dict[str, Failure] = {}  # Rpc name or path -> canned failure
        self._next_token = 0

    # ---- test controls ----------------------------------------------------------------------
    def fail(
        self,
        route: str,
        status: int,
        body: str | dict | None = None,
        *,
        as_json: bool = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer `route` (an Rpc name like "DownloadDataFiles", or a path) with `status` and `body`.

        With `as_json` the body is Kaggle's error shape `{"code": status, "message": body}` (a dict
        body is sent as given); otherwise plain text, as a front end answers a 429.
        """
        if as_json:
            payload = body if isinstance(body, dict) else {"code": status, "message": body or "error"}
            text, content_type = json.dumps(payload), "application/json"
        else:
            text, content_type = str(body or ""), "text/plain"
        self.failures[route] = Failure(status, text, content_type, dict(headers or {}))

    def add_dataset(self, ref: str, files: dict[str, bytes], title: str = "Existing dataset") -> None:
        self.datasets[ref] = FakeDataset(files=dict(files), title=title)

    def rpc_bodies(self, rpc: str) -> list[Any]:
        """JSON bodies of every call to the Rpc named `rpc`, oldest first."""
        return [r.json for r in self.requests if r.path.endswith("/" + rpc)]

    def env(self, home: str | os.PathLike, *, credentials: bool = True) -> dict[str, str]:
        """Environment that runs the real CLI against this server with dummy credentials in `home`.

        Real credentials, proxies and Kaggle settings from the calling environment are dropped.
        """
        home = Path(home)
        kaggle_dir = home / ".kaggle"
        kaggle_dir.mkdir(parents=True, exist_ok=True)
        kaggle_dir.chmod(stat.S_IRWXU)
        if credentials:
            config = kaggle_dir / "kaggle.json"
            config.write_text(json.dumps({"username": FAKE_USER, "key": FAKE_KEY}))
            config.chmod(stat.S_IRUSR | stat.S_IWUSR)
        tmp = home / "tmp"  # the CLI keeps resumable-upload state under $TMPDIR/.kaggle
        tmp.mkdir(exist_ok=True)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.upper().startswith(_SCRUBBED_ENV_PREFIXES) and k.upper() not in _SCRUBBED_ENV_NAMES
        }
        env.update(
            {
                "HOME": str(home),
                "TMPDIR": str(tmp),
                "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
                "HTTP_PROXY": self.url,
                "http_proxy": self.url,
                "HTTPS_PROXY": self.url,
                "https_proxy": self.url,  # a stray https call hits our refusal
            }
        )
        return env

    # ---- hostile listings (what src/confine.py must refuse) ---------------------------------
    def serve_hostile_output(self, ref: str, files: dict[str, bytes], escape_to: Path) -> None:
        """Kernel `ref`'s output is `files` plus names that would land outside any target folder (`..`, absolute,
        into `escape_to`), hidden or odd names, and an extra file nobody listed."""
        self.kernels.setdefault(ref, {"version": 1})
        self.kernel_status[ref] = ("COMPLETE", None)
        self.kernel_outputs[ref] = {**files, **{name: b"hostile" for name in hostile_names(escape_to)}}

    def serve_competition_of(self, exp) -> None:
        """Kaggle holds experiment `exp`'s competition files (its data folder less the local folds file) and runs
        what is pushed, as a training kernel needs."""
        root = Path(exp.config.data.root)
        self.competition_files[exp.config.competition] = {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in root.rglob("*")
            if p.is_file() and p != exp.folds_path
        }
        self.run_pushed = True

    def fail_run(self, ref: str, message: str = "CUDA out of memory") -> None:
        """Kernel `ref`'s latest run failed; the listing still shows the output of the run before it."""
        self.kernels.setdefault(ref, {"version": 1})
        self.kernel_status[ref] = ("ERROR", message)

    def serve_zip(self, slug: str, members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> None:
        """Competition `slug`'s download is a zip of exactly these members (names, types and sizes as given)."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for info, data in members:
                archive.writestr(info, data)
        self.competition_zips[slug] = buffer.getvalue()

    # ---- request handling (called from server threads) -------------------------------------
    def _new_token(self, prefix: str) -> str:
        with self._lock:
            self._next_token += 1
            return f"{prefix}-{self._next_token}"

    def _record(self, method: str, path: str, headers: dict[str, str], body: Any) -> None:
        kept = {k: v for k, v in headers.items() if k.lower() not in _DROPPED_HEADERS}
        with self._lock:
            self.requests.append(RecordedRequest(method, path, kept, body))

    def _authorized(self, header: str | None) -> bool:
        import base64

        basic = "Basic " + base64.b64encode(f"{FAKE_USER}:{FAKE_KEY}".encode()).decode()
        return header in (basic, f"Bearer {FAKE_TOKEN}")

    def _competition_zip(self, slug: str) -> bytes:
        if slug in self.competition_zips:
            return self.competition_zips[slug]
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in sorted(self.competition_files[slug].items()):
                archive.writestr(name, data)
        return buffer.getvalue()

    def _rpc(self, rpc: str, body: dict) -> tuple[int, Any, dict[str, str]]:
        """One API call -> (status, JSON payload, extra headers)."""
        if rpc == "IntrospectToken":
            if body.get("token") == FAKE_TOKEN:
                return 200, {"active": True, "username": FAKE_USER}, {}
            return 200, {"active": False}, {}

        if rpc == "DownloadDataFiles":
            slug = body.get("competitionName", "")
            if slug not in self.competition_files and slug not in self.competition_zips:
                return 404, {"code": 404, "message": "Competition not found"}, {}
            return 302, None, {"Location": f"http://localhost/files/competitions/{slug}.zip"}

        if rpc in ("StartSubmissionUpload", "StartBlobUpload"):
            if rpc == "StartSubmissionUpload" and body.get("competitionName") not in self.competition_files:
                return 404, {"code": 404, "message": "Competition not found"}, {}
            token = self._new_token("blob")
            self.upload_names[token] = body.get("fileName") or body.get("name", "")
            return 200, {"token": token, "createUrl": f"{self.url}/upload/{token}"}, {}

        if rpc == "CreateSubmission":
            token = body.get("blobFileTokens", "")
            if token not in self.uploads:
                return 400, {"code": 400, "message": "Unknown upload token"}, {}
            self.submissions.append(dict(body))
            self._add_submission_row(body, self.upload_names.get(token, ""))
            return (
                200,
                {"message": f"Successfully submitted to {body.get('competitionName')}", "ref": len(self.submissions)},
                {},
            )

        if rpc == "CreateCodeSubmission":
            ref = f"{body.get('kernelOwner')}/{body.get('kernelSlug')}"
            if ref not in self.kernels:
                return 404, {"code": 404, "message": "Kernel not found"}, {}
            self.submissions.append(dict(body))
            self._add_submission_row(body, body.get("fileName", ""))
            return (
                200,
                {"message": f"Successfully submitted to {body.get('competitionName')}", "ref": len(self.submissions)},
                {},
            )

        if rpc == "ListSubmissions":
            return 200, {"submissions": self._list_submissions(body.get("competitionName", ""))}, {}

        if rpc == "GetSubmissionLimits":
            return 200, dict(self.submission_limits), {}

        if rpc == "GetDatasetStatus":
            ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
            if ref not in self.datasets:
                return 404, {"code": 404, "message": "Dataset not found"}, {}
            return 200, {"status": "READY"}, {}

        if rpc == "CreateDataset":
            ref = f"{body.get('ownerSlug')}/{body.get('slug')}"
            if ref in self.datasets:
                return 200, {"status": "error", "error": "A dataset with this slug already exists"}, {}
            self.datasets[ref] = FakeDataset(files=self._uploaded_files(body), title=body.get("title", ""))
            return 200, {"ref": ref, "url": f"http://localhost/datasets/{ref}", "status": "ok"}, {}

        if rpc == "CreateDatasetVersion":
            ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
            if ref not in self.datasets:
                return 404, {"code": 404, "message": "Dataset not found"}, {}
            version = body.get("body", {})
            self.datasets[ref].files = self._uploaded_files(version)
            self.datasets[ref].versions.append(version.get("versionNotes", ""))
            return 200, {"ref": ref, "url": f"http://localhost/datasets/{ref}", "status": "ok"}, {}

        if rpc == "SaveKernel":
            ref = body.get("slug", "")
            saved = dict(body, version=self.kernels.get(ref, {}).get("version", 0) + 1)
            self.kernels[ref] = saved
            self.kernel_status.setdefault(ref, ("RUNNING", None))
            if self.run_pushed:
                self.kernel_status[ref] = ("RUNNING", None)
                thread = threading.Thread(target=self._run_kernel, args=(ref, dict(body)), daemon=True)
                self._runs.append(thread)
                thread.start()
            return (
                200,
                {"ref": f"/code/{ref}", "url": f"http://localhost/code/{ref}", "versionNumber": saved["version"]},
                {},
            )

        if rpc == "GetAcceleratorQuotaStatistics":
            with self._lock:
                used, total = self.gpu_used_s, self.gpu_total_s
            return (
                200,
                {
                    "quotaRefreshTime": self.quota_refresh_time,
                    "gpuQuota": {"timeUsed": f"{used:.3f}s", "totalTimeAllowed": f"{total:.0f}s"},
                    "tpuQuota": {"timeUsed": "0s", "totalTimeAllowed": f"{20 * 3600}s"},
                },
                {},
            )

        if rpc in ("GetKernelSessionStatus", "ListKernelSessionOutput"):
            ref = f"{body.get('userName')}/{body.get('kernelSlug')}"
            if ref not in self.kernels and ref not in self.kernel_status:
                return 404, {"code": 404, "message": "Kernel not found"}, {}
            if rpc == "GetKernelSessionStatus":
                status, failure = self.kernel_status.get(ref, ("RUNNING", None))
                return 200, {"status": status, "failureMessage": failure}, {}
            files = [
                {"url": f"http://localhost/kernel-output/{ref}/{name}", "fileName": name}
                for name in sorted(self.kernel_outputs.get(ref, {}))
            ]
            return 200, {"files": files, "log": _log_events(self.kernel_logs.get(ref, ""))}, {}

        return 404, {"code": 404, "message": f"fake Kaggle has no RPC {rpc}"}, {}

    def wait_for_runs(self, timeout_s: float = 600) -> None:
        """Wait until every kernel run started by a push has ended."""
        for thread in self._runs:
            thread.join(timeout_s)

    def _run_kernel(self, ref: str, body: dict) -> None:
        """Run a pushed script as Kaggle would: offline, its competition and datasets under input/<slug>."""
        import tempfile

        from src.kaggle.local.offline_sandbox import run_offline

        with tempfile.TemporaryDirectory(prefix="fake-kaggle-run-") as tmp:
            inputs = {}
            for slug in body.get("competitionDataSources") or []:
                inputs[slug] = _materialize(Path(tmp, "competitions", slug), self.competition_files.get(slug, {}))
            for source in body.get("datasetDataSources") or []:
                if source in self.datasets:
                    inputs[source.split("/")[1]] = _materialize(
                        Path(tmp, "datasets", source), self.datasets[source].files
                    )
            script = Path(tmp, "script.py")
            script.write_text(body.get("text", ""), encoding="utf-8")
            # the push's -t (sessionTimeoutSeconds) limits the run, as on Kaggle
            run = run_offline(script, inputs, timeout_s=min(600, body.get("sessionTimeoutSeconds") or 600))
        with self._lock:
            self.kernel_outputs[ref], self.kernel_logs[ref] = run.files, run.output
            if body.get("enableGpu"):
                self.gpu_used_s += run.seconds * self.gpu_seconds_per_second
            tail = run.output.strip().splitlines()[-1:] or ["no output"]
            self.kernel_status[ref] = ("COMPLETE", None) if run.returncode == 0 else ("ERROR", tail[0])

    def _add_submission_row(self, body: dict, file_name: str) -> None:
        with self._lock:
            self.submission_rows.append(
                {
                    "ref": 1000 + len(self.submission_rows),
                    "competition": body.get("competitionName", ""),
                    "fileName": file_name,
                    "description": body.get("submissionDescription", ""),
                    "date": f"2025-01-01T00:00:{len(self.submission_rows):02d}.000Z",
                    "listings": 0,
                }
            )

    def _list_submissions(self, slug: str) -> list[dict]:
        """Newest first, as the real service sorts by date; each listing brings a pending one closer to scored."""
        shown = []
        for row in reversed(self.submission_rows):
            if row["competition"] != slug:
                continue
            row["listings"] += 1
            scored = row["listings"] > self.pending_listings
            public, private = self.scores.get(slug, ("0.5", None)) if scored else (None, None)
            shown.append(
                {
                    "ref": row["ref"],
                    "fileName": row["fileName"],
                    "date": row["date"],
                    "description": row["description"],
                    "status": "COMPLETE" if scored else "PENDING",
                    **({"publicScore": public} if public is not None else {}),
                    **({"privateScore": private} if private is not None else {}),
                }
            )
        return shown

    def _uploaded_files(self, body: dict) -> dict[str, bytes]:
        tokens = [f.get("token", "") for f in body.get("files", [])]
        return {self.upload_names[t]: self.uploads[t] for t in tokens if t in self.uploads}

    def _download(self, path: str) -> tuple[int, bytes, str]:
        """GET of a storage URL handed out by an RPC -> (status, bytes, content type)."""
        parts = path.strip("/").split("/")
        if parts[:2] == ["files", "competitions"] and len(parts) == 3 and parts[2].endswith(".zip"):
            slug = parts[2][: -len(".zip")]
            if slug in self.competition_files or slug in self.competition_zips:
                return 200, self._competition_zip(slug), "application/zip"
        if parts[0] == "kernel-output" and len(parts) >= 4:
            data = self.kernel_outputs.get(f"{parts[1]}/{parts[2]}", {}).get("/".join(parts[3:]))
            if data is not None:
                return 200, data, "application/octet-stream"
        return 404, b"not found", "text/plain"


def hostile_names(escape_to: Path) -> list[str]:
    """Output names a hostile listing gives: each would write outside the target folder, or is not a plain name."""
    return [
        "../escaped.txt",
        "oof/../../escaped-deep.txt",
        str(escape_to / "absolute.txt"),
        "..\\backslash.txt",
        ".hidden",
        "./dot.txt",
        "a//empty-part.txt",
        "UNLISTED.bin",
    ]


def symlink_member(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    """A zip member that unzips (with a naive extractor) to a symbolic link `name` -> `target`."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix: the mode bits below are read
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def _log_events(text: str) -> str:
    """A run's output as Kaggle serves a finished session's log: a JSON array of {stream_name, time, data}."""
    lines = text.splitlines(keepends=True)
    return json.dumps([{"stream_name": "stdout", "time": 0.1 * i, "data": line} for i, line in enumerate(lines)])


def _materialize(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKaggle
    timeout = 15  # a stuck client cannot hold a server thread for longer

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def _target(self) -> str | None:
        """The request's path on this fake, or None when it asks for a host we must not reach."""
        parts = urlsplit(self.path)
        if parts.scheme and parts.hostname not in _LOCAL_HOSTS:
            return None
        return unquote(parts.path)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(
        self,
        status: int,
        data: bytes = b"",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self) -> None:
        self._send(502, b"fake Kaggle server refuses to reach any host but itself", "text/plain")

    def do_CONNECT(self) -> None:  # noqa: N802 - an https call would leave the machine: refuse it
        self._refuse()

    def do_GET(self) -> None:  # noqa: N802
        path = self._target()
        if path is None:
            return self._refuse()
        self.fake._record("GET", path, dict(self.headers), None)
        failure = self.fake.failures.get(path)
        if failure:
            return self._send(failure.status, failure.body.encode(), failure.content_type, failure.headers)
        status, data, content_type = self.fake._download(path)
        self._send(status, data, content_type)

    def do_PUT(self) -> None:  # noqa: N802
        path = self._target()
        if path is None:
            return self._refuse()
        data = self._body()
        self.fake._record("PUT", path, dict(self.headers), None)
        failure = self.fake.failures.get(path)
        if failure:
            return self._send(failure.status, failure.body.encode(), failure.content_type, failure.headers)
        token = path.rsplit("/", 1)[-1]
        if not path.startswith("/upload/") or token not in self.fake.upload_names:
            return self._send(404, b"unknown upload", "text/plain")
        with self.fake._lock:
            self.fake.uploads[token] = data
        self._send(200, b"{}")

    def do_POST(self) -> None:  # noqa: N802
        path = self._target()
        if path is None:
            return self._refuse()
        raw = self._body()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        self.fake._record("POST", path, dict(self.headers), body)
        if not path.startswith("/api/v1/") or not isinstance(body, dict):
            return self._send(404, json.dumps({"code": 404, "message": "Not found"}).encode())
        rpc = path.rsplit("/", 1)[-1]
        failure = self.fake.failures.get(rpc) or self.fake.failures.get(path)
        if failure:
            return self._send(failure.status, failure.body.encode(), failure.content_type, failure.headers)
        if rpc != "IntrospectToken" and not self.fake._authorized(self.headers.get("Authorization")):
            return self._send(401, json.dumps({"code": 401, "message": "Unauthenticated"}).encode())
        status, payload, headers = self.fake._rpc(rpc, body)
        data = b"" if payload is None else json.dumps(payload).encode()
        self._send(status, data, "application/json", headers)


# ---- pytest wiring (import `fake_kaggle` into a test module to use it) -----------------------------


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Make `env` the whole process environment (the CLI subprocess inherits it)."""
    for name in list(os.environ):
        if name not in env:
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def fake_kaggle(tmp_path, monkeypatch, caplog, capfd):
    """The fake server, with this process pointed at it through dummy credentials in a temp HOME.

    On teardown it checks that no planted credential reached a log line or the captured output.
    """
    caplog.set_level(logging.DEBUG, logger="src.kaggle")
    with FakeKaggle() as server:
        use_env(monkeypatch, server.env(tmp_path / "home"))
        yield server
    out, err = capfd.readouterr()
    for secret in (FAKE_KEY, FAKE_TOKEN):
        assert secret not in caplog.text + out + err
    for request in server.requests:
        assert "authorization" not in {name.lower() for name in request.headers}
