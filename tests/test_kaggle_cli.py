"""src/kaggle/local/cli.py driving the REAL `kaggle` CLI against the local fake server in fake_kaggle_server.py."""

from __future__ import annotations

import io
import json
import socket
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_kaggle_server import FAKE_KEY, FAKE_TOKEN, FAKE_USER  # noqa: E402
from fake_kaggle_server import use_env as _use_env  # noqa: E402

from src.errors import PipelineError  # noqa: E402
from src.kaggle.local import cli  # noqa: E402

SLUG = "imet-2019-fgvc6"
KERNEL = f"{FAKE_USER}/imet-inference"
DATASET = f"{FAKE_USER}/imet-weights"


def _error(call, *args) -> str:
    """The message of the PipelineError `call(*args)` raises, checked to be one credential-free line."""
    with pytest.raises(PipelineError) as raised:
        call(*args)
    message = str(raised.value)
    assert "\n" not in message and message.strip() == message
    assert FAKE_KEY not in message and FAKE_TOKEN not in message
    return message


def _write_kernel(folder: Path) -> dict:
    folder.mkdir()
    (folder / "inference.py").write_text("import torch\nprint('predict')  # é\n", encoding="utf-8")
    metadata = {
        "id": KERNEL,
        "title": "imet inference",
        "code_file": "inference.py",
        "language": "python",
        "kernel_type": "script",
        "is_private": True,
        "enable_gpu": True,
        "enable_internet": False,
        "dataset_sources": [DATASET],
        "competition_sources": [SLUG],
        "kernel_sources": [],
    }
    (folder / "kernel-metadata.json").write_text(json.dumps(metadata))
    return metadata


def _write_dataset(folder: Path) -> None:
    folder.mkdir()
    (folder / "fold0.pt").write_bytes(bytes(range(256)) * 3)
    (folder / "config.yaml").write_text("backbone: resnet18\n")
    (folder / "dataset-metadata.json").write_text(
        json.dumps({"id": DATASET, "title": "imet weights", "licenses": [{"name": "CC0-1.0"}]})
    )


# ---- happy paths --------------------------------------------------------------------------------


def test_download_unzips_into_dest_and_removes_the_zip(fake_kaggle, tmp_path):
    files = {"train.csv": b"id,attribute_ids\na,1 2\n", "train/a.png": b"\x89PNG fake", "labels.csv": b"x\n"}
    fake_kaggle.competition_files[SLUG] = files
    dest = tmp_path / "input"

    written = cli.download_competition(SLUG, dest)

    assert sorted(p.relative_to(dest).as_posix() for p in written) == sorted(files)
    for name, data in files.items():
        assert (dest / name).read_bytes() == data
    assert sorted(p.name for p in dest.iterdir()) == ["labels.csv", "train", "train.csv"]  # no zip, no staging


def test_download_refuses_a_zip_member_escaping_dest(fake_kaggle, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok.csv", "fine")
        archive.writestr("../escaped.txt", "evil")
    fake_kaggle.competition_zips[SLUG] = buffer.getvalue()
    dest = tmp_path / "input"

    message = _error(cli.download_competition, SLUG, dest)

    assert "'../escaped.txt'" in message and "refusing" in message
    assert not (tmp_path / "escaped.txt").exists() and not (dest / "ok.csv").exists()
    [kept] = list(dest.iterdir())  # the staging folder, kept for a look and named in the message
    assert f"the download stays in {kept} for a look" in message and (kept / "fetched" / f"{SLUG}.zip").is_file()


def test_submit_file_uploads_the_exact_bytes(fake_kaggle, tmp_path):
    fake_kaggle.competition_files[SLUG] = {"train.csv": b""}
    submission = tmp_path / "submission.csv"
    submission.write_bytes(b"id,attribute_ids\n10023b2cc4ed5f68,13 51 813\n")

    reply = cli.submit_file(SLUG, submission, "-fold0 tta")  # a message that looks like a flag

    assert reply == f"Successfully submitted to {SLUG}"
    [start] = fake_kaggle.rpc_bodies("StartSubmissionUpload")
    [submitted] = fake_kaggle.rpc_bodies("CreateSubmission")
    assert start["fileName"] == "submission.csv" and start["competitionName"] == SLUG
    assert fake_kaggle.uploads[submitted["blobFileTokens"]] == submission.read_bytes()
    assert submitted["submissionDescription"] == "-fold0 tta"


def test_submit_code_names_the_kernel_version(fake_kaggle):
    fake_kaggle.kernels[KERNEL] = {"version": 3}

    reply = cli.submit_code(SLUG, KERNEL, 3, message="v3")

    assert reply == f"Successfully submitted to {SLUG}"
    assert fake_kaggle.rpc_bodies("CreateCodeSubmission") == [
        {
            "competitionName": SLUG,
            "kernelOwner": FAKE_USER,
            "kernelSlug": "imet-inference",
            "kernelVersion": 3,
            "fileName": "submission.csv",
            "submissionDescription": "v3",
        }
    ]


def test_dataset_is_created_then_versioned(fake_kaggle, tmp_path):
    folder = tmp_path / "weights"
    _write_dataset(folder)

    url = cli.create_or_version_dataset(folder, "first")

    assert url == f"http://localhost/datasets/{DATASET}"
    on_disk = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "dataset-metadata.json"}
    assert fake_kaggle.datasets[DATASET].files == on_disk
    assert cli.dataset_status(DATASET) == "ready"

    # Second time `kaggle datasets create` prints an error and exits 0: the wrapper must version.
    (folder / "fold0.pt").write_bytes(b"retrained")
    url = cli.create_or_version_dataset(folder, "retrained fold 0")

    assert url == f"http://localhost/datasets/{DATASET}"
    assert fake_kaggle.datasets[DATASET].versions == ["retrained fold 0"]
    assert fake_kaggle.datasets[DATASET].files == {**on_disk, "fold0.pt": b"retrained"}
    assert len(fake_kaggle.rpc_bodies("CreateDataset")) == 1


def test_dataset_folder_with_subfolders_is_refused(tmp_path):
    folder = tmp_path / "weights"
    _write_dataset(folder)
    (folder / "fold1").mkdir()

    message = _error(cli.create_or_version_dataset, folder, "x")

    assert "subfolders (fold1)" in message and "directly in the folder" in message


def test_push_kernel_sends_source_and_metadata_from_disk(fake_kaggle, tmp_path):
    folder = tmp_path / "kernel"
    metadata = _write_kernel(folder)

    url = cli.push_kernel(folder)

    assert url == f"http://localhost/code/{KERNEL}"
    [pushed] = fake_kaggle.rpc_bodies("SaveKernel")
    assert pushed["text"] == (folder / "inference.py").read_text(encoding="utf-8")
    assert pushed["slug"] == metadata["id"] and pushed["newTitle"] == metadata["title"]
    assert pushed["enableInternet"] is False and pushed["enableGpu"] is True and pushed["isPrivate"] is True
    assert pushed["datasetDataSources"] == metadata["dataset_sources"]
    assert pushed["competitionDataSources"] == metadata["competition_sources"]
    assert (pushed["language"], pushed["kernelType"]) == ("python", "script")
    assert cli.push_kernel_with_version(folder) == (url, 2)


def test_kernel_status_and_output(fake_kaggle, tmp_path):
    fake_kaggle.kernels[KERNEL] = {"version": 1}
    fake_kaggle.kernel_status[KERNEL] = ("COMPLETE", None)
    fake_kaggle.kernel_outputs[KERNEL] = {"submission.csv": b"id,attribute_ids\n1,2\n"}
    dest = tmp_path / "out"

    assert cli.kernel_status(KERNEL) == cli.KernelStatus("complete", None)
    files = cli.kernel_output(KERNEL, dest)

    assert (dest / "submission.csv").read_bytes() == b"id,attribute_ids\n1,2\n"
    assert dest / "submission.csv" in files
    fake_kaggle.kernel_status[KERNEL] = ("ERROR", "CUDA out of memory")
    assert cli.kernel_status(KERNEL) == cli.KernelStatus("error", "CUDA out of memory")


def test_quota_reads_the_weeks_gpu_hours(fake_kaggle):
    fake_kaggle.gpu_used_s = 12.5 * 3600

    quota = cli.gpu_quota()

    assert quota == cli.GpuQuota(12.5, 30.0, "2026-12-07T00:00:00") and quota.left_h == 17.5
    fake_kaggle.gpu_used_s = 31 * 3600  # over the quota: nothing left, not a negative number
    assert cli.gpu_quota().left_h == 0.0
    assert len(fake_kaggle.rpc_bodies("GetAcceleratorQuotaStatistics")) == 2


def test_kernel_logs_joins_kaggles_log_events(fake_kaggle):
    fake_kaggle.kernels[KERNEL] = {"version": 1}
    fake_kaggle.kernel_logs[KERNEL] = 'epoch 1 "done" é\nTraceback (most recent call last):\nValueError: boom\n'

    assert cli.kernel_logs(KERNEL) == fake_kaggle.kernel_logs[KERNEL]
    assert "[]" not in cli.kernel_logs(KERNEL)
    message = _error(cli.kernel_logs, f"{FAKE_USER}/no-such-kernel")
    assert "was not found on Kaggle (404)" in message


def test_a_pushed_script_runs_on_the_machine_and_within_the_timeout_it_was_pushed_with(fake_kaggle, tmp_path):
    fake_kaggle.run_pushed = True
    folder = tmp_path / "kernel"
    metadata = _write_kernel(folder)
    metadata.update(machine_shape="NvidiaTeslaT4", dataset_sources=[])
    (folder / "kernel-metadata.json").write_text(json.dumps(metadata))
    (folder / "inference.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(30)\n")

    cli.push_kernel_with_version(folder, timeout_s=2)
    fake_kaggle.wait_for_runs()

    [pushed] = fake_kaggle.rpc_bodies("SaveKernel")
    assert pushed["machineShape"] == "NvidiaTeslaT4" and pushed["sessionTimeoutSeconds"] == 2
    assert cli.kernel_status(KERNEL).state == "error"  # stopped at its -t, as Kaggle stops a session
    assert cli.kernel_logs(KERNEL).startswith("started\n")
    assert 2 <= fake_kaggle.gpu_used_s < 30  # a GPU run spends the week's quota by its length

    (folder / "inference.py").write_text("print('fine')\nopen('out.txt', 'w').write('x')\n")
    cli.push_kernel_with_version(folder)
    fake_kaggle.wait_for_runs()
    assert cli.kernel_status(KERNEL).state == "complete" and fake_kaggle.kernel_outputs[KERNEL] == {"out.txt": b"x"}
    assert "sessionTimeoutSeconds" not in fake_kaggle.rpc_bodies("SaveKernel")[1]


def test_a_hostile_output_listing_writes_nothing_outside_the_target(fake_kaggle, tmp_path):
    """Names with .. or an absolute path would make the CLI write outside its folder: they are never downloaded."""
    outside = tmp_path / "outside.txt"
    fake_kaggle.kernels[KERNEL] = {"version": 1}
    fake_kaggle.kernel_outputs[KERNEL] = {
        "submission.csv": b"id,attribute_ids\n1,2\n",
        "../outside.txt": b"escaped",
        str(outside): b"absolute",
        ".hidden": b"x",
        "oof/exp/fold-0/best.pt": b"weights",
    }
    dest = tmp_path / "target" / "out"
    files = cli.kernel_output(KERNEL, dest)
    assert not outside.exists() and not (tmp_path / "target" / "outside.txt").exists()
    written = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert written == [f"{KERNEL.split('/')[1]}.log", "oof/exp/fold-0/best.pt", "submission.csv"]
    assert sorted(f.name for f in files) == sorted(p.rsplit("/", 1)[-1] for p in written)


# ---- failures: one line each, with the fix ------------------------------------------------------

RULES = "You must accept this competition's rules before you'll be able to download files."


@pytest.mark.parametrize(
    "route, status, body, as_json, expected",
    [
        ("DownloadDataFiles", 403, RULES, True, f"https://www.kaggle.com/competitions/{SLUG}/rules"),
        ("DownloadDataFiles", 401, "Unauthenticated", True, "rejected the credentials (401)"),
        ("DownloadDataFiles", 429, "Too Many Requests", False, "rate limiting this account (429): wait"),
        ("DownloadDataFiles", 403, "Forbidden", False, "refused access (403) to competition"),
        ("DownloadDataFiles", 500, f"backend exploded near key={FAKE_KEY}", True, "[redacted]"),
    ],
)
def test_download_errors_map_to_one_line(fake_kaggle, tmp_path, route, status, body, as_json, expected):
    fake_kaggle.competition_files[SLUG] = {"train.csv": b""}
    fake_kaggle.fail(route, status, body, as_json=as_json)

    message = _error(cli.download_competition, SLUG, tmp_path / "input")

    assert message.startswith(f"kaggle competitions download {SLUG}: ") and expected in message


def test_unknown_competition_is_a_404_with_the_fix(fake_kaggle, tmp_path):
    submission = tmp_path / "submission.csv"
    submission.write_text("id,x\n")

    message = _error(cli.submit_file, "no-such-competition", submission, "m")

    assert "competition no-such-competition was not found on Kaggle (404): check the slug" in message


def test_failed_upload_with_exit_code_0_is_an_error(fake_kaggle, tmp_path):
    fake_kaggle.competition_files[SLUG] = {"train.csv": b""}
    fake_kaggle.fail("/upload/blob-1", 403, "AccessDenied", as_json=False)
    submission = tmp_path / "submission.csv"
    submission.write_text("id,x\n")

    message = _error(cli.submit_file, SLUG, submission, "m")

    assert "upload of the submission file failed: rerun" in message
    assert fake_kaggle.rpc_bodies("CreateSubmission") == []


def test_forbidden_kernel_names_the_owner(fake_kaggle):
    fake_kaggle.fail("GetKernelSessionStatus", 403, "Permission 'kernels.get' was denied")

    message = _error(cli.kernel_status, KERNEL)

    assert f"refused access (403) to kernel {KERNEL}" in message and f"{FAKE_USER}'s" in message


def test_dataset_creation_error_other_than_exists_is_reported(fake_kaggle, tmp_path):
    folder = tmp_path / "weights"
    _write_dataset(folder)
    fake_kaggle.fail("CreateDataset", 200, {"status": "error", "error": "Invalid license"})

    message = _error(cli.create_or_version_dataset, folder, "x")

    assert f"refused to create dataset {DATASET}: Invalid license" in message
    assert fake_kaggle.rpc_bodies("CreateDatasetVersion") == []


def test_missing_credentials(fake_kaggle, tmp_path, monkeypatch):
    _use_env(monkeypatch, fake_kaggle.env(tmp_path / "empty-home", credentials=False))

    message = _error(cli.kernel_status, KERNEL)

    assert "no Kaggle credentials found" in message and "KAGGLE_USERNAME" in message
    assert fake_kaggle.requests == []


def test_token_credentials_work_and_never_leak(fake_kaggle, tmp_path, monkeypatch):
    env = fake_kaggle.env(tmp_path / "token-home", credentials=False)
    _use_env(monkeypatch, {**env, "KAGGLE_API_TOKEN": FAKE_TOKEN})
    fake_kaggle.kernels[KERNEL] = {"version": 1}
    fake_kaggle.kernel_status[KERNEL] = ("RUNNING", None)

    assert cli.kernel_status(KERNEL).state == "running"
    fake_kaggle.fail("GetKernelSessionStatus", 500, f"token {FAKE_TOKEN} is odd")
    message = _error(cli.kernel_status, KERNEL)
    assert "token [redacted] is odd" in message


def test_env_key_is_scrubbed(fake_kaggle, tmp_path, monkeypatch):
    # KAGGLE_USERNAME/KAGGLE_KEY override kaggle.json; the server echoes the key back.
    other_key = "ENVKEY-5555-not-a-real-key"
    monkeypatch.setenv("KAGGLE_KEY", other_key)
    monkeypatch.setenv("KAGGLE_USERNAME", FAKE_USER)
    fake_kaggle.fail("GetKernelSessionStatus", 500, f"bad key {other_key}")

    message = _error(cli.kernel_status, KERNEL)

    assert other_key not in message and "bad key [redacted]" in message


def test_cli_not_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))

    message = _error(cli.kernel_status, KERNEL)

    assert "kaggle CLI is not installed" in message and "pip install -r requirements.txt" in message


def test_bad_slug_is_refused_before_running_anything(tmp_path):
    assert "not a slug" in _error(cli.download_competition, "--help", tmp_path)
    assert "owner/slug" in _error(cli.kernel_output, "just-a-slug", tmp_path)


def test_kernel_pushed_without_its_dataset_is_an_error(fake_kaggle, tmp_path):
    folder = tmp_path / "kernel"
    _write_kernel(folder)
    fake_kaggle.fail(
        "SaveKernel",
        200,
        {
            "ref": f"/code/{KERNEL}",
            "url": "http://localhost/code/x",
            "versionNumber": 1,
            "invalidDatasetSources": [DATASET],
        },
    )

    message = _error(cli.push_kernel, folder)

    assert "dropped the dataset sources" in message and DATASET in message and "dataset_sources" in message


def test_unreachable_kaggle(fake_kaggle, tmp_path, monkeypatch):
    with socket.socket() as probe:  # a free port that nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{port}")

    message = _error(cli.kernel_status, KERNEL)

    assert "could not reach Kaggle: check the network connection" in message
