"""The package stage: each format's course zip from a tiny trained run, checked as the course would.

One tiny experiment per format (2 folds, 1 epoch, 32 px) runs folds -> train -> oof -> thresholds ->
submit -> report -> package in-process; the zip's files, the predictions (through the format's own
validator), the PDF (pages within the budget, its text holds the figures the report printed), the
folder course's executed notebook and the Readme are checked. CelebA also gets the course's new test
folder. Refusals: a stale or missing artifact names the stage to run.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from pypdf import PdfReader

from src.artifacts import Experiment
from src.config import load_config
from src.demo import build_demo
from src.stage import main

ROOT = Path(__file__).resolve().parents[1]
NAME = "RollNumber_06"
FAST = [
    "data.image_size=32",
    "data.n_folds=2",
    "model.name=test_resnet",
    "train.epochs=1",
    "train.batch_size=16",
    "train.threads=1",
    "thresholds.optuna_trials=4",
    "thresholds.honest_folds=2",
    "submit.checkpoint=fold-0",
    "predict.tta_flip=false",
    "predict.batch_size=64",
]
STAGES = (["folds"], ["train", "--fold", "all"], ["oof"], ["thresholds"], ["submit"], ["report"])
# What each course's zip holds besides the code folder.
COURSE_FILES = {
    "imet": {"Readme.txt", "report.pdf", "submission.csv"},
    "deepfashion": {"Readme.txt", "report.pdf", "category.csv", "attribute.csv"},
    "celeba": {"Readme.txt", "report.pdf", "predictions/predictions.txt"},
    "folder": {"Readme.txt", f"{NAME}.pdf", f"{NAME}.csv", f"{NAME}.ipynb"},
}


def run(stage: list[str], config: Path, overrides: list[str]) -> int:
    return main([stage[0], "--config", str(config), *stage[1:], *overrides, "--quiet"])


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """format name -> its packaged tiny experiment (trained once, on first use)."""
    made: dict[str, SimpleNamespace] = {}

    def make(format_name: str) -> SimpleNamespace:
        if format_name not in made:
            tmp = tmp_path_factory.mktemp(format_name)
            paths = build_demo(format_name, tmp / f"demo-{format_name}", n_train=60, n_test=10, seed=4)
            config = ROOT / "configs" / f"demo-{format_name}.yaml"
            overrides = [f"output_dir={tmp / 'out'}", f"data.root={paths.root}", *FAST]
            for stage in STAGES:
                assert run(stage, config, overrides) == 0, stage
            assert run(["package", "--name", NAME], config, overrides) == 0
            exp = Experiment(load_config(config, overrides), config)
            made[format_name] = SimpleNamespace(
                exp=exp, config=config, overrides=overrides, tmp=tmp, paths=paths, zip=exp.package_dir / f"{NAME}.zip"
            )
        return made[format_name]

    return make


def unpack(zip_path: Path, dest: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.testzip() is None
        archive.extractall(dest)
        return archive.namelist()


@pytest.mark.parametrize("format_name", ["imet", "deepfashion", "celeba", "folder"])
@pytest.mark.slow
def test_each_course_zip_holds_what_the_course_asks_for(packaged, tmp_path, format_name):
    made = packaged(format_name)
    exp = made.exp
    names = unpack(made.zip, tmp_path)
    assert {n for n in names if not n.startswith("code/")} == COURSE_FILES[format_name]
    assert {
        "code/requirements.txt",
        f"code/configs/{exp.name}.yaml",
        "code/src/stage.py",
        "code/src/formats/celeba.py",
        "code/src/report/pdf.py",
    } <= set(names)
    assert sorted(
        path.relative_to(exp.package_dir / NAME).as_posix()
        for path in (exp.package_dir / NAME).rglob("*")
        if path.is_file()
    ) == sorted(names)

    # The predictions pass the format's own validator and equal what submit wrote.
    fmt = exp.fmt
    inside = {
        "folder": {fmt.submission_names()[0]: f"{NAME}.csv"},
        "celeba": {"predictions.txt": "predictions/predictions.txt"},
    }
    files = [tmp_path / inside.get(format_name, {}).get(name, name) for name in fmt.submission_names()]
    ids, _ = fmt.read_submission(files)
    assert ids == fmt.read_test().ids
    for file, name in zip(files, fmt.submission_names()):
        assert file.read_bytes() == (exp.submission_dir / name).read_bytes()

    # The PDF: within the budget, its text searchable and holding the figures the report printed.
    report_pdf = tmp_path / ("report.pdf" if format_name != "folder" else f"{NAME}.pdf")
    reader = PdfReader(str(report_pdf))
    assert 1 <= len(reader.pages) <= exp.config.report.max_pages == 5
    text = " ".join(page.extract_text() for page in reader.pages)
    tables = json.loads((exp.report_dir / "tables.json").read_text())
    assert f"{tables['summary'][0]['value']:.4f}" in text
    for heading in ("Summary", "Model, losses and tricks", "Training curves", "Resources", "Examples: right and wrong"):
        assert heading in text
    if format_name == "celeba":
        mean = tables["attribute_accuracy_attributes"][-1]
        assert mean["attribute"] == "mean" and f"{mean['accuracy tuned']:.4f}" in text

    # The Readme names every file, the libraries at their installed versions, and the commands.
    readme = (tmp_path / "Readme.txt").read_text()
    for name in names:
        assert f"  {name} " in readme, name
    for library in ("torch", "timm", "reportlab", "torchinfo"):
        assert f"  {library} {importlib.metadata.version(library)}\n" in readme
    assert f"python -m src.stage train --fold all --config configs/{exp.name}.yaml" in readme
    assert load_config(tmp_path / "code" / "configs" / f"{exp.name}.yaml").model.name == "test_resnet"


def test_the_folder_course_notebook_ran_headless_with_no_error(packaged, tmp_path):
    import nbformat

    made = packaged("folder")
    unpack(made.zip, tmp_path)
    notebook = nbformat.read(str(tmp_path / f"{NAME}.ipynb"), as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count for cell in code)
    outputs = [output for cell in code for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) >= 4  # network, curves, confusion, ROC / PR, examples
    printed = "".join(output.get("text", "") for output in outputs)
    assert "wrote" in printed and "report.pdf" in printed and "TRAIN = False" in printed
    assert notebook.metadata.kernelspec.name == "python3"


def test_celeba_packages_the_new_test_folder_in_file_name_order(packaged, tmp_path):
    made = packaged("celeba")
    new_test = made.paths.root / "new_test"
    new_test.mkdir(exist_ok=True)
    sources = sorted((made.paths.root / "img_align_celeba").glob("*.jpg"))[-4:]
    for index, source in enumerate(sources):
        shutil.copy(source, new_test / f"new_{3 - index:02d}.jpg")
    overrides = [*made.overrides, "format_options.test_dir=new_test"]
    # predictions.txt made for partition 2 is refused for the new test set: submit again first.
    assert run(["package"], made.config, overrides) == 2
    assert run(["submit"], made.config, overrides) == 0
    assert run(["package", "--name", "celeba-new"], made.config, overrides) == 0
    names = unpack(made.exp.package_dir / "celeba-new.zip", tmp_path)
    assert "predictions/predictions.txt" in names
    rows = (tmp_path / "predictions" / "predictions.txt").read_text().splitlines()
    assert [row.split()[0] for row in rows] == ["new_00.jpg", "new_01.jpg", "new_02.jpg", "new_03.jpg"]
    assert all(len(row.split()) == 41 for row in rows)
    assert run(["submit"], made.config, made.overrides) == 0  # back to partition 2 for the other tests


def test_stale_or_missing_artifacts_are_refused_naming_the_stage(packaged, capsys):
    made = packaged("imet")
    exp = made.exp
    report_time = exp.report_pdf.stat().st_mtime_ns
    os.utime(exp.report_pdf, ns=(report_time, exp.oof_path.stat().st_mtime_ns - 10**9))
    try:
        assert run(["package"], made.config, made.overrides) == 2
        assert f"report.pdf is older than {exp.oof_path}" in capsys.readouterr().err
    finally:
        os.utime(exp.report_pdf, ns=(report_time, report_time))
    submission = exp.submission_dir / "submission.csv"
    submission.rename(submission.with_suffix(".away"))
    try:
        assert run(["package"], made.config, made.overrides) == 2
        error = capsys.readouterr().err
        assert "submission.csv is missing; make it first with: python -m src.stage submit" in error
    finally:
        submission.with_suffix(".away").rename(submission)
    assert run(["package", "--name", "two words"], made.config, made.overrides) == 2
    assert "--name 'two words': not a plain file name" in capsys.readouterr().err
    assert run(["package"], made.config, [*made.overrides, "package.names.bogus=x"]) == 2
    assert "config package.names.bogus: unknown piece" in capsys.readouterr().err
    assert run(["package"], made.config, [*made.overrides, "package.names.report=../up.pdf"]) == 2
    assert "config package.names.report: '../up.pdf' is not a path inside the zip" in capsys.readouterr().err


def test_a_credential_in_a_packaged_file_stops_the_package(packaged, capsys, monkeypatch):
    made = packaged("imet")
    monkeypatch.setenv("COURSE_API_TOKEN", "s3cr3t-value-123")
    # The value lands in the packaged config: the scan stops the package before any zip is written.
    assert run(["package", "--name", "leaky"], made.config, [*made.overrides, "submit.message=s3cr3t-value-123"]) == 2
    assert "holds the value of $COURSE_API_TOKEN" in capsys.readouterr().err
    assert not (made.exp.package_dir / "leaky.zip").exists() and not (made.exp.package_dir / "leaky").exists()


# ---- what ships, and a dead notebook kernel (src/tracked.py, src/watchdog.py) ------------------------------------


@pytest.mark.slow
def test_an_untracked_source_file_stops_the_package_by_name(packaged, capsys):
    made = packaged("imet")
    planted = ROOT / "src" / f"planted_{os.getpid()}.py"
    planted.write_text("TOKEN = 'not for the course zip'\n")
    try:
        assert run(["package", "--name", "untracked"], made.config, made.overrides) == 2
    finally:
        planted.unlink()
    assert f"error: {planted}: not tracked by git, so it is not shipped" in capsys.readouterr().err
    assert not (made.exp.package_dir / "untracked.zip").exists()


@pytest.mark.slow
def test_a_killed_notebook_kernel_stops_the_package_with_one_line(packaged, capsys):
    """As an out-of-memory kill would: SIGKILL to the notebook's kernel while it runs; before, package hung for good."""
    import signal
    import threading
    import time

    made = packaged("folder")
    capsys.readouterr()
    done, killed = threading.Event(), []

    def kill_the_kernel() -> None:
        while not done.is_set() and not killed:
            for children in Path("/proc/self/task").glob("*/children"):
                for pid in children.read_text().split():
                    if b"ipykernel_launcher" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        time.sleep(3)  # started, and running the notebook's cells (the report stage takes longer)
                        os.kill(int(pid), signal.SIGKILL)
                        killed.append(int(pid))
            time.sleep(0.05)
        if not done.wait(120):  # the watchdog missed it: interrupt the wait, so the test fails instead of hanging
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    killer = threading.Thread(target=kill_the_kernel, daemon=True)
    killer.start()
    try:
        code = run(["package", "--name", "killed"], made.config, made.overrides)
    finally:
        done.set()
        killer.join()
    error = capsys.readouterr().err.strip().splitlines()
    assert killed and code == 2
    assert error == [
        f"error: {made.exp.package_dir / 'killed.ipynb'}: the notebook's kernel died (its process is "
        "gone: killed, e.g. out of memory); check memory (a smaller batch or image size), then package again"
    ]
    assert not (made.exp.package_dir / "killed.zip").exists()
