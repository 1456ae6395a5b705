"""The wheels dataset: this environment's exact versions of the packages the kernel imports, as wheel files.

Kaggle's image has its own versions of timm, albumentations, pydantic, ...; a kernel that ran on them
would not run the code the local parity check ran. So `kernel build` repacks the installed copies of
those packages (their files exactly as the RECORD pip wrote lists and hashes them) into wheels, in
a flat folder that becomes a Kaggle dataset; the kernel installs the ones whose version differs,
offline, before it imports anything of this project (src/kaggle/on_kaggle/install_wheels.py).

Which packages: the kernel's own imports pinned in requirements.txt (KERNEL_REQUIREMENTS) and,
following their requirements, every package they need, except LEFT_TO_IMAGE: the large compiled
stacks Kaggle's image provides and builds for its own CUDA and numpy ABI. A compiled wheel is
shipped only when its tags suit Kaggle's Python (`kaggle.python_version`) on x86_64 Linux; a package
pinning one that is not shipped (pydantic pins pydantic-core exactly) is not shipped either.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from src.errors import PipelineError

# What the kernel imports (requirements.txt names); their requirements follow.
KERNEL_REQUIREMENTS = ("timm", "albumentations", "iterative-stratification", "pydantic", "pyyaml", "tqdm")
# Left to Kaggle's image: huge and CUDA-specific (torch, torchvision), tied to numpy's ABI (numpy, opencv,
# scipy, scikit-learn, pandas, pillow, albucore's stringzilla/simsimd), or only for hub downloads, which
# are off in a kernel (huggingface-hub and its network stack, safetensors).
LEFT_TO_IMAGE = (
    "torch",
    "torchvision",
    "numpy",
    "opencv-python",
    "opencv-python-headless",
    "opencv-contrib-python",
    "scipy",
    "scikit-learn",
    "pandas",
    "pillow",
    "stringzilla",
    "simsimd",
    "huggingface-hub",
    "safetensors",
)
_NOT_IN_WHEEL = ("INSTALLER", "REQUESTED", "direct_url.json", "RECORD")  # pip writes these at install time
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed: the same files give the same wheel bytes


@dataclass(frozen=True)
class ShippedWheel:
    """One wheel of the dataset: the distribution, its version, the file name and the file's sha256."""

    name: str
    version: str
    file: str
    sha256: str


@dataclass(frozen=True)
class WheelPlan:
    """What the dataset holds (`ship`: distribution -> its metadata) and what is left to Kaggle's image, and why."""

    ship: dict[str, metadata.Distribution]
    left: dict[str, str]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_pins(path: Path) -> dict[str, str]:
    """`name==version` lines of a requirements file, by canonical name."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        found = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)", line)
        if found:
            pins[canonical(found.group(1))] = found.group(2)
    return pins


def plan_wheels(requirements: Path, python_version: str) -> WheelPlan:
    """The distributions to ship for a kernel on Kaggle's Python `python_version` ('3.11'), with this
    environment's versions, checked against the pins in `requirements`."""
    pins = requirement_pins(requirements)
    found: dict[str, metadata.Distribution] = {}
    left: dict[str, str] = {}
    exact: dict[str, set[str]] = {}  # distribution -> those it pins with ==
    todo = list(KERNEL_REQUIREMENTS)
    while todo:
        name = canonical(todo.pop(0))
        if name in found or name in left:
            continue
        if name in LEFT_TO_IMAGE:
            left[name] = "left to Kaggle's image"
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise PipelineError(
                f"{requirements}: the kernel needs {name}, which is not installed here: "
                f"pip install -r {requirements}, then build the kernel again"
            ) from None
        if name in pins and dist.version != pins[name]:
            raise PipelineError(
                f"{requirements}: pins {name}=={pins[name]} but this environment has {dist.version}: "
                f"pip install -r {requirements}, then build the kernel again"
            )
        reason = _unsuitable(dist, python_version)
        if reason:
            left[name] = reason
            continue
        found[name] = dist
        for requirement in _requirements(dist, python_version):
            todo.append(requirement.name)
            if any(spec.operator == "==" for spec in requirement.specifier):
                exact.setdefault(name, set()).add(canonical(requirement.name))
    return WheelPlan(*_drop_broken_pins(found, left, exact))


def build_wheels(plan: WheelPlan, dest: Path, reuse_from: Path | None = None) -> list[ShippedWheel]:
    """Write one wheel per shipped distribution into `dest`; an identical wheel already in `reuse_from`
    (the last build) is copied instead of compressed again."""
    dest.mkdir(parents=True, exist_ok=True)
    shipped = []
    for name, dist in sorted(plan.ship.items()):
        files, record = installed_files(dist)
        file_name = wheel_name(dist)
        previous = reuse_from / file_name if reuse_from is not None else None
        if previous is not None and previous.is_file() and _record_of(previous) == record:
            data = previous.read_bytes()
        else:
            data = write_wheel(files, record)
        (dest / file_name).write_bytes(data)
        shipped.append(ShippedWheel(name, dist.version, file_name, hashlib.sha256(data).hexdigest()))
    return shipped


def wheel_name(dist: metadata.Distribution) -> str:
    """`<name>-<version>-<tags>.whl`, the tags being the WHEEL file's (pip checks them against the machine)."""
    tags = _tags(dist)
    parts = [sorted({tag.split("-")[i] for tag in tags}) for i in range(3)]
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    return f"{name}-{dist.version}-{'-'.join('.'.join(part) for part in parts)}.whl"


def installed_files(dist: metadata.Distribution) -> tuple[dict[str, bytes], str]:
    """(the wheel's files by archive path, its RECORD text) from an installed distribution, each file
    checked against the hash pip recorded at install time (an edited install is not the pinned release)."""
    root = Path(dist.locate_file(""))
    info_dir = next((str(f).split("/")[0] for f in dist.files or [] if str(f).split("/")[0].endswith(".dist-info")), "")
    files = {}
    for entry in dist.files or []:
        relative = str(entry)
        if (
            relative.startswith("..")
            or "__pycache__" in relative
            or relative.endswith(".pyc")
            or relative in {f"{info_dir}/{name}" for name in _NOT_IN_WHEEL}
        ):
            continue
        data = (root / relative).read_bytes()
        if entry.hash is not None and _digest(data, entry.hash.mode) != entry.hash.value:
            raise PipelineError(
                f"{root / relative}: differs from what pip installed for {dist.metadata['Name']} "
                f"{dist.version}: reinstall it (pip install --force-reinstall --no-deps "
                f"{dist.metadata['Name']}=={dist.version}), then build the kernel again"
            )
        files[relative] = data
    return files, record_text(files)


def record_text(files: dict[str, bytes]) -> str:
    """A wheel's RECORD for `files` (archive path -> bytes): path, sha256 and size of each, then itself."""
    info_dir = next(name.split("/")[0] for name in files if name.split("/")[0].endswith(".dist-info"))
    rows = [[name, f"sha256={_digest(data, 'sha256')}", str(len(data))] for name, data in files.items()]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(sorted(rows) + [[f"{info_dir}/RECORD", "", ""]])
    return buffer.getvalue()


def write_wheel(files: dict[str, bytes], record: str) -> bytes:
    """A wheel (zip) of `files` plus its RECORD, the same bytes for the same input."""
    info_dir = next(name.split("/")[0] for name in files if name.split("/")[0].endswith(".dist-info"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as wheel:
        for name, data in sorted({**files, f"{info_dir}/RECORD": record.encode()}.items()):
            info = zipfile.ZipInfo(name, _ZIP_TIME)
            info.external_attr, info.compress_type = 0o644 << 16, zipfile.ZIP_DEFLATED
            wheel.writestr(info, data)
    return buffer.getvalue()


def describe(plan: WheelPlan) -> str:
    """One line: what is shipped and what is left to Kaggle's image (and why)."""
    shipped = ", ".join(f"{name} {dist.version}" for name, dist in sorted(plan.ship.items()))
    left = "; ".join(f"{name}: {why}" for name, why in sorted(plan.left.items()) if why != "left to Kaggle's image")
    return f"wheels: {shipped}" + (f" (not shipped: {left})" if left else "")


def _requirements(dist: metadata.Distribution, python_version: str) -> list:
    """The distribution's requirements that apply on Kaggle (Linux, `python_version`, no extras)."""
    from packaging.requirements import Requirement

    environment = {
        "python_version": python_version,
        "python_full_version": f"{python_version}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": "x86_64",
        "implementation_name": "cpython",
        "extra": "",
    }
    found = [Requirement(text) for text in dist.requires or []]
    return [req for req in found if req.marker is None or req.marker.evaluate(environment)]


def _unsuitable(dist: metadata.Distribution, python_version: str) -> str:
    """Why this distribution's wheel cannot be installed on Kaggle's Python on x86_64 Linux ('' when it can)."""
    tags = _tags(dist)
    if not tags:
        return "installed without wheel tags (from source?): its wheel's tags are unknown"
    major, minor = (int(part) for part in python_version.split(".")[:2])
    for tag in tags:
        interpreter, abi, platform = tag.split("-")
        python_ok = (
            interpreter in (f"py{major}", f"py{major}{minor}", f"cp{major}{minor}")
            or abi == "abi3"
            and interpreter.startswith(f"cp{major}")
            and int(interpreter[3:] or 0) <= minor
        )
        platform_ok = platform == "any" or re.fullmatch(r"manylinux(1|2010|2014|_2_\d+)_x86_64", platform)
        if python_ok and platform_ok:
            return ""
    return f"its wheel ({', '.join(tags)}) does not suit Kaggle's Python {python_version} on x86_64 Linux"


def _drop_broken_pins(found: dict, left: dict, exact: dict[str, set[str]]) -> tuple[dict, dict]:
    """Leave out every package that pins (==) one not shipped: installing it alone would break its import."""
    changed = True
    while changed:
        changed = False
        for name in sorted(found):
            missing = sorted(pin for pin in exact.get(name, ()) if pin not in found)
            if missing:
                del found[name]
                left[name] = f"pins {', '.join(missing)}, which is not shipped"
                changed = True
    return found, left


def _tags(dist: metadata.Distribution) -> list[str]:
    wheel = dist.read_text("WHEEL") or ""
    return [line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")]


def _record_of(wheel: Path) -> str | None:
    try:
        with zipfile.ZipFile(wheel) as archive:
            name = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
            return archive.read(name).decode("utf-8")
    except (OSError, zipfile.BadZipFile, StopIteration, UnicodeDecodeError):
        return None


def _digest(data: bytes, mode: str) -> str:
    return base64.urlsafe_b64encode(hashlib.new(mode, data).digest()).rstrip(b"=").decode("ascii")
