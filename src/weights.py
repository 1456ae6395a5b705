"""Pretrained timm weights: fetched once from the Hugging Face hub (the `weights` stage), then used offline.

`fetch_weights` downloads the very file `timm.create_model(tag, pretrained=True)` would load (timm's
own resolution of the tag's pretrained config, timm's `hf_hub_download`) into `input/weights/<tag>/`:
the weight file, `pretrained_cfg.json` (timm's pretrained config: mean, std, input_size, license,
hf_hub_id, ...) and `manifest.json` (file, size, SHA-256, hub revision). The rest of the pipeline
(`resolve_weights` for train, `normalisation` for the transforms) reads that folder or timm's
registry and never touches the network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import glob
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from src import confine
from src.artifacts import WEIGHTS_ROOT
from src.atomic import _fsync_dir, write_text
from src.errors import PipelineError

if TYPE_CHECKING:
    from src.config import Config, ModelConfig

Log = Callable[[str], None]

MANIFEST = "manifest.json"
PRETRAINED_CFG = "pretrained_cfg.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The license names `dataset-metadata.json` accepts (Kaggle's dataset metadata documentation).
KAGGLE_LICENSES = (
    "CC0-1.0",
    "CC-BY-SA-3.0",
    "CC-BY-SA-4.0",
    "CC-BY-NC-SA-4.0",
    "GPL-2.0",
    "ODbL-1.0",
    "DbCL-1.0",
    "copyright-authors",
    "other",
    "unknown",
    "CC-BY-4.0",
    "CC-BY-NC-4.0",
    "PDDL",
    "CC-BY-3.0",
    "CC-BY-3.0-IGO",
    "US-Government-Works",
    "CC-BY-NC-SA-3.0-IGO",
    "CDLA-Permissive-1.0",
    "CDLA-Sharing-1.0",
    "CC-BY-ND-4.0",
    "CC-BY-NC-ND-4.0",
    "ODC-BY-1.0",
    "LGPL-3.0",
    "AGPL-3.0",
    "FDL-1.3",
    "EU-ODP-Legal-Notice",
    "apache-2.0",
    "GPL-3.0",
)


@dataclass(frozen=True)
class WeightsFolder:
    """A fetched `input/weights/<tag>/`: its weight file, timm's pretrained config and what the manifest records."""

    path: Path
    tag: str
    file_name: str
    sha256: str
    size: int
    pretrained_cfg: dict
    revision: str = ""
    source: str = ""

    @property
    def weight_file(self) -> Path:
        return self.path / self.file_name


@dataclass(frozen=True)
class _Download:
    path: Path
    commit: str
    etag: str
    url: str


def weights_command(model_tag: str, config_path: Path | None = None) -> str:
    """The command that fetches `model_tag` (to run where there is internet)."""
    return f"python -m src.stage weights {f'--config {config_path}' if config_path else f'--model {model_tag}'}"


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@contextlib.contextmanager
def hub_online() -> Iterator[None]:
    """Lift huggingface_hub's offline mode for one call (the `weights` stage, the one place that downloads).

    src/__init__.py sets HF_HUB_OFFLINE=1 wherever the package is imported; huggingface_hub reads it once, at import, into
    `constants.HF_HUB_OFFLINE`, which every request checks. That value is switched off here and restored after.
    """
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


# ---- timm's view of a tag -----------------------------------------------------------------------


def timm_pretrained_cfg(model_tag: str) -> dict:
    """timm's registered pretrained config of `model_tag` (`<architecture>.<tag>`) as JSON-ready data; no network."""
    import timm
    from timm.models import get_pretrained_cfg, is_model_pretrained

    arch, _, tag = model_tag.partition(".")
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3) or ["resnet50"]
        raise PipelineError(
            f"model tag {model_tag}: '{arch}' is not a timm model; close timm names: {', '.join(close)}"
        )
    known = timm.list_pretrained(f"{arch}.*")
    if not tag and known:
        raise PipelineError(
            f"model tag {model_tag}: names no pretrained tag; name one, e.g. {', '.join(known[:3])} "
            f"(timm.list_pretrained('{arch}.*') lists them)"
        )
    if not tag or not is_model_pretrained(model_tag):
        close = difflib.get_close_matches(model_tag, known, n=3) or known[:3]
        hint = f"close ones: {', '.join(close)}" if close else f"timm has no pretrained weights for {arch} at all"
        raise PipelineError(
            f"model tag {model_tag}: not a timm tag with pretrained weights; {hint} "
            f"(timm.list_pretrained('{arch}.*') lists them)"
        )
    cfg = get_pretrained_cfg(model_tag)
    return json.loads(json.dumps(cfg.to_dict(remove_source=False, remove_null=True)))  # tuples -> lists


def _hub_source(model_tag: str, cfg: dict) -> tuple[str, str | None, list[str]]:
    """(repo id, revision, weight file names best first), as timm's `load_pretrained` picks them for this cfg."""
    from timm.models._builder import _resolve_pretrained_source
    from timm.models._hub import HF_WEIGHTS_NAME, _get_safe_alternatives, hf_split

    load_from, location = _resolve_pretrained_source(cfg)
    arch = model_tag.partition(".")[0]
    if load_from != "hf-hub":
        raise PipelineError(
            f"model tag {model_tag}: timm loads these weights from {load_from or 'nowhere'} "
            f"({cfg.get('url') or 'no url'}), not from the Hugging Face hub; pick a tag with an hf_hub_id "
            f"(timm.list_pretrained('{arch}.*'))"
        )
    if isinstance(location, (tuple, list)) and cfg.get("custom_load") == "hf":
        raise PipelineError(
            f"model tag {model_tag}: timm reads these weights with a model-specific loader, not as a "
            f"state dict; pick another tag (timm.list_pretrained('{arch}.*'))"
        )
    repo, filename = location if isinstance(location, (tuple, list)) else (location, HF_WEIGHTS_NAME)
    repo_id, revision = hf_split(repo)
    # timm prefers a safetensors twin of a pickled file when the hub has one.
    names = [filename] if filename.endswith(".safetensors") else [*_get_safe_alternatives(filename), filename]
    return repo_id, revision, names


# ---- fetching -----------------------------------------------------------------------------------


def fetch_weights(
    model_tag: str, dest_root: Path = WEIGHTS_ROOT, log: Log = print, quiet: bool = False
) -> WeightsFolder:
    """Download `model_tag`'s pretrained weights once into `dest_root/<tag>/`; return that folder.

    A folder already there is checked against its manifest's SHA-256 and returned with no network call (a
    corrupt one is fetched again). huggingface_hub's offline mode is respected: wrap the call in `hub_online()`.
    Raises a one-line PipelineError when the hub cannot be reached, naming the `weights` command.
    """
    cfg = timm_pretrained_cfg(model_tag)
    dest_root = Path(dest_root)
    folder = dest_root / model_tag
    if folder.exists():
        local = _verified_local(folder, model_tag, log)
        if local is not None:
            return local
    repo_id, revision, names = _hub_source(model_tag, cfg)
    with confine.staging(_cleared(dest_root, model_tag), f".{model_tag}.", ".download") as staging:
        os.chmod(staging, dest_root.stat().st_mode & 0o777)  # mkdtemp makes 0700; the folder gets its parent's mode
        with _hub_errors(model_tag, repo_id, folder):
            download = _download(repo_id, revision, names, staging, log, quiet)
        fetched = _finish_folder(staging, model_tag, cfg, repo_id, download)
        _move_into_place(staging, folder)
    return dataclasses.replace(fetched, path=folder)


def _verified_local(folder: Path, model_tag: str, log: Log) -> WeightsFolder | None:
    """The local copy when its weight file matches the manifest's SHA-256; None when it must be fetched again."""
    if not (folder / MANIFEST).is_file():
        raise PipelineError(
            f"{folder}: exists but has no {MANIFEST}, so the weights stage did not make it; move it away "
            f"and rerun {weights_command(model_tag)}"
        )
    try:
        local = read_weights_folder(folder)
    except PipelineError:
        local = None
    if local is not None and local.tag == model_tag and local.weight_file.is_file():
        if file_sha256(local.weight_file) == local.sha256:
            log(f"{folder}: already here and {local.file_name} matches its SHA-256; nothing downloaded")
            return local
    log(f"{folder}: the local copy does not match its {MANIFEST} (corrupt or changed); downloading it again")
    return None


def _cleared(dest_root: Path, model_tag: str) -> Path:
    """`dest_root`, made, without the staging folders of earlier downloads of `model_tag` (each tag has one writer:
    a killed download left them, or a failed check kept one for a look until this next run)."""
    try:
        dest_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PipelineError(
            f"{dest_root}: cannot write ({exc.strerror or exc}); make it writable or free space"
        ) from None
    for stale in dest_root.glob(f".{glob.escape(model_tag)}.*.download"):
        shutil.rmtree(stale, ignore_errors=True)
    return dest_root


def _download(repo_id: str, revision: str | None, names: list[str], staging: Path, log: Log, quiet: bool) -> _Download:
    """Probe the candidate files (one quick HEAD each, no retries), then let timm's hf_hub_download fetch the first."""
    import timm
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import RemoteEntryNotFoundError
    from huggingface_hub.utils.tqdm import silent_tqdm
    from timm.models._hub import hf_hub_download  # huggingface_hub's, tagged library_name="timm" as timm calls it

    unsafe = [name for name in names if not confine.is_safe_name(name)]
    if unsafe:
        raise PipelineError(f"{repo_id}: timm names the file {unsafe[0]!r}, not a plain relative name: not downloaded")
    for name in names:
        try:
            meta = get_hf_file_metadata(
                hf_hub_url(repo_id, name, revision=revision), library_name="timm", library_version=timm.__version__
            )
            break
        except RemoteEntryNotFoundError:
            continue
    else:
        raise PipelineError(
            f"{constants.ENDPOINT}/{repo_id}: holds none of {', '.join(names)}; the hub repository "
            "does not match timm's pretrained config: try another tag or another timm version"
        )
    if not meta.commit_hash:
        raise PipelineError(
            f"{constants.ENDPOINT}: answered without X-Repo-Commit, so it is not a Hugging Face hub; "
            "check HF_ENDPOINT and any proxy, then rerun"
        )
    size = f"{meta.size / 1e6:.1f} MB" if meta.size else "size unknown"
    log(f"downloading {name} ({size}) from {constants.ENDPOINT}/{repo_id} at revision {meta.commit_hash[:12]}")
    path = hf_hub_download(
        repo_id, name, revision=meta.commit_hash, local_dir=staging, tqdm_class=silent_tqdm if quiet else None
    )
    return _Download(
        Path(path), meta.commit_hash, meta.etag or "", hf_hub_url(repo_id, name, revision=meta.commit_hash)
    )


def _finish_folder(staging: Path, model_tag: str, cfg: dict, repo_id: str, download: _Download) -> WeightsFolder:
    """Check the download against the hub's SHA-256, then write timm's pretrained config and the manifest beside it."""
    import huggingface_hub
    import timm

    shutil.rmtree(
        staging / ".cache", ignore_errors=True
    )  # huggingface_hub's local_dir bookkeeping: keep the folder flat
    path, root = download.path.absolute(), staging.absolute()
    name = path.relative_to(root).as_posix() if path.is_relative_to(root) else ""
    confine.expected_files(staging, [name] if name else [], f"the hub's answer ({download.url})")
    sha256 = file_sha256(download.path)
    # An LFS file's ETag is its SHA-256; a small git-stored file has a git SHA-1 instead, nothing to compare.
    if re.fullmatch(r"[0-9a-f]{64}", download.etag) and download.etag != sha256:
        raise PipelineError(
            f"{download.url}: the downloaded file's SHA-256 {sha256} is not the hub's {download.etag} "
            "(a corrupted transfer); rerun the weights stage"
        )
    with open(download.path, "rb+") as handle:
        os.fsync(handle.fileno())
    folder = WeightsFolder(
        staging, model_tag, download.path.name, sha256, download.path.stat().st_size, cfg, download.commit, download.url
    )
    manifest = {
        "tag": model_tag,
        "file": folder.file_name,
        "sha256": sha256,
        "size": folder.size,
        "hf_hub_id": repo_id,
        "revision": download.commit,
        "source": download.url,
        "timm": timm.__version__,
        "huggingface_hub": huggingface_hub.__version__,
    }
    write_text(staging / PRETRAINED_CFG, json.dumps(cfg, indent=2) + "\n")
    write_text(staging / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return folder


def _move_into_place(staging: Path, folder: Path) -> None:
    """Rename the finished staging folder to `folder`; a corrupt copy there is swapped out first, then deleted."""
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}") if folder.exists() else None
    try:
        if old is not None:
            os.replace(folder, old)
        os.replace(staging, folder)
    except OSError as exc:
        raise PipelineError(
            f"{folder}: cannot move the download into place ({exc.strerror or exc}); "
            "check the folder's permissions and rerun"
        ) from None
    _fsync_dir(folder.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _hub_errors(model_tag: str, repo_id: str, folder: Path) -> Iterator[None]:
    """Turn huggingface_hub's and the network's exceptions into one line: what failed and what to do."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        FileMetadataError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    where = f"{folder}: downloading {repo_id} from {constants.ENDPOINT}"
    elsewhere = (
        f"run the `weights` stage where there is internet ({weights_command(model_tag)}), "
        f"then copy {folder}/ to this machine"
    )
    try:
        yield
    except OfflineModeIsEnabled:
        raise PipelineError(f"{where}: huggingface_hub is offline (HF_HUB_OFFLINE is set); {elsewhere}") from None
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise PipelineError(
            f"{where}: no such hub repository, or it is gated ({_first_line(exc)}); check the tag, or "
            "log in with `hf auth login` for a gated one"
        ) from None
    except (LocalEntryNotFoundError, FileMetadataError, httpx2.TransportError) as exc:
        raise PipelineError(f"{where}: cannot reach the hub ({_first_line(exc)}); {elsewhere}") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "an error"
        raise PipelineError(
            f"{where}: the hub answered {status} ({_first_line(exc)}); try again later, or {elsewhere}"
        ) from None
    except OSError as exc:
        raise PipelineError(
            f"{folder}: cannot write the download ({exc.strerror or exc}); free space or make "
            f"{folder.parent} writable, then rerun"
        ) from None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:160]


# ---- reading a fetched folder (train, oof, submit: never the network) ---------------------------


def read_weights_folder(path: Path) -> WeightsFolder:
    """The folder the `weights` stage wrote at `path` (manifest + pretrained config); the weight file is not hashed."""
    path = Path(path)
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        cfg = json.loads((path / PRETRAINED_CFG).read_text(encoding="utf-8"))
        folder = WeightsFolder(
            path,
            str(manifest["tag"]),
            str(manifest["file"]),
            str(manifest["sha256"]),
            int(manifest["size"]),
            dict(cfg),
            str(manifest.get("revision", "")),
            str(manifest.get("source", "")),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PipelineError(
            f"{manifest_path}: not a readable weights manifest ({type(exc).__name__}: {exc}); fetch the "
            f"weights again: {weights_command(path.name)}"
        ) from None
    if Path(folder.file_name).name != folder.file_name or folder.file_name in ("", ".", ".."):
        raise PipelineError(
            f"{manifest_path}: file '{folder.file_name}' is not a plain file name; fetch the weights again: "
            f"{weights_command(folder.tag)}"
        )
    return folder


def resolve_weights(
    model: ModelConfig, config_path: Path | None = None, weights_root: Path = WEIGHTS_ROOT
) -> Path | None:
    """The local weight file `build_model` loads for this model config, or None (scratch). Never downloads.

    `model.pretrained` (a timm tag) is looked up in `weights_root/<tag>/`; a missing folder is a one-line
    error naming the `weights` command. `model.weights` is a file, or a folder the `weights` stage made.
    """
    if model.pretrained is None:
        if model.weights is not None and Path(model.weights).is_dir():
            return _checked_folder(model, Path(model.weights), config_path).weight_file
        return model.weights
    if model.forbid_pretrained:
        raise PipelineError(
            f"config model.pretrained: {model.pretrained} given but model.forbid_pretrained is true "
            "(this competition forbids pretrained weights); set model.pretrained=null"
        )
    folder = Path(weights_root) / model.pretrained
    if not (folder / MANIFEST).is_file():
        raise PipelineError(
            f"{folder}: the pretrained weights {model.pretrained} are not here, and train never "
            f"downloads; fetch them once where there is internet with "
            f"`{weights_command(model.pretrained, config_path)}`, then copy {folder}/ here"
        )
    return _checked_folder(model, folder, config_path).weight_file


def _checked_folder(model: ModelConfig, path: Path, config_path: Path | None) -> WeightsFolder:
    folder = read_weights_folder(path)
    arch = folder.pretrained_cfg.get("architecture") or folder.tag.partition(".")[0]
    if arch != model.name or (model.pretrained is not None and folder.tag != model.pretrained):
        raise PipelineError(
            f"{path}: holds {folder.tag} weights but the config asks for "
            f"{model.pretrained or model.name}; point the config at weights for that model"
        )
    if not folder.weight_file.is_file() or folder.weight_file.stat().st_size != folder.size:
        raise PipelineError(
            f"{folder.weight_file}: missing, or not the {folder.size} bytes {MANIFEST} records (an "
            f"incomplete copy); fetch it again: {weights_command(folder.tag, config_path)}"
        )
    if not _hash_matches(folder):
        raise PipelineError(
            f"{folder.weight_file}: its SHA-256 is not the {folder.sha256[:12]}... {MANIFEST} records (a damaged or "
            f"replaced file); fetch it again: {weights_command(folder.tag, config_path)}"
        )
    return folder


VERIFIED = ".verified"  # beside the weights folders: per folder, the size and mtime at which its SHA-256 last matched
_verified_here: dict[tuple, bool] = {}  # the same, for a read-only folder (a Kaggle dataset), for this process


def _hash_matches(folder: WeightsFolder) -> bool:
    """Whether the weight file's SHA-256 is the manifest's, hashed once per (size, mtime): every load checks it, a
    file replaced or flipped in place is hashed again (its mtime moves), an unchanged one costs a stat."""
    stat = folder.weight_file.stat()
    stamp = {"file": folder.file_name, "sha256": folder.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    key, record = tuple(stamp.values()), folder.path.parent / VERIFIED / f"{folder.path.name}.json"
    if key in _verified_here:
        return True
    try:
        if json.loads(record.read_text(encoding="utf-8")) == stamp:
            return True
    except (OSError, ValueError):
        pass
    if file_sha256(folder.weight_file) != folder.sha256:
        return False
    _verified_here[key] = True
    with contextlib.suppress(OSError):  # a read-only folder keeps the in-process record only
        record.parent.mkdir(exist_ok=True)
        write_text(record, json.dumps(stamp))
    return True


def normalisation(config: Config, weights_root: Path = WEIGHTS_ROOT) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for the transforms: `augment.mean` / `augment.std` where the config sets them, else the
    pretrained weights' own (timm's pretrained config of `model.pretrained`, or of the folder `model.weights`
    names), else ImageNet's. Reads local files or timm's registry only (works offline, e.g. in a kernel)."""
    aug = config.augment
    cfg = {} if aug.mean is not None and aug.std is not None else _pretrained_cfg_of(config.model, Path(weights_root))
    mean = aug.mean if aug.mean is not None else cfg.get("mean") or IMAGENET_MEAN
    std = aug.std if aug.std is not None else cfg.get("std") or IMAGENET_STD
    return tuple(float(value) for value in mean), tuple(float(value) for value in std)


def _pretrained_cfg_of(model: ModelConfig, weights_root: Path) -> dict:
    if model.forbid_pretrained:
        return {}
    if model.pretrained is not None:
        if (weights_root / model.pretrained / MANIFEST).is_file():
            return read_weights_folder(weights_root / model.pretrained).pretrained_cfg
        return timm_pretrained_cfg(model.pretrained)  # the weights are elsewhere (a kernel predicts from best.pt)
    if model.weights is not None and (Path(model.weights) / MANIFEST).is_file():
        return read_weights_folder(Path(model.weights)).pretrained_cfg
    return {}


# ---- a Kaggle dataset of a fetched folder -------------------------------------------------------


def kaggle_license(license_name: str | None) -> str:
    """Kaggle's name for the weights' license (timm's pretrained cfg `license`, e.g. apache-2.0 -> apache-2.0).

    A license Kaggle has no name for (mit, bsd-3-clause, a model-specific one) becomes "other" and is named in the
    description; never CC0-1.0, which would dedicate someone else's weights to the public domain.
    """
    known = {name.lower(): name for name in KAGGLE_LICENSES}
    return known.get((license_name or "unknown").lower(), "other")


def kaggle_slug(model_tag: str) -> str:
    """`resnet50.a1_in1k` -> `timm-resnet50-a1-in1k` (at most 50 characters, as Kaggle allows)."""
    slug = "timm-" + re.sub(r"[^a-z0-9]+", "-", model_tag.lower()).strip("-")
    if len(slug) <= 50:
        return slug
    return f"{slug[:41].rstrip('-')}-{hashlib.sha256(model_tag.encode()).hexdigest()[:8]}"


def dataset_metadata(folder: WeightsFolder, owner: str) -> dict:
    """`dataset-metadata.json` for a private Kaggle dataset holding `folder`'s files, owned by `owner`."""
    license_name = folder.pretrained_cfg.get("license")
    description = (
        f"timm pretrained weights {folder.tag}: {folder.file_name} (SHA-256 {folder.sha256}) from "
        f"{folder.source or folder.pretrained_cfg.get('hf_hub_id', 'the Hugging Face hub')}, with timm's "
        f"pretrained config ({PRETRAINED_CFG}) and {MANIFEST}. Upstream license: "
        f"{license_name or 'not stated'}. Made by `{weights_command(folder.tag)} --push`."
    )
    return {
        "id": f"{owner}/{kaggle_slug(folder.tag)}",
        "title": f"timm {folder.tag}"[:50],
        "description": description,
        "licenses": [{"name": kaggle_license(license_name)}],
    }
