"""Thin wrappers over the official `kaggle` CLI (run as a subprocess; the API is never re-implemented).

Each function takes plain values, runs one or two `kaggle` commands, reads their output (the CLI
exits 0 on several failures, so the exit code alone is not enough) and returns what it parsed.
Failures come back as one-line `PipelineError`s naming the problem and the fix. Credential values
(KAGGLE_KEY, KAGGLE_API_TOKEN, the key in kaggle.json, cached tokens) are scrubbed from every
message and log line.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from src import confine
from src.artifacts import DATASET_METADATA, KERNEL_METADATA
from src.errors import PipelineError

logger = logging.getLogger(__name__)

KAGGLE_WEB = "https://www.kaggle.com"
_TRANSFER_TIMEOUT_S = 6 * 3600  # downloads and uploads of image data and weights
_CALL_TIMEOUT_S = 600  # everything else is a few small RPCs
_REDACTED = "[redacted]"
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_AUTH_HELP = "authentication required to call the kaggle api"
_SUBMISSIONS_HEADER = "ref,fileName,date,description,status,publicScore,privateScore"


@dataclass(frozen=True)
class KernelStatus:
    """A kernel's latest run: `state` is queued, running, complete, error, cancel_requested, ..."""

    state: str
    failure_message: str | None = None


@dataclass(frozen=True)
class GpuQuota:
    """This week's GPU hours on Kaggle (`kaggle quota`): used, total, and when the week starts again."""

    used_h: float
    total_h: float
    refresh_at: str

    @property
    def left_h(self) -> float:
        return max(0.0, self.total_h - self.used_h)


@dataclass(frozen=True)
class Submission:
    """One row of `kaggle competitions submissions`: `status` is pending, complete or error; the scores are
    None until Kaggle has scored it (the private one until the competition has closed)."""

    ref: int
    file_name: str
    date: str
    description: str
    status: str
    public_score: float | None
    private_score: float | None


# ---- public API -------------------------------------------------------------------------------


def kaggle_executable() -> Path:
    """The `kaggle` CLI installed beside the running interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / "kaggle"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("kaggle")
    if found:
        return Path(found)
    raise PipelineError(
        f"the kaggle CLI is not installed beside {sys.executable} nor on PATH: "
        "install the pinned requirements (pip install -r requirements.txt) into this environment"
    )


def download_competition(slug: str, dest_dir: str | os.PathLike) -> list[Path]:
    """Download competition `slug`'s data into `dest_dir`, unzip it there, and return the files written.

    The CLI writes into a fresh staging folder, where only `<slug>.zip` is accepted; it is unzipped there under
    src.confine's rule (no member outside the folder, no link, no bomb), and only then is each file renamed into
    `dest_dir`. When a check fails nothing reaches `dest_dir` and the staging folder is kept and named.
    """
    _check_slug(slug)
    dest = Path(dest_dir)
    command = f"kaggle competitions download {slug}"
    # A fresh staging folder: the CLI skips files it finds already present, and only what this call fetched is used.
    with confine.staging(dest, ".kaggle-download-") as staging:
        fetched = staging / "fetched"
        _run(
            ["competitions", "download", slug, "-p", str(fetched), "-q"],
            command,
            kind="competition",
            name=slug,
            timeout_s=_TRANSFER_TIMEOUT_S,
        )
        if not fetched.is_dir() or not any(fetched.iterdir()):
            raise PipelineError(f"{command}: the CLI finished but downloaded nothing: rerun it by hand to see why")
        confine.expected_files(fetched, [f"{slug}.zip"], f"what {command} writes ({slug}.zip)")
        unzipped = staging / "files"
        unzipped.mkdir()
        names = confine.extract_zip(fetched / f"{slug}.zip", unzipped)
        names = confine.expected_files(unzipped, names, f"{slug}.zip")  # nothing but the members
        return confine.move_files(unzipped, names, dest)


def submit_file(slug: str, file: str | os.PathLike, message: str) -> str:
    """Submit the prediction file `file` to competition `slug`; return Kaggle's reply message."""
    _check_slug(slug)
    path = Path(file).resolve()
    if not path.is_file():
        raise PipelineError(f"{file}: submission file not found: run the submit stage first")
    command = f"kaggle competitions submit {slug}"
    output = _run(
        ["competitions", "submit", slug, "-f", str(path), f"--message={message}", "-q"],
        command,
        kind="competition",
        name=slug,
        timeout_s=_TRANSFER_TIMEOUT_S,
    )
    return _submission_reply(output, command, slug)


def submit_code(
    slug: str, kernel_ref: str, version: int, file_name: str = "submission.csv", message: str = "code submission"
) -> str:
    """Submit version `version` of kernel `kernel_ref` (owner/slug), whose run writes `file_name`,
    to code competition `slug`; return Kaggle's reply message."""
    _check_slug(slug)
    _check_ref(kernel_ref, "kernel")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PipelineError(
            f"kernel version {version!r} is not a version number: pass the number "
            "`kaggle kernels push` printed (1, 2, ...)"
        )
    command = f"kaggle competitions submit {slug} -k {kernel_ref} -v {version}"
    output = _run(
        [
            "competitions",
            "submit",
            slug,
            "-f",
            file_name,
            "-k",
            kernel_ref,
            "-v",
            str(version),
            f"--message={message}",
            "-q",
        ],
        command,
        kind="competition",
        name=slug,
    )
    return _submission_reply(output, command, slug)


def submissions_left_today(slug: str) -> tuple[int, int] | None:
    """(submissions left today, made today) on competition `slug` (kaggle competitions submission-limits); None when
    Kaggle does not know yet (no team: every count 0, as before a first submission)."""
    _check_slug(slug)
    command = f"kaggle competitions submission-limits {slug}"
    output = _run(["competitions", "submission-limits", slug], command, kind="competition", name=slug)
    counts = {}
    for label, key in (("Submissions today", "today"), ("Lifetime submissions", "total"), ("Remaining today", "left")):
        found = re.search(rf"^{label}: (\d+)", output, re.MULTILINE)
        if found is None:
            raise PipelineError(f"{command}: no '{label}' in the CLI's answer: rerun it by hand to see why")
        counts[key] = int(found.group(1))
    if not any(counts.values()):
        return None
    return counts["left"], counts["today"]


def list_submissions(slug: str, page_size: int = 50) -> list[Submission]:
    """This account's submissions to competition `slug`, newest first (the CLI's CSV output, parsed)."""
    _check_slug(slug)
    command = f"kaggle competitions submissions {slug}"
    output = _run(
        ["competitions", "submissions", slug, "-v", "--page-size", str(page_size)],
        command,
        kind="competition",
        name=slug,
    )
    return parse_submissions(output, command)


def parse_submissions(output: str, command: str) -> list[Submission]:
    """The rows of `kaggle competitions submissions -v` (CSV: ref,fileName,date,description,status,publicScore,
    privateScore); [] when it printed "No submissions found"."""
    start = output.find(_SUBMISSIONS_HEADER)
    if start < 0:
        if "No submissions found" in output:
            return []
        raise PipelineError(
            f"{command}: no submission table in the CLI's output ({_last_line(output) or 'empty'}): "
            "rerun it by hand to see why"
        )
    rows = list(csv.reader(io.StringIO(output[start:])))
    header = rows[0]
    found = []
    for row in rows[1:]:  # stderr follows stdout: anything that is not a full row is not a submission
        cell = dict(zip(header, row))
        status = cell.get("status", "").strip().rpartition(".")[2].lower()
        if len(row) != len(header) or not re.fullmatch(r"[0-9]+", row[0].strip()) or status not in _STATES:
            continue
        public, private = _score(cell["publicScore"]), _score(cell["privateScore"])
        if status == "complete" and public is None and _shown(cell["publicScore"]):
            status = "pending"  # a score that is not a finite number ("0,95", nan) is no score yet: asked again later
        found.append(
            Submission(
                int(row[0].strip()), cell["fileName"], cell["date"], cell["description"], status, public, private
            )
        )
    return found


def create_or_version_dataset(folder: str | os.PathLike, message: str) -> str:
    """Upload flat `folder` (with its dataset-metadata.json) as a new dataset, or as a new version
    of it when the dataset already exists; return the dataset's URL."""
    folder = Path(folder)
    ref = _check_dataset_folder(folder)
    command = f"kaggle datasets create -p {folder}"
    output = _run(
        ["datasets", "create", "-p", str(folder)], command, kind="dataset", name=ref, timeout_s=_TRANSFER_TIMEOUT_S
    )
    creation_error = _line_after(output, "Dataset creation error:")
    if creation_error is None:
        _check_uploads(output, command)
        return _url_after(output, "Please check progress at", command)
    # The CLI reports an existing dataset this way and still exits 0.
    if "already in use" not in creation_error and "already exist" not in creation_error:
        raise PipelineError(
            f"{command}: Kaggle refused to create dataset {ref}: {creation_error}: fix {DATASET_METADATA} and rerun"
        )
    command = f"kaggle datasets version -p {folder}"
    output = _run(
        ["datasets", "version", "-p", str(folder), f"--message={message}"],
        command,
        kind="dataset",
        name=ref,
        timeout_s=_TRANSFER_TIMEOUT_S,
    )
    version_error = _line_after(output, "Dataset version creation error:")
    if version_error is not None:
        raise PipelineError(
            f"{command}: Kaggle refused the new version of {ref}: {version_error}: "
            f"fix {DATASET_METADATA} or the files and rerun"
        )
    _check_uploads(output, command)
    return _url_after(output, "Please check progress at", command)


def dataset_status(ref: str) -> str:
    """Processing state of dataset `ref` (owner/slug): "ready" once a new version is usable."""
    _check_ref(ref, "dataset")
    command = f"kaggle datasets status {ref}"
    output = _run(["datasets", "status", ref], command, kind="dataset", name=ref)
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        raise PipelineError(f"{command}: the CLI printed no status: rerun it by hand to see why")
    return lines[-1].lower()


def push_kernel(folder: str | os.PathLike, timeout_s: int | None = None) -> str:
    """Push the kernel in `folder` (kernel-metadata.json + its code file); return the kernel's URL."""
    return push_kernel_with_version(folder, timeout_s)[0]


def push_kernel_with_version(folder: str | os.PathLike, timeout_s: int | None = None) -> tuple[str, int | None]:
    """`push_kernel`, also returning the version number it created (what `submit_code` needs); `timeout_s` limits
    the run (`-t`). The machine is kernel-metadata.json's `machine_shape`."""
    folder = Path(folder)
    metadata_path = folder / KERNEL_METADATA
    if not metadata_path.is_file():
        raise PipelineError(f"{metadata_path}: kernel metadata not found: build the kernel folder first")
    ref = _read_json_field(metadata_path, "id")
    code_path = folder / _read_json_field(metadata_path, "code_file")
    if not code_path.is_file():
        raise PipelineError(f"{code_path}: the kernel's code_file is missing: build the kernel folder again")
    timeout = ["-t", str(int(timeout_s))] if timeout_s else []
    command = " ".join(["kaggle kernels push -p", str(folder), *timeout])
    output = _run(["kernels", "push", "-p", str(folder), *timeout], command, kind="kernel", name=ref)
    push_error = _line_after(output, "Kernel push error:")
    if push_error is not None:
        raise PipelineError(
            f"{command}: Kaggle refused the kernel {ref}: {push_error}: fix {metadata_path} and push again"
        )
    dropped = re.search(r"The following are not valid (\w+) sources and could not be added to the kernel: (.*)", output)
    if dropped:
        raise PipelineError(
            f"{command}: Kaggle dropped the {dropped.group(1)} sources {dropped.group(2).strip()} "
            f"(the kernel would run without them): fix {dropped.group(1)}_sources in "
            f"{metadata_path} and push again"
        )
    version = re.search(r"Kernel version (\d+) successfully pushed", output)
    return _url_after(output, "Please check progress at", command), int(version.group(1)) if version else None


def kernel_status(ref: str) -> KernelStatus:
    """Latest run state of kernel `ref` (owner/slug)."""
    _check_ref(ref, "kernel")
    command = f"kaggle kernels status {ref}"
    output = _run(["kernels", "status", ref], command, kind="kernel", name=ref)
    # The CLI prints the enum itself: `owner/slug has status "KernelWorkerStatus.COMPLETE"`.
    state = re.search(r'has status "(?:\w+\.)?(\w+)"', output)
    if not state:
        raise PipelineError(f"{command}: no status in the CLI's output: rerun it by hand to see why")
    failure = re.search(r'^Failure message: "(.*)"\s*$', output, re.MULTILINE)
    return KernelStatus(state.group(1).lower(), failure.group(1) if failure else None)


def kernel_logs(ref: str) -> str:
    """The log of kernel `ref`'s latest run as text (`kaggle kernels logs`; Kaggle sends a JSON array of
    {stream_name, time, data} events, whose `data` are joined; anything else is returned as it came)."""
    _check_ref(ref, "kernel")
    command = f"kaggle kernels logs {ref}"
    output = _run(["kernels", "logs", ref], command, kind="kernel", name=ref)
    start = output.find("[")
    try:
        events = json.loads(output[start:].strip()) if start >= 0 else None
    except ValueError:
        events = None
    if isinstance(events, list) and all(isinstance(event, dict) for event in events):
        return "".join(str(event.get("data", "")) for event in events)
    return output.strip() + "\n"


def last_error_line(log_text: str, fallback: str) -> str:
    """The line of a kernel's log that says what went wrong: its last error line, else its last line."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error") or "Error" in line]
    return (errors or lines or [fallback])[-1][:300]


def gpu_quota() -> GpuQuota:
    """This account's weekly GPU quota (`kaggle quota -v`: CSV rows resource,used,remaining,total,refreshAt)."""
    command = "kaggle quota"
    output = _run(["quota", "-v"], command, kind="account", name="quota")
    start = output.find("resource,used")
    for row in csv.DictReader(io.StringIO(output[start:])) if start >= 0 else []:
        if row.get("resource") == "GPU":
            try:
                used, total = (float(row[key].rstrip("h")) for key in ("used", "total"))
            except (KeyError, ValueError, AttributeError):
                break
            return GpuQuota(used, total, row.get("refreshAt") or "")
    raise PipelineError(
        f"{command}: no GPU row in the CLI's answer ({_last_line(output) or 'empty'}): rerun it by hand to see why"
    )


def kernel_output(ref: str, dest: str | os.PathLike) -> list[Path]:
    """Download the output files (and log) of kernel `ref`'s latest run into `dest` (a fresh staging folder: the
    caller checks and moves), only names matching src.confine.SAFE_NAME (the CLI joins the listing's names to its
    folder as they come: "../x" or "/tmp/x" would land outside it); return their paths. Anything in `dest`
    afterwards that is not a plain file inside it (a link) is refused in one line."""
    _check_ref(ref, "kernel")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    command = f"kaggle kernels output {ref}"
    # --force: without it the CLI keeps any same-named local file that looks newer.
    output = _run(
        ["kernels", "output", ref, "-p", str(dest), "--force", "--file-pattern", confine.SAFE_NAME],
        command,
        kind="kernel",
        name=ref,
        timeout_s=_TRANSFER_TIMEOUT_S,
    )
    confine.plain_files(dest, command)
    found = re.findall(r"^(?:Output file|Kernel log) downloaded to (.+?)\s*$", output, re.MULTILINE)
    return [Path(path) for path in found]


# ---- running the CLI --------------------------------------------------------------------------


def _run(args: Sequence[str], command: str, *, kind: str, name: str, timeout_s: float = _CALL_TIMEOUT_S) -> str:
    """Run `kaggle *args`; return its scrubbed stdout + stderr, or raise a one-line PipelineError."""
    executable = kaggle_executable()
    env = dict(os.environ)
    env["PYTHONIOENCODING"] = "utf-8"  # the CLI prints non-ASCII; a C locale would crash it
    for noisy in ("VERBOSE", "VERBOSE_OUTPUT"):  # verbose mode prints the Authorization header
        env.pop(noisy, None)
    secrets = _secrets()
    try:
        done = subprocess.run(
            [str(executable), *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise PipelineError(
            f"{command}: no answer from Kaggle after {timeout_s:.0f} s: check the network connection and rerun"
        ) from None
    except OSError as error:
        raise PipelineError(
            f"{command}: could not start {executable} ({error.strerror}): "
            "reinstall the requirements (pip install -r requirements.txt)"
        ) from None
    output = _scrub(done.stdout.decode("utf-8", "replace") + "\n" + done.stderr.decode("utf-8", "replace"), secrets)
    logger.debug("%s -> exit %d\n%s", command, done.returncode, output)
    if "readable by other users" in output:
        logger.warning("your kaggle.json is readable by other users: chmod 600 it")
    if done.returncode != 0:
        raise PipelineError(_scrub(_failure_message(command, output, kind, name, done.returncode), secrets))
    return output


def _failure_message(command: str, output: str, kind: str, name: str, returncode: int) -> str:
    """One line saying why `command` failed and what to do, from the CLI's output."""
    text = output.lower()
    codes = set(re.findall(r"\b(4\d\d) client error", text))
    rejected = (
        f"{command}: Kaggle rejected the credentials (401): create a new API token at "
        f"{KAGGLE_WEB}/settings and replace ~/.kaggle/kaggle.json (or KAGGLE_USERNAME/KAGGLE_KEY, "
        "KAGGLE_API_TOKEN)"
    )
    # The CLI prints the same help for missing and for rejected credentials.
    if _AUTH_HELP in text:
        if not _has_credentials():
            return (
                f"{command}: no Kaggle credentials found: save kaggle.json from {KAGGLE_WEB}/settings "
                "('Create New Token') as ~/.kaggle/kaggle.json with chmod 600, or set KAGGLE_USERNAME "
                "and KAGGLE_KEY (or KAGGLE_API_TOKEN)"
            )
        return rejected
    if "accept" in text and "rules" in text:
        return (
            f"{command}: you have not accepted the rules of competition {name} (403): open "
            f"{KAGGLE_WEB}/competitions/{name}/rules, accept them (join the competition), then rerun"
        )
    if "429" in codes or "too many requests" in text or "rate limit" in text:
        return f"{command}: Kaggle is rate limiting this account (429): wait a few minutes, then rerun"
    if "401" in codes or "unauthenticated" in text or "unauthorized" in text:
        return rejected
    if (
        "403" in codes
        or "forbidden" in text
        or "permission" in text
        and "denied" in text
        or "cannot access kernel" in text
    ):
        return f"{command}: Kaggle refused access (403) to {kind} {name}: {_forbidden_fix(kind, name)}"
    if "404" in codes or "not found" in text or "could not find" in text:
        return f"{command}: {kind} {name} was not found on Kaggle (404): {_not_found_fix(kind, name)}"
    if re.search(r"\b5\d\d server error", text):
        return f"{command}: Kaggle answered with a server error (5xx): wait a while, then rerun"
    if "max retries exceeded" in text or "connectionerror" in text or "failed to establish" in text:
        return f"{command}: could not reach Kaggle: check the network connection (and any proxy settings), then rerun"
    return (
        f"{command}: failed (exit {returncode}): {_last_line(output) or 'no output'}: fix what it names, "
        "or run the same kaggle command by hand to see its full output"
    )


def _forbidden_fix(kind: str, name: str) -> str:
    if kind == "competition":
        return f"join the competition and accept its rules at {KAGGLE_WEB}/competitions/{name}/rules, then rerun"
    owner = name.split("/")[0]
    return (
        f"check that the credentials are {owner}'s (the owner part of the {kind} id) and that the id is spelled right"
    )


def _not_found_fix(kind: str, name: str) -> str:
    if kind == "competition":
        return f"check the slug (the last part of {KAGGLE_WEB}/competitions/<slug>) and rerun"
    metadata = DATASET_METADATA if kind == "dataset" else KERNEL_METADATA
    return f"check the owner/slug id (in {metadata}) and rerun"


def _submission_reply(output: str, command: str, slug: str) -> str:
    # Both leave the CLI with exit code 0.
    if "Could not submit to competition" in output:
        raise PipelineError(f"{command}: the upload of the submission file failed: rerun the submission")
    if "Could not find competition" in output:
        raise PipelineError(
            f"{command}: competition {slug} was not found or no longer accepts submissions: "
            "check the slug and the competition's deadline"
        )
    return _last_line(output)


def _check_uploads(output: str, command: str) -> None:
    failed = re.findall(r"^Upload unsuccessful: (.+?)\s*$", output, re.MULTILINE)
    if failed:
        raise PipelineError(f"{command}: upload of {', '.join(failed)} failed, so the dataset lacks them: rerun")


# ---- credentials ------------------------------------------------------------------------------


def _config_dirs() -> list[Path]:
    """Folders the CLI may read kaggle.json from (it picks one; we look in all of them)."""
    dirs = []
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        dirs.append(Path(os.environ["KAGGLE_CONFIG_DIR"]))
    dirs.append(Path(os.path.expanduser("~/.kaggle")))
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    dirs.append(Path(xdg) / "kaggle")
    return dirs


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        return ""


def _has_credentials() -> bool:
    """Whether any credential the CLI accepts is present (not whether Kaggle accepts it)."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return True
    username, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    for folder in _config_dirs():
        config = _read_json(folder / "kaggle.json")
        username, key = username or config.get("username"), key or config.get("key")
    if username and key:
        return True
    home = Path(os.path.expanduser("~/.kaggle"))
    if _read_text(home / "access_token") or _read_text(home / "access_token.txt"):
        return True
    return bool(_read_json(home / "credentials.json").get("refresh_token"))


def _secrets() -> list[str]:
    """Every credential value we can find, longest first, so none of them is ever shown."""
    values = [os.environ.get("KAGGLE_KEY", ""), os.environ.get("KAGGLE_API_TOKEN", "")]
    token_path = os.environ.get("KAGGLE_API_TOKEN", "")
    if token_path and len(token_path) < 4096 and Path(token_path).is_file():
        values.append(_read_text(Path(token_path)))
    usernames = [os.environ.get("KAGGLE_USERNAME", "")]
    for folder in _config_dirs():
        config = _read_json(folder / "kaggle.json")
        values.append(str(config.get("key", "")))
        usernames.append(str(config.get("username", "")))
    home = Path(os.path.expanduser("~/.kaggle"))
    values += [_read_text(home / "access_token"), _read_text(home / "access_token.txt")]
    cached = _read_json(home / "credentials.json")
    values += [str(cached.get("access_token", "")), str(cached.get("refresh_token", ""))]
    keys = [v for v in values if len(v) >= 6]
    # HTTP basic auth carries user:key in base64; hide that form too.
    values += [base64.b64encode(f"{user}:{key}".encode()).decode() for user in usernames if user for key in keys]
    return sorted({v for v in values if len(v) >= 6}, key=len, reverse=True)


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, _REDACTED)
    return text


# ---- small helpers ----------------------------------------------------------------------------


def _check_slug(slug: str) -> None:
    if not isinstance(slug, str) or not _SLUG.match(slug):
        raise PipelineError(
            f"competition slug {slug!r} is not a slug: use the last part of {KAGGLE_WEB}/competitions/<slug>"
        )


def _check_ref(ref: str, kind: str) -> None:
    if not isinstance(ref, str) or not _REF.match(ref):
        raise PipelineError(f"{kind} id {ref!r} is not of the form owner/slug: use the owner/slug of its URL")


def _check_dataset_folder(folder: Path) -> str:
    """Refuse what the CLI would upload wrongly; return the dataset id from the metadata."""
    if not folder.is_dir():
        raise PipelineError(f"{folder}: dataset folder not found: build it first")
    metadata = folder / DATASET_METADATA
    if not metadata.is_file():
        raise PipelineError(
            f"{metadata}: dataset metadata not found: write it with id (owner/slug), title and licenses"
        )
    subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if subfolders:
        # `kaggle datasets create` (default -r skip) silently leaves subfolders out.
        raise PipelineError(
            f"{folder}: dataset folder has subfolders ({', '.join(subfolders)}) that the CLI "
            "would silently skip: put every file directly in the folder"
        )
    if not any(p.is_file() and p.name != DATASET_METADATA for p in folder.iterdir()):
        raise PipelineError(f"{folder}: dataset folder holds no files besides {DATASET_METADATA}: add the files")
    ref = _read_json_field(metadata, "id")
    _check_ref(ref, "dataset")
    return ref


def _read_json_field(path: Path, field: str) -> str:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise PipelineError(f"{path}: not readable JSON ({error}): rewrite it") from None
    value = data.get(field) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise PipelineError(f"{path}: no {field!r} in it: add one")
    return value


_STATES = ("complete", "pending", "error")  # SubmissionStatus.COMPLETE etc., as the CLI prints them


def _score(text: str) -> float | None:
    """A score cell as a finite number; None while unscored (the CLI prints None or nothing) or when it is no number
    (nan, Infinity, a decimal comma)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _shown(text: str) -> bool:
    """Whether a score cell shows something (not the CLI's empty or None for an unscored submission)."""
    return text.strip() not in ("", "None")


def _line_after(output: str, marker: str) -> str | None:
    for line in output.splitlines():
        if marker in line:
            return line.split(marker, 1)[1].strip()
    return None


def _url_after(output: str, marker: str, command: str) -> str:
    found = re.search(re.escape(marker) + r"\s+(\S+)", output)
    if not found:
        raise PipelineError(
            f"{command}: no URL in the CLI's output ({_last_line(output) or 'empty'}): "
            "rerun it by hand to see what happened"
        )
    return found.group(1)


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip() and "%|" not in line]
    return lines[-1][:300] if lines else ""
