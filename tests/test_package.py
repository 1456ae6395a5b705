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
    "model.pretrained=null",  # demo-folder.yaml fine-tunes from weights its demo stage makes; these train from scratch
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
    "deepfashion": {"Readme.txt", "report.pdf", "category.csv", "attribute.csv", "assignment4.ipynb"},
    "celeba": {"Readme.txt", "report.pdf", "predictions/predictions.txt"},
    # As the folder course's hand-out spells them: the notebook and csv start lower-case, the PDF upper-case.
    "folder": {"Readme.txt", "RollNumber_06.pdf", "rollNumber_06.csv", "rollNumber_06.ipynb"},
}
# Where each course's zip puts the files `submit` wrote, when not under their own names.
INSIDE = {
    "folder": {"submission.csv": "rollNumber_06.csv"},
    "celeba": {"predictions.txt": "predictions/predictions.txt"},
}
NOTEBOOK = {"folder": "rollNumber_06.ipynb", "deepfashion": "assignment4.ipynb"}


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
            stages = STAGES
            if format_name == "folder":  # the course's zip ships the full fit's weights (no held-out rows)
                # Its report.compare names the scratch run only the demo stage trains; these stages make one run.
                overrides += ["submit.checkpoint=full", "report.compare=[]"]
                stages = (*STAGES[:2], ["train", "--full"], *STAGES[2:])
            for stage in stages:
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
    files = [tmp_path / INSIDE.get(format_name, {}).get(name, name) for name in fmt.submission_names()]
    ids, _ = fmt.read_submission(files)
    assert ids == fmt.read_test().ids
    for file, name in zip(files, fmt.submission_names()):
        assert file.read_bytes() == (exp.submission_dir / name).read_bytes()

    # The PDF: within the budget, its text searchable and holding the figures the report printed.
    report_pdf = tmp_path / ("report.pdf" if format_name != "folder" else "RollNumber_06.pdf")
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
    from helpers import pdf_empty_shares

    shares = pdf_empty_shares(report_pdf)
    assert all(share < 1 / 3 for share in shares[:-1]), f"pages left more than a third empty: {shares}"

    # The Readme names every file (test images by their folder), the libraries at their installed versions with
    # their PyPI page, and the commands.
    readme = (tmp_path / "Readme.txt").read_text()
    for name in names:
        shown = f"{Path(name).parent.as_posix()}/" if name.startswith(f"code/input/{exp.name}/") else name
        assert f"  {shown} " in readme, name
    for library in ("torch", "timm", "reportlab", "torchinfo"):
        version = importlib.metadata.version(library)
        assert f"  {library} {version}  https://pypi.org/project/{library}/{version}/ https://" in readme
    assert f"python -m src.stage train --fold all --config configs/{exp.name}.yaml" in readme
    assert f"python -m src.stage submit --config configs/{exp.name}.yaml data.root=/path/to/competition" in readme
    run = exp.submission_checkpoint().parent.name  # the weights `submit.checkpoint` names
    assert f"code/oof/{exp.name}/{run}/best.pt" in names and run == ("full" if format_name == "folder" else "fold-0")
    assert load_config(tmp_path / "code" / "configs" / f"{exp.name}.yaml").model.name == "test_resnet"


def test_the_folder_course_notebook_ran_headless_with_no_error(packaged, tmp_path):
    import nbformat

    made = packaged("folder")
    unpack(made.zip, tmp_path)
    notebook = nbformat.read(str(tmp_path / "rollNumber_06.ipynb"), as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count for cell in code)
    outputs = [output for cell in code for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) >= 4  # test images, curves, confusion matrix, predicted test images
    printed = "".join(output.get("text", "") for output in outputs)
    assert "TRAIN = False" in printed and "vs rollNumber_06.csv in the zip: byte-identical" in printed
    sources = "\n".join(cell.source for cell in code)
    # The code a grader reads: the project's functions for each step, not a driver of stage commands.
    for call in (
        "fmt.read_test()",
        "build_model(",
        "MultiHeadLoss(",
        "train_run(",
        "predict_rows(",
        "write_submission(",
    ):
        assert call in sources, call
    assert "src.stage" not in sources and "main([" not in sources
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


def execute_unzipped(notebook_path: Path, parameters: str | None = None):
    """Execute a notebook of an unzipped package in its own folder (as a grader would: nbclient, this Python);
    `parameters` replaces the source of its parameters cell (the first code cell)."""
    import nbformat

    from src.notebook import execute_notebook

    notebook = nbformat.read(str(notebook_path), as_version=4)
    if parameters is not None:
        next(cell for cell in notebook.cells if cell.cell_type == "code").source = parameters
    return execute_notebook(notebook, notebook_path.parent, notebook_path)


def moved_away(*paths: Path):
    """Context: the given folders renamed away meanwhile (the build machine's data and outputs are not there)."""
    import contextlib

    @contextlib.contextmanager
    def away():
        for path in paths:
            path.rename(path.with_name(path.name + ".away"))
        try:
            yield
        finally:
            for path in paths:
                path.with_name(path.name + ".away").rename(path)

    return away()


@pytest.mark.parametrize("format_name", ["folder", "deepfashion"])
@pytest.mark.slow
def test_the_notebook_runs_again_from_the_unzipped_folder_alone_and_writes_the_same_predictions(
    packaged, tmp_path, format_name
):
    made = packaged(format_name)
    unpack(made.zip, tmp_path)
    assert not {"input", "oof", "submissions"} & {path.name for path in tmp_path.iterdir()}
    with moved_away(made.paths.root, made.tmp / "out"):
        notebook = execute_unzipped(tmp_path / NOTEBOOK[format_name])
    printed = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    written = tmp_path / "notebook_outputs" / "predictions"
    for name in made.exp.fmt.submission_names():
        shipped = tmp_path / INSIDE.get(format_name, {}).get(name, name)
        assert (written / name).read_bytes() == shipped.read_bytes(), name
        assert f"notebook_outputs/predictions/{name} vs {shipped.name} in the zip: byte-identical" in printed


@pytest.mark.slow
def test_the_notebook_retrains_with_train_true_and_data_root(packaged, tmp_path):
    made = packaged("folder")
    unpack(made.zip, tmp_path)
    execute_unzipped(tmp_path / "rollNumber_06.ipynb", f"TRAIN = True\nDATA_ROOT = {str(made.paths.root)!r}")
    retrained = tmp_path / "notebook_outputs" / "retrained" / "oof" / made.exp.name
    assert (retrained / "fold-0" / "best.pt").is_file() and (retrained / "fold-1" / "best.pt").is_file()
    assert (retrained / "oof.npz").is_file()
    ids, _ = made.exp.fmt.read_submission([tmp_path / "notebook_outputs" / "predictions" / "submission.csv"])
    assert ids == made.exp.fmt.read_test().ids


@pytest.mark.slow
def test_the_readme_predict_commands_work_as_written_from_the_unzipped_code(packaged, tmp_path):
    import subprocess
    import sys

    made = packaged("folder")
    unpack(made.zip, tmp_path)
    readme = (tmp_path / "Readme.txt").read_text()
    command = f"python -m src.stage submit --config configs/{made.exp.name}.yaml"
    assert command in readme and f"{command} data.root=/path/to/competition format_options.test_dir=" in readme
    new_test = tmp_path / "new_test"
    new_test.mkdir()
    shipped_test = sorted((tmp_path / "code" / "input" / made.exp.config.competition / "test").iterdir())[:3]
    for image in shipped_test:
        shutil.copy(image, new_test / image.name)
    written = tmp_path / "code" / "submissions" / made.exp.name / "submission.csv"
    shipped_rows = (tmp_path / "rollNumber_06.csv").read_text().splitlines()
    with moved_away(made.paths.root, made.tmp / "out"):
        shipped_root = tmp_path / "code" / "input" / made.exp.config.competition
        new = [f"data.root={shipped_root}", f"format_options.test_dir={new_test}"]
        for extra, expected in (([], shipped_rows), (new, shipped_rows[:4])):
            argv = [sys.executable, *command.split()[1:], *extra, "--quiet"]
            result = subprocess.run(argv, cwd=tmp_path / "code", capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, result.stderr[-2000:]
            assert written.read_text().splitlines() == expected


def test_nothing_of_the_building_machine_is_in_the_zip_but_the_report(packaged, tmp_path):
    made = packaged("folder")
    names = unpack(made.zip, tmp_path)
    machine = [str(ROOT), str(made.tmp), str(Path.home())]
    for name in names:
        if Path(name).suffix.lower() in (".pdf", ".pt", ".npz", ".png", ".jpg"):
            continue  # binary (the report's text is REPORT's, checked there)
        text = (tmp_path / name).read_text(encoding="utf-8")
        assert not [path for path in machine if path in text], name
    config = load_config(tmp_path / "code" / "configs" / f"{made.exp.name}.yaml")
    assert str(config.output_dir) == "." and not config.data.root.is_absolute() and config.data.solution == []


def test_the_packaged_config_compares_with_no_experiment_the_zip_does_not_ship(packaged):
    """report.compare names runs of this machine: the zip's config drops it, so the Readme's retrain commands (report
    included) work from the zip alone."""
    from src.package import packaged_config

    made = packaged("folder")
    overrides = [override for override in made.overrides if not override.startswith("report.compare")]
    exp = Experiment(load_config(made.config, overrides), made.config)
    assert exp.config.report.compare == ["demo-folder-scratch"]
    assert packaged_config(exp)["report"]["compare"] == []


def test_weights_or_test_images_over_their_limit_are_refused_in_one_line(packaged, capsys):
    made = packaged("folder")
    for key, what in (("max_weights_mb", "MB of weights"), ("max_test_images_mb", "MB of test files")):
        assert run(["package", "--name", "too_big"], made.config, [*made.overrides, f"package.{key}=0.001"]) == 2
        error = capsys.readouterr().err.strip()
        assert what in error and f"over package.{key}=0.001" in error and "\n" not in error
    assert not (made.exp.package_dir / "too_big.zip").exists()


def test_another_course_gets_the_notebook_from_a_name_pattern_and_it_predicts_from_the_zip(packaged, tmp_path):
    made = packaged("imet")
    pattern = ['package.names.notebook="{name_lower_first}-notebook.ipynb"']
    assert run(["package", "--name", "Imet_Nb"], made.config, [*made.overrides, *pattern]) == 0
    names = unpack(made.exp.package_dir / "Imet_Nb.zip", tmp_path)
    assert "imet_Nb-notebook.ipynb" in names and f"code/input/{made.exp.config.competition}/labels.csv" in names
    text = (tmp_path / "imet_Nb-notebook.ipynb").read_text()
    assert "notebook_outputs/predictions/submission.csv vs submission.csv in the zip: byte-identical" in text


@pytest.mark.slow
def test_package_author_reaches_the_pdf_and_the_readme(packaged, tmp_path, capsys):
    """`package --author` after the report was made: the report is made again, so the zip's PDF names the author."""
    from src.report.pdf import author_of

    made = packaged("celeba")
    assert author_of(made.exp.report_pdf) is None
    capsys.readouterr()
    assert run(["package", "--name", "authored", "--author", "RollNumber_06"], made.config, made.overrides) == 0
    assert "report: made again for the author line 'RollNumber_06'" in capsys.readouterr().out
    names = unpack(made.exp.package_dir / "authored.zip", tmp_path)
    [pdf] = [name for name in names if name.endswith(".pdf")]
    assert author_of(tmp_path / pdf) == "RollNumber_06"
    assert "Author: RollNumber_06" in (tmp_path / "Readme.txt").read_text()


@pytest.mark.parametrize("format_name", ["celeba", "csv"])
@pytest.mark.slow
def test_a_notebook_of_a_format_naming_its_heads_from_training_files_runs_from_the_zip_alone(
    packaged, tmp_path, format_name
):
    """CelebA's attribute names and the csv format's classes come from training label files the zip does not ship:
    the packaged config pins them (and the listing the test images are read from ships), so the notebook re-runs with
    TRAIN = False from the unzipped folder alone, the build machine's data and outputs moved away."""
    made = packaged(format_name)
    pattern = ['package.names.notebook="{name_lower_first}.ipynb"']
    assert run(["package", "--name", "Nb_06"], made.config, [*made.overrides, *pattern]) == 0
    names = unpack(made.exp.package_dir / "Nb_06.zip", tmp_path)
    competition = made.exp.config.competition
    assert not [name for name in names if name.endswith(("list_attr_celeba.txt", "train.csv"))], names
    assert any(name.startswith(f"code/input/{competition}/") for name in names)
    with moved_away(made.paths.root, made.tmp / "out"):
        notebook = execute_unzipped(tmp_path / "nb_06.ipynb")
    printed = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert "no test images here" not in printed
    for name in made.exp.fmt.submission_names():
        shipped = tmp_path / INSIDE.get(format_name, {}).get(name, name)
        written = tmp_path / "notebook_outputs" / "predictions" / name
        assert written.read_bytes() == shipped.read_bytes(), name
        assert f"notebook_outputs/predictions/{name} vs {shipped.relative_to(tmp_path)} in the zip: byte-identical" in (
            printed
        )
    # A copy without the test images: one line says what to set, and every other cell still runs.
    shutil.rmtree(tmp_path / "notebook_outputs")
    for image in made.exp.fmt.read_test().paths:
        (tmp_path / "code" / "input" / competition / image.relative_to(made.paths.root)).unlink()
    with moved_away(made.paths.root, made.tmp / "out"):
        notebook = execute_unzipped(tmp_path / "nb_06.ipynb")
    printed = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    said = [line for line in printed.splitlines() if line.startswith("no test images here")]
    assert len(said) == 1 and said[0].endswith("set DATA_ROOT to the competition folder to predict them"), said
    assert (
        "nothing to predict (set DATA_ROOT)" in printed and not (tmp_path / "notebook_outputs" / "predictions").exists()
    )
