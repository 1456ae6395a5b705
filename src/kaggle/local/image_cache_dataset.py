"""The training images' packed cache as a Kaggle dataset, so a training kernel reads them in place instead of
decoding the competition's images in every session (iMet at 320 px: about an hour of a session and 34 GB raw).

`kernel cache` builds the packed cache here (resumable chunk by chunk, the cache's own build), and makes
`kernels/_image-cache/<slug>/` of it: the packed files hard-linked, `source.json` (each image's path under data.root and
byte size, src/data/prebuilt.py) and dataset-metadata.json. The slug names the competition and the settings the
pixels depend on, so experiments with the same data settings share one dataset, and a config with other settings
finds none (its kernel builds its own cache on Kaggle, as before). `kernel train` attaches it when it is there and
uploads it with the kernel's other datasets when it changed; on Kaggle the sums are checked and the training images
are read from it (data.prebuilt_cache). `<slug>.push.json` beside it records the last upload, shared by experiments.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from src.artifacts import Experiment, PushRecord
from src.data.cache import CachePolicy, decode_table, size_on_disk
from src.data.images import MAX_PIXELS
from src.data.prebuilt import export_prebuilt
from src.errors import PipelineError
from src.kaggle.local.inference_kernel import write_dataset_metadata
from src.kaggle.local.names import kaggle_names
from src.kaggle.local.push import DATASET_WAIT_S, upload_dataset
from src.kaggle.local.secret_scan import seal

Log = Callable[[str], None]
UPLOAD_KEY = "images"


@dataclass(frozen=True)
class ImageCacheDataset:
    """A built image-cache dataset folder: its Kaggle id, files (name -> sha256, metadata aside), codec, count."""

    folder: Path
    ref: str
    files: dict[str, str]
    codec: str
    count: int

    @property
    def record_path(self) -> Path:
        return self.folder.with_name(self.folder.name + ".push.json")

    def settings(self) -> dict:
        """What the training kernel's settings carry about it (the files' sums are checked on Kaggle)."""
        return {"dataset_ref": self.ref, "files": self.files, "codec": self.codec, "count": self.count}


def image_cache_slug(exp: Experiment) -> str:
    """<competition>-<resize>-<cached side>-<codec><quality>: what the cached pixels depend on (the pixel limit too
    when it is not the default), within Kaggle's 50 characters."""
    data = exp.config.data
    competition = re.sub(r"[^a-z0-9]+", "-", exp.config.competition.lower()).strip("-")[:22].rstrip("-")
    codec = data.cache_format + ("" if data.cache_format == "png" else str(data.cache_quality))
    limit = "" if data.max_pixels == MAX_PIXELS else f"-max{data.max_pixels}"
    return re.sub(r"-+", "-", f"{competition}-{data.resize}-{data.source_size}-{codec}{limit}".replace("_", "-"))[:50]


def image_cache_folder(exp: Experiment) -> Path:
    return exp.shipped_caches_dir / image_cache_slug(exp)


def build_image_cache_dataset(exp: Experiment, quiet: bool = False, log: Log = print) -> ImageCacheDataset:
    """Build (or resume) the packed cache of every training image and make the dataset folder of it."""
    data = exp.config.data
    table = exp.fmt.read_train()
    policy = replace(CachePolicy.from_data(data), kind="packed")
    log(f"kernel cache: {len(table):,} training images, {data.resize} at {data.source_size} px, {data.cache_format}")
    images, _ = decode_table(
        table.paths,
        data.image_size,
        exp.cache_dir,
        data.skip_unreadable,
        quiet,
        log,
        "train images",
        data.max_pixels,
        policy,
    )
    folder = image_cache_folder(exp)
    export_prebuilt(images.folder, folder, table.paths, data.root)
    names = kaggle_names(exp, pushing=False)
    write_dataset_metadata(folder, names.ref(folder.name), _title(exp), exp.config.kaggle.dataset_license)
    try:
        sums = seal(folder)
    except PipelineError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    built = _dataset(folder, names.ref(folder.name), sums, images.codec, len(table))
    log(
        f"image-cache dataset {built.ref}: {folder} ({built.count:,} images, {size_on_disk(folder) / 2**20:,.1f} MB "
        f"{built.codec}); `kernel train` attaches it from now on"
    )
    return built


def find_image_cache_dataset(exp: Experiment) -> ImageCacheDataset | None:
    """The built dataset folder for this config's data settings, its files summed now; None when there is none."""
    from src.artifacts import DATASET_METADATA
    from src.data.packed import PackedImages
    from src.data.prebuilt import SOURCE_FILE
    from src.kaggle.on_kaggle.install_wheels import file_sha256

    folder = image_cache_folder(exp)
    if not (folder / SOURCE_FILE).is_file() or not (folder / DATASET_METADATA).is_file():
        return None
    store = PackedImages(folder)
    sums = {path.name: file_sha256(path) for path in sorted(folder.iterdir()) if path.is_file()}
    names = kaggle_names(exp, pushing=False)
    return _dataset(folder, names.ref(folder.name), sums, store.codec, len(store))


def _dataset(folder: Path, ref: str, sums: dict[str, str], codec: str, count: int) -> ImageCacheDataset:
    from src.artifacts import DATASET_METADATA

    files = {name: digest for name, digest in sums.items() if name != DATASET_METADATA}
    return ImageCacheDataset(folder, ref, files, codec, count)


def push_image_cache_dataset(
    exp: Experiment, built: ImageCacheDataset, log: Log = print, wait_s: float = DATASET_WAIT_S
) -> None:
    """Upload the dataset (create or a new version) unless its last upload sent these very files; wait until ready."""
    ref = kaggle_names(exp).ref(built.folder.name)  # refuses without a Kaggle username
    if ref != built.ref:  # built before the username was known: its metadata names a placeholder owner
        write_dataset_metadata(built.folder, ref, _title(exp), exp.config.kaggle.dataset_license)
        built = replace(built, ref=ref)
    message = f"{built.count} training images, {built.codec}"
    upload_dataset(
        built.folder, ref, built.files, UPLOAD_KEY, PushRecord.read(built.record_path), built.record_path, message,
        wait_s, log,
    )  # fmt: skip


def _title(exp: Experiment) -> str:
    data = exp.config.data
    return f"{exp.config.competition[:30]} images {data.source_size}px {data.cache_format}"
