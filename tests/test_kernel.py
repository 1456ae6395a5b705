"""The offline kernel (src/kaggle/local/: inference_kernel.py and its neighbours; src/steps/kernel.py,
src/steps/download.py): built, checked by running it offline, pushed through the REAL `kaggle` CLI to the fake server, and never carrying a secret."""

from __future__ import annotations

import json
import shutil
import socket
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_kaggle_server import FAKE_KEY, FAKE_TOKEN, FAKE_USER  # noqa: E402
from helpers import kaggle_demo_experiment  # noqa: E402

from src.artifacts import Experiment, LeaderboardRecord  # noqa: E402
from src.config import Config  # noqa: E402
from src.errors import PipelineError  # noqa: E402
from src.kaggle.local import cli, inference_kernel, kernel_script, offline_sandbox, parity, push  # noqa: E402
from src.kaggle.local.names import kaggle_names  # noqa: E402
from src.kaggle.on_kaggle.predict import find_dataset_dir, version_drift  # noqa: E402
from src.steps import download, oof, submit, thresholds, train  # noqa: E402
from src.steps import kernel as kernel_step  # noqa: E402

pytestmark = pytest.mark.slow  # whole stage chains and kernels (the inner loop leaves them out)

COMPETITION = "demo-imet"
KERNEL_REF = f"{FAKE_USER}/tiny-inference"
DATASET_REF = f"{FAKE_USER}/tiny-weights"
WHEELS_REF = f"{FAKE_USER}/tiny-wheels"
PLANTED_ENV = "planted-plain-env-value-7d1e"  # an ordinary variable: must not travel either
PLANTED_PASSWORD = "planted-db-password-5c2a9"  # a variable named like a secret
PLANTED_STORAGE = f"postgresql://tuner:{PLANTED_PASSWORD}@db.example/optuna"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Experiment:
    """A tiny iMet demo, trained for one epoch on 2 folds + a full fit, tuned and submitted."""
    exp = kaggle_demo_experiment(
        tmp_path_factory.mktemp("kernel"),
        COMPETITION,
        120,
        40,
        {
            "train": {"epochs": 1},
            "thresholds": {"optuna_trials": 3, "honest_folds": 2},
            "kaggle": {"username": FAKE_USER},
        },
    )
    quiet = [].append
    train.run(exp, "all", quiet=True, log=quiet)
    train.run(exp, "all", full=True, quiet=True, log=quiet)
    oof.run(exp, quiet=True, log=quiet)
    thresholds.run(exp, quiet=True, log=quiet)
    submit.run(exp, quiet=True, log=quiet)
    return exp


def _built_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- build --------------------------------------------------------------------------------------


def test_build_writes_metadata_one_script_and_a_flat_weights_dataset(trained):
    build = inference_kernel.build_kernel(trained, [].append)

    metadata = json.loads((build.kernel_dir / "kernel-metadata.json").read_text())
    assert metadata == {
        "id": KERNEL_REF,
        "title": "tiny inference",
        "code_file": "tiny-inference.py",
        "language": "python",
        "kernel_type": "script",
        "is_private": True,
        "enable_gpu": True,
        "enable_tpu": False,
        "machine_shape": "NvidiaTeslaT4",  # without it Kaggle gives a push the P100, which its torch cannot run
        "enable_internet": False,
        "dataset_sources": [DATASET_REF, WHEELS_REF],
        "competition_sources": [COMPETITION],
        "kernel_sources": [],
        "model_sources": [],
    }
    assert sorted(p.name for p in build.kernel_dir.glob("*.py")) == ["tiny-inference.py"]

    dataset = build.dataset_dir
    assert sorted(p.name for p in dataset.iterdir()) == [
        "config.yaml",
        "dataset-metadata.json",
        "model.pt",
        "thresholds.json",
    ]
    assert json.loads((dataset / "dataset-metadata.json").read_text()) == {
        "title": "tiny weights",
        "id": DATASET_REF,
        "licenses": [{"name": "CC0-1.0"}],
    }
    checkpoint = trained.run_dir(None) / "best.pt"
    assert (dataset / "model.pt").read_bytes() == checkpoint.read_bytes()
    payload = torch.load(dataset / "model.pt", map_location="cpu", weights_only=True)
    assert "model" in payload and not {"optimizer", "scheduler", "scaler", "rng"} & set(payload)
    assert (dataset / "thresholds.json").read_bytes() == trained.thresholds_path.read_bytes()
    config = yaml.safe_load((dataset / "config.yaml").read_text())
    assert config["data"]["root"] == f"/kaggle/input/{COMPETITION}" and config["data"]["solution"] == []
    assert config["model"]["weights"] is None and config["thresholds"]["storage"] is None
    assert str(trained.config.output_dir) not in (dataset / "config.yaml").read_text()
    Config.model_validate(config)

    wheels = build.wheels_dir  # flat, this environment's versions, named in the script with their sums
    assert json.loads((wheels / "dataset-metadata.json").read_text())["id"] == WHEELS_REF
    assert not [p for p in wheels.iterdir() if p.is_dir()]
    assert {"timm-1.0.31-py3-none-any.whl", "albumentations-2.0.8-py3-none-any.whl"} <= {
        p.name for p in wheels.iterdir()
    }
    assert not [p.name for p in wheels.iterdir() if p.name.startswith(("torch", "numpy", "opencv"))]
    script = build.script_path.read_text()
    assert f"'sha256': '{inference_kernel.file_sha256(wheels / 'timm-1.0.31-py3-none-any.whl')}'" in script
    compile(script, build.script_path.name, "exec")
    embedded = kernel_script.extract_archive(script)
    repo = Path(__file__).resolve().parents[1]
    for name in (
        "src/kaggle/on_kaggle/predict.py",
        "src/steps/submit.py",
        "src/formats/imet.py",
        "src/formats/__init__.py",
    ):
        assert embedded[f"code/{name}"] == (repo / name).read_bytes()
    assert "vendor/iterstrat/ml_stratifiers.py" in embedded
    assert not [name for name in embedded if "__pycache__" in name or name.endswith(".pyc")]

    # Same experiment, same bytes: a rebuild changes nothing.
    before = _built_files(build.kernel_dir)
    inference_kernel.build_kernel(trained, [].append)
    assert _built_files(build.kernel_dir) == before


def test_names_come_from_kaggle_json_and_the_title_must_match_the_slug(trained, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    (home / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "someone", "key": FAKE_KEY}))
    monkeypatch.setenv("HOME", str(home))
    for name in ("KAGGLE_USERNAME", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    config = trained.config.model_copy(deep=True)
    config.kaggle.username = None
    exp = Experiment(config, trained.config_path)

    names = kaggle_names(exp)

    assert (names.kernel_ref, names.dataset_ref, names.code_file) == (
        "someone/tiny-inference",
        "someone/tiny-weights",
        "tiny-inference.py",
    )
    config.kaggle.kernel_title = "My Great Kernel"
    with pytest.raises(PipelineError, match="URL slug 'my-great-kernel', not 'tiny-inference'"):
        kaggle_names(exp)


def test_a_build_needs_no_username_until_something_is_pushed(trained, tmp_path, monkeypatch):
    from src.kaggle.local.names import UNKNOWN_OWNER
    from src.steps import kernel as kernel_step

    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    for name in ("KAGGLE_USERNAME", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    config = trained.config.model_copy(deep=True)
    config.kaggle.username = None
    config.output_dir = tmp_path / "out"
    shutil.copytree(trained.output_dir / "oof", config.output_dir / "oof")
    exp = Experiment(config, trained.config_path)
    logs: list[str] = []
    built, _ = kernel_step.build(exp, check=False, log=logs.append)
    metadata = json.loads((exp.kernel_dir / "kernel-metadata.json").read_text())
    assert metadata["id"] == f"{UNKNOWN_OWNER}/tiny-inference"
    assert any("no Kaggle username" in line and "before `kernel push`" in line for line in logs)
    with pytest.raises(PipelineError, match="no Kaggle username"):
        kernel_step.push(exp, check=False, log=[].append)  # refused before anything is uploaded


# ---- parity -------------------------------------------------------------------------------------


def test_parity_passes_on_the_trained_demo(trained):
    logs: list[str] = []

    build, _ = kernel_step.build(trained, check=True, quiet=True, log=logs.append)

    record = json.loads((build.kernel_dir / "parity.json").read_text())
    assert record["passed"], record["detail"]
    assert record["detail"] == f"byte-identical to {trained.submission_dir / 'submission.csv'}"
    assert record["fingerprint"]["script"] == inference_kernel.file_sha256(build.script_path)
    kernel_log = (build.kernel_dir / "parity.log").read_text()
    assert f"kaggle/input/{COMPETITION}" in kernel_log and "kaggle/working/submission.csv" in kernel_log
    assert any(line.startswith("parity: passed") for line in logs)


def test_offline_run_blocks_the_network_and_hides_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_KEY", FAKE_KEY)
    monkeypatch.setenv("PLANTED_SETTING", PLANTED_ENV)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    script = tmp_path / "probe.py"
    script.write_text(f"""
import json, os, socket, urllib.request
tries = {{}}
for name, call in [("loopback", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2)),
                   ("raw", lambda: socket.socket().connect(("127.0.0.1", {port}))),
                   ("http", lambda: urllib.request.urlopen("http://example.com", timeout=2))]:
    try:
        call()
        tries[name] = "connected"
    except OSError as error:
        tries[name] = type(error).__name__
open("probe.json", "w").write(json.dumps({{"tries": tries, "env": dict(os.environ),
                                           "home": os.listdir(os.environ["HOME"])}}))
""")
    try:
        run = offline_sandbox.run_offline(script, {"comp": tmp_path}, timeout_s=60)
    finally:
        listener.close()

    assert run.returncode == 0, run.output
    assert run.network_blocked and list(run.files) == ["probe.json"]
    probe = json.loads(run.files["probe.json"])
    assert "connected" not in probe["tries"].values()
    assert f"connect ('127.0.0.1', {port})" in run.network_attempts and len(run.network_attempts) >= 3
    assert not [
        name
        for name in probe["env"]
        if name.startswith("KAGGLE_") and name not in ("KAGGLE_INPUT_ROOT", "KAGGLE_WORKING_ROOT")
    ]
    assert FAKE_KEY not in json.dumps(probe) and PLANTED_ENV not in json.dumps(probe)
    assert probe["home"] == []


def test_kernel_refuses_weights_it_was_not_built_with(tmp_path):
    folder = tmp_path / "input" / "tiny-weights"
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"older weights")
    nested = tmp_path / "input" / "datasets" / FAKE_USER / "other"
    nested.mkdir(parents=True)
    (nested / "model.pt").write_bytes(b"the weights")
    good = {"model.pt": inference_kernel.file_sha256(nested / "model.pt")}

    assert find_dataset_dir(tmp_path / "input", DATASET_REF, good) == nested  # found where Kaggle nests it
    (nested / "model.pt").write_bytes(b"newer weights")
    with pytest.raises(PipelineError, match="not the one this kernel was built with.*model.pt differ"):
        find_dataset_dir(tmp_path / "input", DATASET_REF, good)
    assert version_drift({"torch": "0.0.1"}, "2.7.0")[0].startswith("Python ")


# ---- push and follow through the real CLI -------------------------------------------------------


def test_push_sends_exactly_what_was_built(trained, fake_kaggle, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", FAKE_TOKEN)  # planted: nothing may carry it
    (trained.kernel_dir / "push.json").unlink(missing_ok=True)  # a fresh fake Kaggle has no dataset yet
    logs: list[str] = []

    build = kernel_step.push(trained, quiet=True, log=logs.append)

    [dataset] = [fake_kaggle.datasets[DATASET_REF]]
    on_disk = {p.name: p.read_bytes() for p in build.dataset_dir.iterdir() if p.name != "dataset-metadata.json"}
    assert dataset.files == on_disk and dataset.title == "tiny weights"
    [pushed] = fake_kaggle.rpc_bodies("SaveKernel")
    assert pushed["text"] == build.script_path.read_text()
    assert pushed["slug"] == KERNEL_REF and pushed["newTitle"] == "tiny inference"
    assert pushed["enableInternet"] is False and pushed["isPrivate"] is True and pushed["enableGpu"] is True
    assert pushed["machineShape"] == "NvidiaTeslaT4" and "sessionTimeoutSeconds" not in pushed
    assert pushed["datasetDataSources"] == [DATASET_REF, WHEELS_REF] and pushed["competitionDataSources"] == [
        COMPETITION
    ]
    wheels = {p.name: p.read_bytes() for p in build.wheels_dir.iterdir() if p.name != "dataset-metadata.json"}
    assert fake_kaggle.datasets[WHEELS_REF].files == wheels and "timm-1.0.31-py3-none-any.whl" in wheels
    assert (pushed["language"], pushed["kernelType"]) == ("python", "script")
    assert f"kernel pushed: http://localhost/code/{KERNEL_REF} (version 1)" in "\n".join(logs)
    sent = [
        pushed["text"].encode(),
        *fake_kaggle.uploads.values(),
        *kernel_script.extract_archive(pushed["text"]).values(),
        "\n".join(logs).encode(),
    ]
    assert not [blob for blob in sent for secret in (FAKE_KEY, FAKE_TOKEN) if secret.encode() in blob]

    # Same weights again: only the kernel gets a new version.
    kernel_step.push(trained, quiet=True, log=logs.append)
    assert len(fake_kaggle.rpc_bodies("CreateDataset")) == 2 and not fake_kaggle.rpc_bodies("CreateDatasetVersion")
    assert len(fake_kaggle.rpc_bodies("SaveKernel")) == 2
    # kaggle.session_timeout_s reaches Kaggle as the CLI's -t
    cli.push_kernel_with_version(build.kernel_dir, timeout_s=3600)
    assert fake_kaggle.rpc_bodies("SaveKernel")[2]["sessionTimeoutSeconds"] == 3600
    assert json.loads((build.kernel_dir / "push.json").read_text())["version"] == 2


def test_status_output_and_code_submission(trained, fake_kaggle):
    logs: list[str] = []
    (trained.kernel_dir / "push.json").unlink(missing_ok=True)
    kernel_step.push(trained, check=False, log=logs.append)
    submission = (trained.submission_dir / "submission.csv").read_bytes()
    fake_kaggle.kernel_status[KERNEL_REF] = ("RUNNING", None)

    with pytest.raises(PipelineError, match="is running, not complete"):
        kernel_step.submit(trained, log=logs.append)

    fake_kaggle.kernel_status[KERNEL_REF] = ("COMPLETE", None)
    # A listing with files the inference kernel never writes: they are named and not kept.
    fake_kaggle.kernel_outputs[KERNEL_REF] = {"submission.csv": submission, "UNLISTED.bin": b"x", "sub/x.py": b"1"}
    kernel_step.status(trained, log=logs.append)
    kernel_step.output(trained, log=logs.append)
    kernel_step.submit(trained, log=logs.append)
    assert "not kept (not an output of the inference kernel): UNLISTED.bin, sub/x.py" in logs
    assert sorted(p.name for p in (trained.kernel_dir / "output").rglob("*")) == [
        "submission.csv",
        "tiny-inference.log",
    ]

    assert f"kernel {KERNEL_REF}: complete" in logs
    assert (trained.kernel_dir / "output" / "submission.csv").read_bytes() == submission
    assert any(line.startswith("validated against the competition's format") for line in logs)
    [code_submission] = fake_kaggle.rpc_bodies("CreateCodeSubmission")
    assert code_submission["kernelOwner"] == FAKE_USER and code_submission["kernelSlug"] == "tiny-inference"
    assert code_submission["kernelVersion"] == 1 and code_submission["fileName"] == "submission.csv"
    [scored] = LeaderboardRecord.read(trained.kaggle_scores_path).submissions  # the code submission's score
    assert (scored.competition, scored.status, scored.public_score, scored.ref) == (COMPETITION, "complete", 0.5, 1000)

    # A failed run, or a partial download, never replaces the output a complete run left, nor looks like a new one.
    fake_kaggle.fail_run(KERNEL_REF, "CUDA out of memory")  # its listing still shows the previous run's output
    fake_kaggle.kernel_logs[KERNEL_REF] = "loading the model\nRuntimeError: CUDA out of memory. Tried 2 GiB\n"
    with pytest.raises(PipelineError) as failed:
        kernel_step.output(trained, log=logs.append)
    log_file = trained.kernel_dir / "logs" / "tiny-inference.log"
    assert str(failed.value) == (
        f"kernel {KERNEL_REF} ended error: RuntimeError: CUDA out of memory. Tried 2 GiB; no output fetched "
        f"(kernels/{trained.name}/output/ is as it was); its log is {log_file}"
    )
    assert "loading the model" in log_file.read_text()  # the log instead of an output
    assert (trained.kernel_dir / "output" / "submission.csv").read_bytes() == submission
    fake_kaggle.kernel_status[KERNEL_REF] = ("COMPLETE", None)
    fake_kaggle.kernel_outputs[KERNEL_REF] = {"submission.csv": submission[: len(submission) // 2]}  # cut off
    with pytest.raises(PipelineError, match="the download stays in") as raised:
        kernel_step.output(trained, log=logs.append)
    assert (trained.kernel_dir / "output" / "submission.csv").read_bytes() == submission
    kept = Path(str(raised.value).rsplit("the download stays in ", 1)[1].removesuffix(" for a look"))
    assert (kept / "submission.csv").read_bytes() == submission[: len(submission) // 2]  # kept for a look


def test_download_unzips_into_input_slug(fake_kaggle, tmp_path):
    files = {"train.csv": b"id,attribute_ids\na,1\n", "test/a.png": b"\x89PNG fake"}
    fake_kaggle.competition_files[COMPETITION] = files

    written = download.fetch(COMPETITION, tmp_path / "input", log=[].append)

    dest = tmp_path / "input" / COMPETITION
    assert sorted(p.relative_to(dest).as_posix() for p in written) == sorted(files)
    assert {name: (dest / name).read_bytes() for name in files} == files


# ---- no secret leaves ---------------------------------------------------------------------------


def test_no_secret_reaches_any_built_file_or_log(trained, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    json_key = "JSONKEY-planted-0000-ffff-DO-NOT-LEAK"
    (home / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": FAKE_USER, "key": json_key}))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_KEY", FAKE_KEY)
    monkeypatch.setenv("KAGGLE_API_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("DATABASE_PASSWORD", PLANTED_PASSWORD)
    monkeypatch.setenv("PLANTED_SETTING", PLANTED_ENV)
    config = trained.config.model_copy(deep=True)
    config.thresholds.storage = PLANTED_STORAGE
    exp = Experiment(config, trained.config_path)
    logs: list[str] = []

    build, _ = kernel_step.build(exp, check=False, log=logs.append)

    planted = [FAKE_KEY, FAKE_TOKEN, json_key, PLANTED_PASSWORD, PLANTED_ENV]
    blobs = _built_files(build.kernel_dir)
    blobs.update({f"embedded {k}": v for k, v in kernel_script.extract_archive(build.script_path.read_text()).items()})
    blobs["log"] = "\n".join(logs).encode()
    assert len(blobs) > 50
    assert not [(name, s) for name, data in blobs.items() for s in planted if s.encode() in data]

    # A credential the builder cannot rewrite away (here pasted into the config) stops the build.
    config.submit.message = f"key {FAKE_KEY}"
    with pytest.raises(
        PipelineError, match="refusing to build the kernel: dataset/config.yaml holds a Kaggle credential"
    ):
        inference_kernel.build_kernel(exp, logs.append)
    assert not [p for p in build.kernel_dir.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()]
    assert not list(build.kernel_dir.parent.glob(".*build-*"))


# ---- refusals -----------------------------------------------------------------------------------


def test_push_refuses_a_kernel_changed_after_its_check(trained, fake_kaggle):
    build = inference_kernel.build_kernel(trained, [].append)
    passed = parity.ParityResult(True, "pretend", inference_kernel.file_sha256(build.script_path))
    with build.script_path.open("a") as script:
        script.write("\n# edited by hand\n")

    with pytest.raises(PipelineError, match="changed after it was built and checked: not pushing"):
        push.push(trained, build, passed, [].append)
    assert fake_kaggle.requests == []


def test_tampered_kernel_fails_parity_and_is_not_pushed(trained, fake_kaggle, monkeypatch):
    render = inference_kernel.render_script
    tamper = """
import socket as _socket
try:  # a kernel that phones home and then edits its own answer
    _socket.create_connection(("www.kaggle.com", 443), timeout=2)
except OSError:
    pass
_path = os.path.join(os.environ.get("KAGGLE_WORKING_ROOT", "/kaggle/working"), "submission.csv")
_lines = open(_path).read().split("\\n")
_lines[1] = _lines[1].split(",")[0] + ",0 1 2 3 4 5 6 7 8 9 10 11"
open(_path, "w").write("\\n".join(_lines))
"""
    monkeypatch.setattr(inference_kernel, "render_script", lambda settings, archive: render(settings, archive) + tamper)

    with pytest.raises(PipelineError) as refused:
        kernel_step.push(trained, quiet=True, log=[].append)

    message = str(refused.value)
    assert message.startswith("parity check failed (nothing pushed): ")
    assert "tried to reach the network (resolve 'www.kaggle.com')" in message
    assert "the kernel's submission.csv differs from" in message and "line 2: kernel" in message
    assert fake_kaggle.requests == []
    assert not json.loads((trained.kernel_dir / "parity.json").read_text())["passed"]


def test_an_accelerator_kaggle_cannot_use_is_refused_before_anything_is_built_or_uploaded(trained, fake_kaggle):
    before = (trained.kernel_dir / "kernel-metadata.json").read_bytes()
    with pytest.raises(PipelineError) as error:
        kernel_step.push(trained, accelerator="NvidiaTeslaP100", log=[].append)
    assert str(error.value).startswith("--accelerator NvidiaTeslaP100: the P100 (sm_60) has no kernels")
    assert not fake_kaggle.rpc_bodies("SaveKernel") and not fake_kaggle.rpc_bodies("CreateDataset")
    assert (trained.kernel_dir / "kernel-metadata.json").read_bytes() == before
    assert trained.config.kaggle.accelerator == "NvidiaTeslaT4"
