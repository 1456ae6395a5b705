"""The kernel's wheels dataset (src/kaggle/local/wheels_dataset.py, src/kaggle/on_kaggle/install_wheels.py): which
packages travel, wheels repacked exactly from this environment, and a kernel run on an interpreter with an OLDER version of
one of them installing the shipped wheel offline and still writing submit's bytes."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import tiny_config  # noqa: E402

from src.artifacts import Experiment  # noqa: E402
from src.config import load_config  # noqa: E402
from src.demo import build_demo  # noqa: E402
from src.errors import PipelineError  # noqa: E402
from src.kaggle.local import inference_kernel, offline_sandbox  # noqa: E402
from src.kaggle.local import wheels_dataset as wheels  # noqa: E402
from src.steps import submit, train  # noqa: E402

pytestmark = pytest.mark.slow  # whole stage chains and kernels (the inner loop leaves them out)

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"
OFFLINE_PIP = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INPUT": "1"}


def _wheel(name: str, version: str, modules: dict[str, str]) -> bytes:
    """A real pure-Python wheel of `modules` (archive path -> source) as distribution `name` `version`."""
    info = f"{name}-{version}.dist-info"
    files = {path: text.encode() for path, text in modules.items()}
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    return wheels.write_wheel(files, wheels.record_text(files))


def _pip_install(python: str, *args: str) -> None:
    subprocess.run(
        [python, "-m", "pip", "install", "--no-index", "--no-deps", "--disable-pip-version-check", "--quiet", *args],
        env=OFFLINE_PIP,
        check=True,
        capture_output=True,
    )


def test_the_kernel_packages_travel_and_the_big_compiled_stacks_stay():
    here = wheels.plan_wheels(REQUIREMENTS, "3.11")
    newer = wheels.plan_wheels(REQUIREMENTS, "3.12")

    assert {
        "timm",
        "albumentations",
        "albucore",
        "iterative-stratification",
        "pydantic",
        "pydantic-core",
        "pyyaml",
        "tqdm",
    } <= set(here.ship)
    assert {"torch", "torchvision", "numpy", "opencv-python-headless", "scipy", "scikit-learn"} <= set(here.left)
    assert here.ship["timm"].version == metadata.version("timm")
    # On another Python the compiled pydantic-core cannot go, so neither can pydantic, which pins it.
    assert "pydantic-core" in newer.left and "does not suit Kaggle's Python 3.12" in newer.left["pydantic-core"]
    assert newer.left["pydantic"] == "pins pydantic-core, which is not shipped"
    assert {"timm", "albumentations", "tqdm"} <= set(newer.ship)


def test_a_version_other_than_the_pin_is_refused(tmp_path):
    pinned = tmp_path / "requirements.txt"
    pinned.write_text("timm==0.0.1  # not what is installed\n")

    with pytest.raises(PipelineError, match=r"pins timm==0.0.1 but this environment has .*pip install -r"):
        wheels.plan_wheels(pinned, "3.11")


def test_a_repacked_wheel_installs_the_same_files_and_an_edited_install_is_refused(tmp_path):
    original = tmp_path / "tinypkg-1.2.0-py3-none-any.whl"
    original.write_bytes(_wheel("tinypkg", "1.2.0", {"tinypkg/__init__.py": "VALUE = 3\n"}))
    site = tmp_path / "site"
    _pip_install(sys.executable, "--target", str(site), str(original))
    [dist] = metadata.distributions(path=[str(site)])
    plan = wheels.WheelPlan({"tinypkg": dist}, {})

    [shipped] = wheels.build_wheels(plan, tmp_path / "out")

    assert shipped.file == original.name and (tmp_path / "out" / shipped.file).read_bytes() == original.read_bytes()
    (site / "tinypkg" / "__init__.py").write_text("VALUE = 4\n")
    with pytest.raises(PipelineError, match=r"tinypkg/__init__.py: differs from what pip installed for tinypkg 1.2.0"):
        wheels.build_wheels(plan, tmp_path / "again")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Experiment:
    """A tiny folder-format competition: one full fit of one epoch, its submission written (no thresholds)."""
    root = tmp_path_factory.mktemp("wheels")
    paths = build_demo("folder", root / "input" / "demo-folder", n_train=40, n_test=12)
    config_path = tiny_config(
        root, "folder", paths.root, name="tiny", extra={"train": {"epochs": 1}, "kaggle": {"username": "someone"}}
    )
    exp = Experiment(load_config(config_path), config_path)
    train.run(exp, "all", full=True, quiet=True, log=[].append)
    submit.run(exp, quiet=True, log=[].append)
    return exp


def _python_with_old_albucore(tmp_path: Path) -> str:
    """A venv over this environment's packages whose own site-packages holds an older albucore that
    refuses to be imported: a kernel that ran with it would fail."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    own = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(own, "parent-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # after its own site-packages
    old = tmp_path / "albucore-0.0.23-py3-none-any.whl"
    old.write_bytes(_wheel("albucore", "0.0.23", {"albucore/__init__.py": "raise ImportError('the old albucore')\n"}))
    _pip_install(python, str(old))
    return python


def test_the_kernel_installs_the_shipped_wheel_over_an_older_one_and_matches_submit(experiment, tmp_path):
    python = _python_with_old_albucore(tmp_path)
    build = inference_kernel.build_kernel(experiment, [].append)
    inputs = {experiment.config.competition: experiment.config.data.root, build.names.dataset_slug: build.dataset_dir}

    # Without the wheels dataset attached: one error line, nothing written.
    run = offline_sandbox.run_offline(build.script_path, inputs, python=python)
    assert run.returncode == 2 and run.files == {}
    assert "error: " in run.output and "wheels dataset someone/tiny-wheels is not attached" in run.output

    run = offline_sandbox.run_offline(
        build.script_path, {**inputs, build.names.wheels_slug: build.wheels_dir}, python=python
    )

    assert run.returncode == 0, run.output
    assert "installed from the wheels dataset (offline): albucore 0.0.24 (was 0.0.23)" in run.output
    assert run.network_blocked and not run.network_attempts
    expected = {name: (experiment.submission_dir / name).read_bytes() for name in experiment.fmt.submission_names()}
    assert run.files == expected


def test_a_kernel_on_matching_versions_installs_nothing(experiment):
    build = inference_kernel.build_kernel(experiment, [].append)
    with zipfile.ZipFile(build.wheels_dir / "albucore-0.0.24-py3-none-any.whl") as shipped:
        assert "albucore/__init__.py" in shipped.namelist()
    inputs = {experiment.config.competition: experiment.config.data.root, build.names.dataset_slug: build.dataset_dir}

    run = offline_sandbox.run_offline(build.script_path, inputs)  # no wheels dataset needed when nothing differs

    assert run.returncode == 0, run.output
    assert "installed from the wheels dataset" not in run.output
