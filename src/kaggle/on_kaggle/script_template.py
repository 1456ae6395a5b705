"""A Kaggle kernel built by `python -m src.stage kernel build` (or `kernel train`): rebuild it, do not edit it.

This script carries the project's own `src` package (a gzipped tar, base64-encoded, in ARCHIVE), so
the kernel runs exactly the code that was checked locally. First it installs, offline, the wheels of
the attached wheels dataset whose version differs from this machine's (the exact versions the local
check ran with). An inference kernel then loads the ONE model from the attached weights dataset,
predicts the competition's test images with the tuned thresholds and writes the submission into the
working folder through the format's writer and validator, as `python -m src.stage submit` does; a
training kernel runs the `train` stage on the attached competition data and writes the run folders
(oof/<exp>/fold-K/) and kaggle-run.json into the working folder. It needs no internet. To run it
elsewhere, point KAGGLE_INPUT_ROOT (default /kaggle/input) and KAGGLE_WORKING_ROOT (default
/kaggle/working) at stand-in folders.
"""

import base64
import hashlib
import importlib
import importlib.util
import io
import os
import sys
import tarfile
import tempfile

# Set before anything is imported: no library may try the (absent) network.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "TIMM_DISABLE_DOWNLOAD": "1",
}

SETTINGS = {}  # filled in by the builder

ARCHIVE = ""  # filled in by the builder


def unpack(archive_b64, expected_sha256, dest):
    """Decode and check the embedded archive, then extract it into `dest`."""
    data = base64.b64decode(archive_b64)
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise SystemExit(
            "error: the embedded code archive is damaged (checksum mismatch): rebuild the kernel "
            "with `python -m src.stage kernel build` and push it again"
        )
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        try:
            archive.extractall(dest, filter="data")
        except TypeError:  # Python without extraction filters; the archive is our own
            archive.extractall(dest)


def install_wheels(code_dir, input_root):
    """Install the shipped wheels whose version differs from this machine's, before anything imports them;
    return 0, or 2 after printing one error line."""
    path = os.path.join(code_dir, "code", "src", "kaggle", "on_kaggle", "install_wheels.py")
    spec = importlib.util.spec_from_file_location("install_wheels", path)
    wheels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wheels)  # from its file: the `src` package is not imported yet
    try:
        wheels.install_wheels(SETTINGS.get("wheels", {}), input_root, lambda line: print(line, flush=True))
    except wheels.AttachedError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


def main():
    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
    sys.dont_write_bytecode = True
    input_root = os.environ.get("KAGGLE_INPUT_ROOT", "/kaggle/input")
    working_root = os.environ.get("KAGGLE_WORKING_ROOT", "/kaggle/working")
    with tempfile.TemporaryDirectory(prefix="kernel-code-") as code_dir:
        unpack(ARCHIVE, SETTINGS["archive_sha256"], code_dir)
        if install_wheels(code_dir, input_root):
            return 2
        sys.path.insert(0, os.path.join(code_dir, "code"))
        # Pure-Python dependencies Kaggle's image may lack: used only where it has none of its own.
        sys.path.append(os.path.join(code_dir, "vendor"))
        if SETTINGS.get("kind") == "training":
            return train(code_dir, input_root, working_root)
        from src.kaggle.on_kaggle.predict import run_kernel

        return run_kernel(SETTINGS, input_root, working_root, code_dir)


def train(code_dir, input_root, working_root):
    """A training kernel: the `train` stage's own run function on Kaggle's copy of the data."""
    from src.kaggle.on_kaggle.train import run_training

    stage, oof_stage = (_function(SETTINGS[key]) if SETTINGS.get(key) else None for key in ("stage", "oof_stage"))
    return run_training(SETTINGS, input_root, working_root, code_dir, stage, oof_stage)


def _function(where):
    """The function "module:name" names (a stage's run function, handed to the core, which never imports one)."""
    module, _, name = where.partition(":")
    return getattr(importlib.import_module(module), name)


if __name__ == "__main__":
    status = main()
    if status:  # a clean run ends without SystemExit (some runners report any SystemExit as a failure)
        sys.exit(status)
