"""The one script a kernel is: the template filled with its settings and the embedded `src` archive.

The archive is a reproducible gzipped tar (fixed order, times and modes) of the `src` package, the vendored
pure-Python packages and any extra files, base64-encoded into the script, so each kernel version records
exactly the code that ran. `extract_archive` reads it back for inspection and the secret scan.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import io
import platform
import pprint
import re
import tarfile
from pathlib import Path

from src.errors import PipelineError
from src.kaggle.on_kaggle.predict import package_versions
from src.tracked import refuse_untracked

TEMPLATE = Path(__file__).resolve().parents[1] / "on_kaggle" / "script_template.py"
_SETTINGS_LINE = "SETTINGS = {}  # filled in by the builder"
_ARCHIVE_LINE = 'ARCHIVE = ""  # filled in by the builder'
# Modules whose versions the kernel compares with the ones the local check ran on.
CHECKED_MODULES = ("torch", "timm", "albumentations", "numpy", "cv2", "PIL", "pydantic", "yaml", "pandas", "sklearn")
# Pure-Python packages `src` imports that Kaggle's image may lack (iterstrat: imported by folds).
_VENDORED = ("iterstrat",)


def script_settings(archive: bytes) -> dict:
    """What every kernel script carries about its own build: the archive's sum, Python and package versions."""
    return {
        "archive_sha256": hashlib.sha256(archive).hexdigest(),
        "python": platform.python_version(),
        "versions": package_versions(CHECKED_MODULES),
    }


def render_script(settings: dict, archive: bytes) -> str:
    """The kernel script: the template with the settings and the base64 archive filled in."""
    template = TEMPLATE.read_text(encoding="utf-8")
    encoded = base64.b64encode(archive).decode("ascii")
    wrapped = "\n".join(encoded[i : i + 120] for i in range(0, len(encoded), 120))
    script = _replace_once(
        template, _SETTINGS_LINE, "SETTINGS = " + pprint.pformat(settings, width=110, sort_dicts=True)
    )
    return _replace_once(script, _ARCHIVE_LINE, f'ARCHIVE = """\n{wrapped}\n"""')


def code_archive(extra: dict[str, bytes] | None = None) -> bytes:
    """A reproducible gzipped tar of the `src` package (under code/), the vendored packages (under vendor/)
    and `extra` files (archive path -> bytes; the training kernel's config and folds file)."""
    import src

    members: dict[str, bytes] = dict(extra or {})
    refuse_untracked(Path(src.__file__).parent)  # the code that ships is what git tracks
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
        if (
            not path.is_file()
            or path.suffix == ".pyc"
            or any(part == "__pycache__" or part.startswith(".") for part in relative.parts)
        ):
            continue
        files[f"{prefix}/{relative.as_posix()}"] = path.read_bytes()
    return files


def _replace_once(text: str, line: str, replacement: str) -> str:
    if text.count(line) != 1:
        raise PipelineError(f"{TEMPLATE}: expected the line {line!r} exactly once: restore the template")
    return text.replace(line, replacement)
