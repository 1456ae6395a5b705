"""The offline Kaggle kernel and its weights dataset: build, check locally (parity), push, follow.

`kernels/<exp>/` holds
  kernel-metadata.json   id, title, code_file, sources, `enable_internet: false`, private
  <kernel-slug>.py       ONE script: the project's `src` package embedded as a gzipped tar (base64)
                         and the call that predicts the test images and writes the submission
  dataset/               the weights dataset, flat: model.pt (weights only), thresholds.json,
                         config.yaml (resolved; paths rewritten for Kaggle), dataset-metadata.json
  parity.json, .log      the last local check: the script run offline against a stand-in /kaggle
  push.json              what was last pushed (kernel version, dataset file sums)
  output/                what `kernel --output` downloaded

Why the code travels in the script and not in the dataset: the script is one text file that each
kernel version records and shows, so the code that ran on Kaggle is byte for byte the code checked
here; the dataset holds only what training made, so a code change never re-uploads the weights.
The script carries the sha256 of every dataset file and refuses any other version of them.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import io
import json
import os
import platform
import pprint
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from src.atomic import write_text
from src.config import Config, config_to_dict
from src.errors import PipelineError
from src.weights import normalisation
from src.artifacts import KERNEL_METADATA, Experiment, Layout, LeaderboardEntry, ParityRecord, PushRecord
from src.kaggle import cli, leaderboard
from src.kaggle.kernel_inference import CONFIG_FILE, MODEL_FILE, THRESHOLDS_FILE, package_versions
from src.kaggle.kernel_wheels import file_sha256, tree_sha256

Log = Callable[[str], None]

DATASET_METADATA = "dataset-metadata.json"
DATASET_DIR = "dataset"
WHEELS_DIR = Layout(".", "").wheels_dir.name
PARITY_LOG = "parity.log"
OUTPUT_DIR = "output"
KAGGLE_INPUT = "/kaggle/input"
TEMPLATE = Path(__file__).with_name("kernel_template.py")
_SETTINGS_LINE = "SETTINGS = {}  # filled in by the builder"
_ARCHIVE_LINE = 'ARCHIVE = ""  # filled in by the builder'
# Modules whose versions the kernel compares with the ones the local check ran on.
_CHECKED_MODULES = ("torch", "timm", "albumentations", "numpy", "cv2", "PIL", "pydantic", "yaml", "pandas", "sklearn")
# Pure-Python packages `src` imports that Kaggle's image may lack (iterstrat: imported by folds).
_VENDORED = ("iterstrat",)
_TRAINING_STATE = ("optimizer", "scheduler", "scaler", "rng", "ema")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE", re.IGNORECASE)
_PARITY_TIMEOUT_S = 4 * 3600
DATASET_WAIT_S = 30 * 60
_DATASET_POLL_S = 10
_SANDBOX_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "LD_LIBRARY_PATH")
_NOWHERE = "http://127.0.0.1:9"  # the discard port: a proxy that is never there


@dataclass(frozen=True)
class KaggleNames:
    """Who owns the kernel and dataset, and what they are called on Kaggle."""

    username: str
    kernel_slug: str
    kernel_title: str
    dataset_slug: str
    dataset_title: str
    wheels_slug: str = ""

    def ref(self, slug: str) -> str:
        """owner/slug on Kaggle of one of this experiment's kernels or datasets."""
        return f"{self.username}/{slug}"

    kernel_ref = property(lambda self: self.ref(self.kernel_slug))
    dataset_ref = property(lambda self: self.ref(self.dataset_slug))
    wheels_ref = property(lambda self: self.ref(self.wheels_slug))

    @property
    def code_file(self) -> str:
        return f"{self.kernel_slug}.py"


@dataclass(frozen=True)
class KernelBuild:
    """A built kernel folder; `files` maps every built file (relative to kernel_dir) to its sha256."""

    kernel_dir: Path
    names: KaggleNames
    files: dict[str, str]

    @property
    def script_path(self) -> Path:
        return self.kernel_dir / self.names.code_file

    @property
    def dataset_dir(self) -> Path:
        return self.kernel_dir / DATASET_DIR

    @property
    def wheels_dir(self) -> Path:
        return self.kernel_dir / WHEELS_DIR

    def dataset_files(self, folder: str = DATASET_DIR) -> dict[str, str]:
        """sha256 of each file of a dataset folder the kernel reads (the metadata file aside)."""
        prefix = folder + "/"
        return {rel[len(prefix):]: digest for rel, digest in self.files.items()
                if rel.startswith(prefix) and rel != prefix + DATASET_METADATA}


@dataclass(frozen=True)
class ParityResult:
    passed: bool
    detail: str
    script_sha256: str
    reused: bool = False


@dataclass(frozen=True)
class OfflineRun:
    """One run of a script in the offline stand-in: exit status, output, files left in working/, network tries."""

    returncode: int
    output: str
    files: dict[str, bytes]
    network_attempts: list[str]
    network_blocked: bool
    seconds: float


# ---- names --------------------------------------------------------------------------------------

def kaggle_names(exp: Experiment) -> KaggleNames:
    """Kernel and dataset names from the config's `kaggle:` section, defaults derived from the experiment."""
    settings = exp.config.kaggle
    username = settings.username or _username_from_credentials()
    if not username:
        raise PipelineError(f"{exp.config_path}: no Kaggle username: set kaggle.username (the owner of the kernel "
                            "and weights dataset), or KAGGLE_USERNAME, or save kaggle.json in ~/.kaggle")
    base = re.sub(r"[^a-z0-9]+", "-", exp.name.lower()).strip("-") or "model"
    if not cli._REF.match(f"{username}/x"):
        raise PipelineError(f"Kaggle username {username!r} is not a user name: set kaggle.username in {exp.config_path}")
    kernel_slug = settings.kernel_slug or f"{base[:40].rstrip('-')}-inference"
    dataset_slug = settings.dataset_slug or f"{base[:42].rstrip('-')}-weights"
    wheels_slug = settings.wheels_slug or f"{base[:43].rstrip('-')}-wheels"
    kernel_title = settings.kernel_title or kernel_slug.replace("-", " ")
    if _slugify(kernel_title) != kernel_slug:
        raise PipelineError(f"{exp.config_path}: kaggle.kernel_title '{kernel_title}' would give the kernel the URL slug "
                            f"'{_slugify(kernel_title)}', not '{kernel_slug}': make the title match the slug or drop it")
    dataset_title = settings.dataset_title or f"{exp.name[:42]} weights"
    dataset_title = dataset_title if len(dataset_title) >= 6 else f"{dataset_title} model"
    return KaggleNames(username, kernel_slug, kernel_title, dataset_slug, dataset_title, wheels_slug)


def _slugify(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _username_from_credentials() -> str:
    """The account name only (never the key): KAGGLE_USERNAME, else `username` in kaggle.json."""
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    for folder in cli._config_dirs():
        username = cli._read_json(folder / "kaggle.json").get("username")
        if isinstance(username, str) and username:
            return username
    return ""


# ---- build --------------------------------------------------------------------------------------

def build_kernel(exp: Experiment, log: Log = print) -> KernelBuild:
    """Write `kernels/<exp>/` (script, kernel metadata, flat weights dataset, flat wheels dataset) from the
    trained experiment.

    Everything is built in a staging folder and scanned for credentials first: a file holding one is
    never moved into place. The same experiment gives the same bytes (the archive is reproducible).
    """
    config, fmt = exp.config, exp.fmt
    names = kaggle_names(exp)
    checkpoint = exp.submission_checkpoint()
    _check_weights_only(checkpoint)
    thresholds = exp.thresholds_path if exp.read_thresholds() is not None else None
    if thresholds is None and any(head.thresholded for head in fmt.heads()):
        exp.require(exp.thresholds_path, "thresholds")
    staging = staging_dir(exp)
    try:
        dataset = _stage_weights(exp, names, checkpoint, thresholds, staging / DATASET_DIR)
        archive = code_archive()
        settings = {
            "experiment": exp.name,
            "competition": config.competition,
            "kernel_ref": names.kernel_ref,
            "dataset_ref": names.dataset_ref,
            "dataset_files": {p.name: file_sha256(p) for p in sorted(dataset.iterdir()) if p.name != DATASET_METADATA},
            "submission_names": fmt.submission_names(),
            "wheels": stage_wheels(exp, names, staging / WHEELS_DIR, log),
            **script_settings(archive),
        }
        (staging / names.code_file).write_text(render_script(settings, archive), encoding="utf-8")
        sources = [names.dataset_ref] + ([names.wheels_ref] if settings["wheels"] else [])
        write_json(staging / KERNEL_METADATA, kernel_metadata(exp, names, sources))
        files = seal(staging)
        _move_into_place(staging, exp.kernel_dir, names.code_file)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    build = KernelBuild(exp.kernel_dir, names, files)
    size = (build.dataset_dir / MODEL_FILE).stat().st_size
    log(f"kernel {exp.name}: {build.script_path} ({build.script_path.stat().st_size // 1024} KiB, src embedded) and "
        f"weights dataset {build.dataset_dir} ({size / 2**20:.1f} MiB model) for {names.kernel_ref} "
        f"with {', '.join(sources)}, internet off, GPU {'on' if config.kaggle.enable_gpu else 'off'}")
    return build


def staging_dir(exp: Experiment) -> Path:
    """A fresh hidden folder beside kernels/<exp>/ where a build is made before it is moved into place."""
    exp.kernel_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{exp.name}.build-", dir=exp.kernel_dir.parent))


def _stage_weights(exp: Experiment, names: KaggleNames, checkpoint: Path, thresholds: Path | None, dataset: Path) -> Path:
    """The flat weights dataset: model.pt, thresholds.json, the Kaggle-side config, dataset-metadata.json."""
    dataset.mkdir()
    shutil.copyfile(checkpoint, dataset / MODEL_FILE)
    if thresholds is not None:
        shutil.copyfile(thresholds, dataset / THRESHOLDS_FILE)
    (dataset / CONFIG_FILE).write_text(yaml.safe_dump(kaggle_config(exp), sort_keys=False, allow_unicode=True),
                                       encoding="utf-8")
    write_dataset_metadata(dataset, names.dataset_ref, names.dataset_title, exp.config.kaggle.dataset_license)
    return dataset


def stage_wheels(exp: Experiment, names: KaggleNames, dest: Path, log: Log) -> dict:
    """Build the wheels dataset into `dest` (reusing unchanged wheels of the last build); return what the
    kernel needs to know of it ({} when `kaggle.wheels` is off)."""
    from src.kaggle import wheels

    settings = exp.config.kaggle
    if not settings.wheels:
        return {}
    requirements = Path(__file__).resolve().parents[2] / "requirements.txt"
    plan = wheels.plan_wheels(requirements, settings.python_version)
    shipped = wheels.build_wheels(plan, dest, exp.wheels_dir)
    write_dataset_metadata(dest, names.wheels_ref, f"{exp.name[:43]} wheels", settings.dataset_license)
    log(wheels.describe(plan))
    return {"dataset_ref": names.wheels_ref,
            "files": {w.name: {"version": w.version, "file": w.file, "sha256": w.sha256} for w in shipped}}


def script_settings(archive: bytes) -> dict:
    """What every kernel script carries about its own build: the archive's sum, Python and package versions."""
    return {"archive_sha256": hashlib.sha256(archive).hexdigest(), "python": platform.python_version(),
            "versions": package_versions(_CHECKED_MODULES)}


def seal(staging: Path) -> dict[str, str]:
    """Refuse a staged build holding a credential; return every staged file's sha256 (relative path -> sum)."""
    leaks = find_leaks(staging, secret_values())
    if leaks:
        raise PipelineError(f"refusing to build the kernel: {leaks[0]}{f' (and {len(leaks) - 1} more)' if len(leaks) > 1 else ''}: "
                            "take the credential out of the config or code and build again")
    return tree_sha256(staging)


def write_dataset_metadata(folder: Path, ref: str, title: str, license_name: str) -> None:
    """dataset-metadata.json of a flat dataset folder (Kaggle wants a title of 6 characters or more)."""
    title = title if len(title) >= 6 else f"{title} files"
    write_json(folder / DATASET_METADATA, {"title": title, "id": ref, "licenses": [{"name": license_name}]})


def kernel_metadata(exp: Experiment, names: KaggleNames, datasets: list[str]) -> dict:
    """kernel-metadata.json: a private script, internet off, the competition and `datasets` attached."""
    return {
        "id": names.kernel_ref,
        "title": names.kernel_title,
        "code_file": names.code_file,
        "language": "python",
        "kernel_type": "script",
        "is_private": True,
        "enable_gpu": exp.config.kaggle.enable_gpu,
        "enable_tpu": False,
        "enable_internet": False,  # the CLI defaults it to true; kernels-only competitions require it off
        "dataset_sources": datasets,
        "competition_sources": [exp.config.competition],
        "kernel_sources": [],
        "model_sources": [],
    }


def kaggle_config(exp: Experiment) -> dict:
    """The resolved config as the kernel reads it: Kaggle paths, nothing local, nothing secret."""
    raw = config_to_dict(exp.config)
    raw["output_dir"] = "/kaggle/temp"  # replaced by a scratch folder when the kernel runs
    raw["data"]["root"] = f"{KAGGLE_INPUT}/{exp.config.competition}"
    raw["data"]["solution"] = []  # held-apart answers exist only here
    raw["model"]["weights"] = None  # the checkpoint holds every weight
    raw["thresholds"]["storage"] = None  # a database URL may carry a password; the kernel never tunes
    # The mean/std resolved here, so the kernel never depends on Kaggle's timm registry or a weights folder.
    raw["augment"]["mean"], raw["augment"]["std"] = (list(values) for values in normalisation(exp.config))
    Config.model_validate(raw)
    return raw


def render_script(settings: dict, archive: bytes) -> str:
    """The kernel script: the template with the settings and the base64 archive filled in."""
    template = TEMPLATE.read_text(encoding="utf-8")
    encoded = base64.b64encode(archive).decode("ascii")
    wrapped = "\n".join(encoded[i:i + 120] for i in range(0, len(encoded), 120))
    script = _replace_once(template, _SETTINGS_LINE, "SETTINGS = " + pprint.pformat(settings, width=110, sort_dicts=True))
    return _replace_once(script, _ARCHIVE_LINE, f'ARCHIVE = """\n{wrapped}\n"""')


def code_archive(extra: dict[str, bytes] | None = None) -> bytes:
    """A reproducible gzipped tar of the `src` package (under code/), the vendored packages (under vendor/)
    and `extra` files (archive path -> bytes; the training kernel's config and folds file)."""
    import src

    members: dict[str, bytes] = dict(extra or {})
    members.update(_package_files(Path(src.__file__).parent, "code/src"))
    for name in _VENDORED:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            members.update(_package_files(Path(list(spec.submodule_search_locations)[0]), f"vendor/{name}"))
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as zipped:
        with tarfile.open(fileobj=zipped, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in sorted(members.items()):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def extract_archive(script_text: str) -> dict[str, bytes]:
    """The files embedded in a built script (for inspection and scanning)."""
    match = re.search(r'^ARCHIVE = """\n(.*?)\n"""$', script_text, re.MULTILINE | re.DOTALL)
    if not match:
        return {}
    data = base64.b64decode(match.group(1))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _package_files(folder: Path, prefix: str) -> dict[str, bytes]:
    files = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if (not path.is_file() or path.suffix == ".pyc"
                or any(part == "__pycache__" or part.startswith(".") for part in relative.parts)):
            continue
        files[f"{prefix}/{relative.as_posix()}"] = path.read_bytes()
    return files


def _check_weights_only(checkpoint: Path) -> None:
    from src.checkpoint_files import load_checkpoint

    payload = load_checkpoint(checkpoint)
    state = [key for key in payload if key in _TRAINING_STATE]
    if "model" not in payload or state:
        raise PipelineError(f"{checkpoint}: not an inference checkpoint (holds {', '.join(state) or 'no model'}): "
                            "point submit.checkpoint at a finished run's best.pt")


def _move_into_place(staging: Path, kernel_dir: Path, code_file: str) -> None:
    kernel_dir.mkdir(parents=True, exist_ok=True)
    for old in kernel_dir.glob("*.py"):
        if old.name != code_file:  # the script of a former kernel slug
            old.unlink()
    for folder in (DATASET_DIR, WHEELS_DIR):
        if (kernel_dir / folder).exists():
            shutil.rmtree(kernel_dir / folder)
        if (staging / folder).exists():  # no wheels folder when kaggle.wheels is off
            os.replace(staging / folder, kernel_dir / folder)
    for name in (code_file, KERNEL_METADATA):
        os.replace(staging / name, kernel_dir / name)


def _replace_once(text: str, line: str, replacement: str) -> str:
    if text.count(line) != 1:
        raise PipelineError(f"{TEMPLATE}: expected the line {line!r} exactly once: restore the template")
    return text.replace(line, replacement)


def write_json(path: Path, data: dict) -> None:
    """A built JSON file (metadata), indented, newline-terminated."""
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# ---- secrets -------------------------------------------------------------------------------------

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


# ---- parity --------------------------------------------------------------------------------------

def has_images(exp: Experiment, split: str) -> bool:
    """Whether the competition's `split` ('train' or 'test') images are here, so a kernel can be run locally."""
    try:
        return len(exp.fmt.read_train() if split == "train" else exp.fmt.read_test()) > 0
    except PipelineError:
        return False


def check_parity(exp: Experiment, build: KernelBuild, run_submit: Callable[[], list[Path]], log: Log = print,
                 reuse: bool = True, timeout_s: float = _PARITY_TIMEOUT_S) -> ParityResult:
    """Run the built script offline against a stand-in /kaggle tree and compare its files with submit's.

    `run_submit` makes the submission (the submit stage) first when it is missing or older than the
    model, thresholds or config.
    With `reuse`, a passed check recorded for these exact bytes (script, dataset, submission) stands.
    """
    script_sha = file_sha256(build.script_path)
    reference, regenerated = _reference_files(exp, run_submit, log)
    fingerprint = _parity_fingerprint(build, script_sha, reference)
    record_path = exp.parity_path
    record = ParityRecord.read(record_path) if reuse else None
    if record is not None and record.passed and record.fingerprint == fingerprint:
        log(f"parity: passed before for these exact files ({record_path}); pass --check to run it again")
        return ParityResult(True, record.detail, script_sha, reused=True)
    links = {exp.config.competition: Path(exp.config.data.root), build.names.dataset_slug: build.dataset_dir}
    if build.wheels_dir.is_dir():
        links[build.names.wheels_slug] = build.wheels_dir
    log(f"parity: running {build.script_path.name} offline (network blocked) against a stand-in /kaggle: "
        f"input/{exp.config.competition} -> {exp.config.data.root}, input/{build.names.dataset_slug} -> {build.dataset_dir}")
    run = run_offline(build.script_path, links, timeout_s)
    write_text(build.kernel_dir / PARITY_LOG, run.output)
    problems = _compare(run, reference)
    if problems and not regenerated and run.returncode == 0 and not run.network_attempts:
        log("parity: the kernel's files differ from the submission on disk: running submit again to compare with a fresh one")
        reference = list(run_submit())
        fingerprint = _parity_fingerprint(build, script_sha, reference)
        problems = _compare(run, reference)
    passed = not problems
    detail = ("byte-identical to " + ", ".join(str(p) for p in reference)) if passed else "; ".join(problems)
    ParityRecord(passed=passed, detail=detail, fingerprint=fingerprint, seconds=round(run.seconds, 1)).write(record_path)
    log(f"parity: {'passed' if passed else 'FAILED'} in {run.seconds:.0f} s: {detail}")
    return ParityResult(passed, detail, script_sha)


def run_offline(script: Path, inputs: dict[str, Path], timeout_s: float = _PARITY_TIMEOUT_S,
                python: str | None = None, env: dict[str, str] | None = None) -> OfflineRun:
    """Run `script` with this interpreter (or `python`) the way Kaggle runs a kernel with internet off
    (`env`: a few more variables for it, e.g. the training kernel's check switch).

    A temporary tree stands in for /kaggle: input/<name> links to each folder of `inputs`, the
    script runs from a copy in src/ with working/ as its current folder, HOME empty, no credential
    and no variable of this environment but a few locale/thread/GPU ones. A sitecustomize makes every
    IPv4/IPv6 connect, send and name lookup fail and notes each attempt; proxies point nowhere.
    """
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kernel-offline-") as tmp:
        tmp_root = Path(tmp)
        input_root, working, code_dir = tmp_root / "kaggle/input", tmp_root / "kaggle/working", tmp_root / "kaggle/src"
        guard, home, scratch = tmp_root / "guard", tmp_root / "home", tmp_root / "tmp"
        for folder in (input_root, working, code_dir, guard, home, scratch):
            folder.mkdir(parents=True)
        for name, target in inputs.items():
            _link_or_copy(Path(target).resolve(), input_root / name)
        shutil.copyfile(script, code_dir / script.name)
        (guard / "sitecustomize.py").write_text(_NETWORK_GUARD, encoding="utf-8")
        attempts_log, ready_flag = tmp_root / "network-attempts.log", tmp_root / "network-guard-ready"
        extra, env = env or {}, {name: os.environ[name] for name in _SANDBOX_ENV if name in os.environ}
        env.update({
            "HOME": str(home), "TMPDIR": str(scratch), "PYTHONPATH": str(guard), "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8",
            "KAGGLE_INPUT_ROOT": str(input_root), "KAGGLE_WORKING_ROOT": str(working),
            "KERNEL_CHECK_NETWORK_LOG": str(attempts_log), "KERNEL_CHECK_READY": str(ready_flag),
            "NO_PROXY": "", "no_proxy": "",
            **{name: _NOWHERE for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")},
            **extra,
        })
        try:
            done = subprocess.run([python or sys.executable, str(code_dir / script.name)], cwd=working, env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=timeout_s)
            returncode, output = done.returncode, done.stdout.decode("utf-8", "replace")
        except subprocess.TimeoutExpired as expired:
            returncode = -1
            output = (expired.stdout or b"").decode("utf-8", "replace") + f"\n(stopped after {timeout_s:.0f} s)\n"
        files = {p.relative_to(working).as_posix(): p.read_bytes() for p in sorted(working.rglob("*")) if p.is_file()}
        attempts = attempts_log.read_text(encoding="utf-8").splitlines() if attempts_log.exists() else []
        return OfflineRun(returncode, output, files, attempts, ready_flag.exists(), time.perf_counter() - started)


def _link_or_copy(target: Path, link: Path) -> None:
    try:
        link.symlink_to(target, target_is_directory=True)
    except OSError:  # no symlinks here: copy instead
        shutil.copytree(target, link)


def _reference_files(exp: Experiment, run_submit: Callable[[], list[Path]], log: Log) -> tuple[list[Path], bool]:
    """Submit's files, made again first when missing or older than what they are made from."""
    files = [exp.submission_dir / name for name in exp.fmt.submission_names()]
    sources = [exp.submission_checkpoint(), exp.thresholds_path, exp.config_path]
    newest = max(p.stat().st_mtime_ns for p in sources if p.exists())
    if all(f.is_file() and f.stat().st_mtime_ns >= newest for f in files):
        return files, False
    log("parity: the submission is missing or older than the model, thresholds or config: running submit first")
    return list(run_submit()), True


def _parity_fingerprint(build: KernelBuild, script_sha: str, reference: list[Path]) -> dict:
    return {"script": script_sha, "dataset": build.dataset_files(),
            "submission": {p.name: file_sha256(p) for p in reference if p.is_file()},
            "python": sys.executable, "versions": package_versions(_CHECKED_MODULES)}


def _compare(run: OfflineRun, reference: list[Path]) -> list[str]:
    """What differs between the offline run and submit's files (empty = byte-identical)."""
    problems = []
    if not run.network_blocked:
        problems.append("the network guard did not load in the kernel's interpreter, so the check proves nothing")
    if run.network_attempts:
        problems.append(f"the kernel tried to reach the network ({', '.join(run.network_attempts[:3])}), "
                        "which a kernel with internet off cannot")
    if run.returncode != 0:
        tail = " | ".join(line.strip() for line in run.output.strip().splitlines()[-3:])
        problems.append(f"the kernel exited with status {run.returncode}: {tail[-400:]}")
    expected = {p.name: p for p in reference}
    for name, path in expected.items():
        if name not in run.files:
            if run.returncode == 0:
                problems.append(f"the kernel wrote no {name}")
            continue
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif run.files[name] != path.read_bytes():
            problems.append(f"the kernel's {name} differs from {path}: {_first_difference(run.files[name], path.read_bytes())}")
    extra = sorted(set(run.files) - set(expected))
    if extra:
        problems.append(f"the kernel also wrote {', '.join(extra[:5])} into the working folder (submit does not)")
    return problems


def _first_difference(kernel: bytes, submitted: bytes) -> str:
    try:
        kernel_lines, submit_lines = kernel.decode("utf-8").splitlines(), submitted.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        offset = next((i for i, (a, b) in enumerate(zip(kernel, submitted)) if a != b), min(len(kernel), len(submitted)))
        return f"first difference at byte {offset} ({len(kernel)} vs {len(submitted)} bytes)"
    for number, (a, b) in enumerate(zip(kernel_lines, submit_lines), start=1):
        if a != b:
            return f"line {number}: kernel {a[:80]!r}, submit {b[:80]!r}"
    if len(kernel_lines) != len(submit_lines):
        return f"the kernel wrote {len(kernel_lines)} lines, submit {len(submit_lines)}"
    return f"line endings or trailing bytes differ ({len(kernel)} vs {len(submitted)} bytes)"


# Loaded by the offline interpreter through PYTHONPATH before any user code.
_NETWORK_GUARD = '''"""Kernel parity check: this interpreter has no network, as a Kaggle kernel with internet off."""
import errno
import os
import socket

_LOG = os.environ.get("KERNEL_CHECK_NETWORK_LOG", "")
_INET = (socket.AF_INET, socket.AF_INET6)


def _note(what):
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as handle:
            handle.write(what + "\\n")


def _refused(what):
    _note(what)
    return OSError(errno.ENETUNREACH, "network is unreachable (offline kernel check)")


_connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto


def _guarded_connect(self, address):
    if self.family in _INET:
        raise _refused(f"connect {address!r}")
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    if self.family in _INET:
        _note(f"connect {address!r}")
        return errno.ENETUNREACH
    return _connect_ex(self, address)


def _guarded_sendto(self, data, *args):
    if self.family in _INET:
        raise _refused(f"sendto {args[-1]!r}")
    return _sendto(self, data, *args)


def _guarded_getaddrinfo(host, *args, **kwargs):
    _note(f"resolve {host!r}")
    raise socket.gaierror(socket.EAI_NONAME, "name resolution is off (offline kernel check)")


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
socket.socket.sendto = _guarded_sendto
socket.getaddrinfo = _guarded_getaddrinfo
if os.environ.get("KERNEL_CHECK_READY"):
    open(os.environ["KERNEL_CHECK_READY"], "w").close()
'''


# ---- push and follow -----------------------------------------------------------------------------

def push(exp: Experiment, build: KernelBuild, parity: ParityResult | None, log: Log = print,
         wait_s: float = DATASET_WAIT_S) -> tuple[str, int | None]:
    """Upload the weights and wheels datasets (create, or a new version; each skipped when unchanged since the
    last push), wait until Kaggle has processed them, push the kernel; return (kernel URL, kernel version).

    Refused when the parity check failed, or when a built file changed since it was built and checked.
    """
    changed = [rel for rel, digest in sorted(build.files.items())
               if not (build.kernel_dir / rel).is_file() or file_sha256(build.kernel_dir / rel) != digest]
    if changed:
        raise PipelineError(f"{build.kernel_dir / changed[0]} changed after it was built and checked: not pushing; "
                            f"build, check and push again with: {exp.command('kernel push')}")
    if parity is None:
        log("warning: pushing a kernel that was not run locally (no parity check)")
    elif not parity.passed or parity.script_sha256 != build.files[build.names.code_file]:
        raise PipelineError(f"the parity check did not pass for {build.script_path}: not pushing ({parity.detail})")
    names = build.names
    record_path = exp.kernel_push_path
    last = PushRecord.read(record_path)
    dataset_files = build.dataset_files()
    last = upload_dataset(build.dataset_dir, names.dataset_ref, dataset_files, "dataset", last, record_path,
                          f"{exp.name}: {MODEL_FILE} {dataset_files[MODEL_FILE][:12]}", wait_s, log)
    if build.wheels_dir.is_dir():
        wheels = build.dataset_files(WHEELS_DIR)
        last = upload_dataset(build.wheels_dir, names.wheels_ref, wheels, "wheels", last, record_path,
                              f"{exp.name}: {len(wheels)} wheels", wait_s, log)
    kernel_url, version = cli.push_kernel_with_version(build.kernel_dir)
    last.model_copy(update={"kernel_ref": names.kernel_ref, "kernel_url": kernel_url, "version": version,
                            "script_sha256": build.files[names.code_file], "competition": exp.config.competition,
                            "submission_names": exp.fmt.submission_names()}).write(record_path)
    log(f"kernel pushed: {kernel_url} (version {version}); follow it with: {exp.command('kernel status')}")
    return kernel_url, version


def upload_dataset(folder: Path, ref: str, files: dict[str, str], key: str, last: PushRecord, record_path: Path,
                   message: str, wait_s: float, log: Log) -> PushRecord:
    """Upload a flat dataset folder (create, or a new version) unless the last push (`last`, its upload `key`)
    sent these exact files; wait until Kaggle has processed it; return the updated record (written at once)."""
    label = "weights" if key == "dataset" else key  # push.json's first keys predate the wheels dataset
    if last.uploaded(key) == (ref, files):
        log(f"{label} dataset {ref} unchanged since the last push: not uploading it again")
        return last
    url = cli.create_or_version_dataset(folder, message)
    log(f"{label} dataset uploaded: {url}")
    _wait_until_ready(ref, wait_s, log)
    last = last.with_upload(key, ref, files)
    last.write(record_path)
    return last


def _wait_until_ready(dataset_ref: str, wait_s: float, log: Log) -> None:
    """Kaggle attaches a new dataset version to kernels only once processed: wait for that."""
    deadline = time.monotonic() + wait_s
    while True:
        state = cli.dataset_status(dataset_ref)
        if state == "ready":
            return
        if "error" in state or "fail" in state:
            raise PipelineError(f"Kaggle could not process dataset {dataset_ref} ({state}): open it on Kaggle to see why")
        if time.monotonic() > deadline:
            raise PipelineError(f"dataset {dataset_ref} is still {state} after {wait_s / 60:.0f} min: push the kernel "
                                "later with the same command (the dataset is not uploaded again)")
        log(f"weights dataset {dataset_ref} is {state}; waiting")
        time.sleep(_DATASET_POLL_S)


def kernel_status(exp: Experiment, log: Log = print) -> cli.KernelStatus:
    """State of the kernel's latest run (queued, running, complete, error, ...)."""
    ref = kaggle_names(exp).kernel_ref
    status = cli.kernel_status(ref)
    log(f"kernel {ref}: {status.state}" + (f": {status.failure_message}" if status.failure_message else ""))
    return status


def fetch_output(exp: Experiment, log: Log = print) -> list[Path]:
    """Download the latest run's output into kernels/<exp>/output/ and validate its submission when the
    competition folder is here."""
    ref = kaggle_names(exp).kernel_ref
    dest = exp.kernel_dir / OUTPUT_DIR
    files = cli.kernel_output(ref, dest)
    log(f"kernel {ref} output -> {dest}: {', '.join(p.name for p in files) or 'nothing'}")
    try:
        fmt = exp.fmt
    except PipelineError:
        log(f"(submission not validated: the competition folder {exp.config.data.root} is not here)")
        return files
    submission = [dest / name for name in fmt.submission_names()]
    if all(p.is_file() for p in submission):
        fmt.read_submission(submission)
        log(f"validated against the competition's format: {', '.join(str(p) for p in submission)}")
    return files


def submit_kernel(exp: Experiment, log: Log = print) -> list[LeaderboardEntry]:
    """Code competitions: submit the pushed kernel version's output once its run is complete, then wait
    (bounded, `submit.score_wait_s`) for its leaderboard score."""
    record_path = exp.kernel_push_path
    record = PushRecord.read(record_path)
    if not record.version or not record.kernel_ref:
        raise PipelineError(f"{record_path}: no pushed kernel version: push first with: {exp.command('kernel push')}")
    ref, version = record.kernel_ref, record.version
    names = record.submission_names or ["submission.csv"]
    if len(names) != 1:
        raise PipelineError(f"this format writes {len(names)} files; a code competition takes one: submit by hand")
    status = cli.kernel_status(ref)
    if status.state != "complete":
        raise PipelineError(f"kernel {ref} is {status.state}, not complete: submit once its run has finished "
                            f"(check with: {exp.command('kernel status')})")
    competition, message = exp.config.competition, exp.config.submit.message
    before = leaderboard.refs_listed([competition])
    reply = cli.submit_code(competition, ref, version, names[0], message)
    log(f"submitted {ref} version {version} ({names[0]}) to {competition}: {reply}")
    entry = leaderboard.uploaded_entry(competition, names[0], message, before)
    return leaderboard.wait_for_scores([entry], before, exp.config.submit.score_wait_s, exp.config.submit.score_poll_s, log)
