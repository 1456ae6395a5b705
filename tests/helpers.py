"""Test helpers: tiny configs for fast CPU runs; the shared check that a validator refuses a bad file."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import yaml

TINY_TRAIN = {
    "model": {"name": "test_resnet"},
    "train": {"epochs": 2, "batch_size": 16, "lr": 0.003, "warmup_epochs": 0.5, "threads": 1},
    "predict": {"tta_flip": True, "batch_size": 64},
    "thresholds": {"optuna_trials": 8, "honest_folds": 3},
}


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def write_config(directory: Path, name: str, body: dict) -> Path:
    """Write `body` as `<directory>/<name>.yaml` and return its path (the experiment is named after it)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def tiny_config(tmp: Path, format_name: str, data_root: Path, extra: dict | None = None, name: str = "tiny") -> Path:
    """A config for a fast CPU run of `format_name` on `data_root`, outputs under `tmp`."""
    body = {
        "competition": f"demo-{format_name}",
        "format": format_name,
        "output_dir": str(tmp / "out"),
        "data": {"root": str(data_root), "image_size": 32, "n_folds": 3},
        **TINY_TRAIN,
    }
    return write_config(tmp / "configs", name, _merge(body, extra or {}))


def kaggle_demo_experiment(root: Path, competition: str, n_train: int, n_test: int, extra: dict):
    """A tiny iMet demo under `<root>/input/<competition>` (answers apart) as an Experiment named tiny, on 2 folds
    whose folds file is written; `extra` is merged into the tiny config (the Kaggle username, sizes, ...)."""
    from src.artifacts import Experiment
    from src.config import load_config
    from src.demo import build_demo
    from src.steps import folds

    paths = build_demo(
        "imet", root / "input" / competition, answers_root=root / "input" / "answers", n_train=n_train, n_test=n_test
    )
    config_path = tiny_config(
        root, "imet", paths.root, name="tiny", extra=_merge({"competition": competition, "data": {"n_folds": 2}}, extra)
    )
    experiment = Experiment(load_config(config_path), config_path)
    folds.run(experiment, log=[].append)
    return experiment


def tiny_training(data_root: Path, tmp: Path, total_steps: int, scaler=None, wrap=lambda part: part):
    """(a real src.engine Training for the tiny iMet demo's heads on CPU, its heads, its runtime);
    `wrap` is applied to the trained module and the loss (e.g. a spy recording their calls)."""
    from src.config import load_config
    from src.distributed import DistributedContext
    from src.engine import Training, build_grad_scaler, build_models, build_optimizer, build_scheduler
    from src.formats import create_format
    from src.losses import MultiHeadLoss
    from src.runtime import make_runtime

    config = load_config(tiny_config(tmp, "imet", data_root))
    heads = create_format("imet", data_root).heads()
    runtime = make_runtime("cpu", threads=1)
    model, trained = build_models(config, heads, runtime, DistributedContext())
    loss_fn = MultiHeadLoss(heads, config.train.loss)
    optimizer = build_optimizer(model, loss_fn, config.train)
    training = Training(
        model,
        wrap(trained),
        wrap(loss_fn),
        optimizer,
        build_scheduler(optimizer, config.train, total_steps),
        scaler or build_grad_scaler(runtime),
    )
    return training, heads, runtime


def assert_refused_submission(fmt, path: Path, text: str, message: str) -> None:
    """Writing `text` to `path` and reading it as a submission stops with one error naming the file and `message`."""
    import pytest

    from src.errors import PipelineError

    path.write_text(text)
    with pytest.raises(PipelineError) as error:
        fmt.read_submission([path])
    assert message in str(error.value) and path.name in str(error.value)


def load_script(name: str):
    """scripts/<name>.py imported as module `name` (registered in sys.modules, where dataclasses look it up)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def open_images(paths) -> list:
    """Every image at `paths` opened and loaded (PIL images, files closed)."""
    from PIL import Image

    images = []
    for path in paths:
        with Image.open(path) as image:
            image.load()
            images.append(image)
    return images


def small_demo(tmp_path_factory, format_name: str, n_train: int = 30, n_test: int = 12):
    """The demo of `format_name` at seed 3 and a small size, built once under a fresh temp folder (DemoPaths)."""
    from src.demo import build_demo

    root = tmp_path_factory.mktemp(f"demo-{format_name}")
    return build_demo(format_name, root / f"demo-{format_name}", seed=3, n_train=n_train, n_test=n_test)


def run_torchrun(*argv: str, processes: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=<processes> -m src.stage *argv` from the repo root, one OpenMP
    thread per process (gloo on the CPU), output captured as text; stopped after 10 minutes."""
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun), "--standalone", f"--nproc_per_node={processes}", "-m", "src.stage", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)


def alias_bomb_yaml(levels: int = 9) -> str:
    """YAML whose anchors nest 10 aliases a level: `levels` levels expand to 10^levels values (a 'billion laughs')."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 10)}]" for level in range(1, levels)]
    return "\n".join(lines) + "\n"


def pdf_empty_shares(pdf_path: Path) -> list[float]:
    """Per page of a report PDF, the share of the text frame's height left empty below its lowest drawn text, image or
    rule (read from the page's drawing operators as placed, the footer under the frame not counted)."""
    from pypdf import PdfReader

    from src.report.pdf import FRAME_HEIGHT, MARGIN

    shares = []
    for page in PdfReader(str(pdf_path)).pages:
        lowest = _lowest_drawn(page, MARGIN * 0.95, float(page.mediabox.height) - MARGIN)
        shares.append(max(0.0, (lowest - MARGIN) / FRAME_HEIGHT))
    return shares


def _lowest_drawn(page, floor: float, top: float) -> float:
    """The lowest y (pt) at which the page draws text, an image or a rectangle, between `floor` and `top`."""
    found = [top]

    def place(x: float, y: float, cm) -> None:
        y_on_page = cm[1] * x + cm[3] * y + cm[5]
        if floor <= y_on_page <= top:
            found.append(y_on_page)

    def operator(op, args, cm, tm) -> None:
        if op == b"Do":  # an image: the unit square under the current transformation
            place(0.0, 0.0, cm)
        elif op == b"re":
            place(float(args[0]), float(args[1]), cm)

    def text(value, cm, tm, font, size) -> None:
        if value.strip():
            place(tm[4], tm[5], cm)

    page.extract_text(visitor_operand_before=operator, visitor_text=text)
    return min(found)
