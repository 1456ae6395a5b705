"""The course notebook: the pipeline written out as readable cells (data, model, loss, training, evaluation,
prediction) that call the project's package, built with nbformat, run headless with nbclient, saved with outputs.

It runs from the unzipped package alone: `code/` holds the package, its config, the trained weights (best.pt) and
the test images, so with TRAIN = False (as saved) it predicts the test images with the shipped weights and writes
the prediction file again (saying whether it is byte-identical to the shipped one); DATA_ROOT points it at another
copy of the competition, and TRAIN = True with DATA_ROOT trains every run again first. Everything it writes goes to
`notebook_outputs/` beside it. The kernel is this process's own Python (a kernelspec in a temporary folder).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import tempfile
from pathlib import Path

from src.errors import PipelineError
from src.watchdog import process_alive, watch_process

KERNEL_NAME = "src-stage-python"
CELL_TIMEOUT_S = 1800
NOTEBOOK_OUTPUTS = "notebook_outputs"  # where the notebook writes (predictions, image cache, a retrained run)

# ---- the cells' code (placeholders __CONFIG__, __CODE__, __SHIPPED__ filled per package) ----

PARAMETERS = """\
TRAIN = False      # True: train every fold and the submitted run again from DATA_ROOT first (slow)
DATA_ROOT = None   # the competition folder; None = the test images this zip ships in code/ (no training images)"""

SETUP = """\
%matplotlib inline
import sys, json, warnings
from pathlib import Path

import numpy as np
import pandas as pd
import matplotlib.pyplot as plt

warnings.filterwarnings('ignore')  # library notices (tqdm widgets, timm deprecations) would name this machine's paths
HERE = Path.cwd()                  # the unzipped folder: this notebook, code/ and the shipped predictions
CODE = HERE / __CODE__             # the project's package, its config and the trained run (code/oof/)
OUT = HERE / 'notebook_outputs'    # everything this notebook writes goes here
sys.path.insert(0, str(CODE))

from src.artifacts import Experiment
from src.config import load_config

CONFIG = CODE / 'configs' / __CONFIG__
if TRAIN and not DATA_ROOT:
    raise ValueError('TRAIN = True trains on the competition files: set DATA_ROOT to their folder')
root = Path(DATA_ROOT).resolve() if DATA_ROOT else CODE / load_config(CONFIG).data.root
output_dir = OUT / 'retrained' if TRAIN else CODE  # the shipped run is code/oof/<experiment>/
exp = Experiment(load_config(CONFIG, [f'data.root={root}', f'output_dir={output_dir}']), CONFIG)
config, fmt = exp.config, exp.fmt
print(f'experiment {exp.name}: format {config.format}, model {config.model.name}, {config.data.image_size} px')
print('data:', 'DATA_ROOT' if DATA_ROOT else 'the test images shipped in code/', '| TRAIN =', TRAIN)"""

DATA = """\
from src.data.cache import decode_table

heads = fmt.heads()  # what the model predicts: one head per task, its classes
for head in heads:
    print(f'head {head.name}: {head.kind}, {head.n_outputs} classes ({", ".join(head.class_names[:10])}'
          f'{", ..." if head.n_outputs > 10 else ""})')
from src.errors import PipelineError

try:
    test = fmt.read_test()  # the test images in submission order
    print(f'{len(test)} test images, e.g. {", ".join(test.ids[:3])}')
except PipelineError as error:  # e.g. a config whose test folder this copy does not hold
    test = None
    print(f'no test images here ({error}): set DATA_ROOT to the competition folder to predict them')
if DATA_ROOT:
    train = fmt.read_train()  # every training image with its targets per head
    targets = train.targets
    print(f'{len(train)} training images')
else:
    targets = exp.read_oof().targets  # no training images shipped: their labels, from the OOF file
for head in heads:
    values = targets[head.name]
    counts = np.bincount(values, minlength=head.n_outputs) if head.kind == 'softmax' else values.sum(axis=0)
    print(f'{head.name}: training images per class', dict(zip(head.class_names[:20], counts.tolist()[:20])))


def decode(table, what):
    \"\"\"Every image of `table` decoded and resized as training and prediction see it (uint8, S x S x 3).\"\"\"
    return decode_table(table.paths, config.data.image_size, OUT / 'image_cache', False, True, print, what,
                        config.data.max_pixels)


if test is not None:
    test_images, _ = decode(test, 'test images')
    fig, axes = plt.subplots(1, 8, figsize=(12, 1.9))
    for ax, image, image_id in zip(axes, test_images, test.ids):
        ax.imshow(image)
        ax.set_title(Path(image_id).name[:16], fontsize=8)
    for ax in axes:
        ax.axis('off')
    plt.show()"""

MODEL = """\
from torchinfo import summary
from src.model import build_model
from src.losses import MultiHeadLoss

model = build_model(config.model.name, heads)  # timm backbone without its classifier + one linear layer per head
size = config.data.image_size
print(summary(model, input_size=(1, 3, size, size), depth=2, verbose=0, col_names=('output_size', 'num_params')))
loss_fn = MultiHeadLoss(heads, config.train.loss)  # softmax heads: cross-entropy; multilabel heads: config's loss
print('loss:', config.train.loss)
print(f'AdamW, lr {config.train.lr}, {config.train.epochs} epochs, batch {config.train.batch_size}')
print('training callbacks (freezing, EMA, mixup, ...):', config.train.callbacks or 'none')"""

TRAINING = """\
from src.engine import RunInputs, train_run

if TRAIN:
    images, readable = decode(train, 'train images')
    fold_of_row = fmt.assign_folds(train, config.data.n_folds, config.data.fold_seed)  # as the `folds` stage
    folds = sorted(set(fold_of_row[fold_of_row >= 0].tolist()))
    for k in folds + ([None] if config.submit.checkpoint == 'full' else []):  # None: the full fit on every image
        train_rows = np.flatnonzero(readable & (fold_of_row != k)) if k is not None else np.flatnonzero(readable)
        valid_rows = np.flatnonzero(readable & (fold_of_row == k)) if k is not None else None
        inputs = RunInputs(config, fmt, images, train.targets, train_rows, valid_rows, exp.run_dir(k))
        state = train_run(inputs, quiet=True, log=lambda message: None)
        print(f'{exp.run_dir(k).name}: {state.next_epoch} epochs, best epoch {state.best_epoch}')
else:
    print('TRAIN = False: the runs shipped in code/oof/:',
          ', '.join(p.name for p in sorted(exp.oof_dir.iterdir()) if p.is_dir()))
for run in sorted(p for p in exp.oof_dir.iterdir() if (p / 'epochs.csv').is_file()):
    trainable = pd.read_csv(run / 'epochs.csv').get('trainable')  # the freezing schedule: what trained each epoch
    if trainable is not None:
        print(f'{run.name}, epochs 1..{len(trainable)} trained:', ' '.join(trainable.astype(str)))"""

OOF = """\
from src.artifacts import OofPredictions
from src.inference import load_inference_model, predict_rows
from src.runtime import runtime_from_config

runtime = runtime_from_config(config.train, inference=True)
if TRAIN:  # every training image predicted by the fold model that held it out, as the `oof` stage
    held_out = readable & (fold_of_row >= 0)
    probs = {head.name: np.zeros((len(train), head.n_outputs), np.float32) for head in heads}
    for k in folds:
        rows = np.flatnonzero(held_out & (fold_of_row == k))
        fold_model, _ = load_inference_model(exp.run_dir(k) / 'best.pt', fmt)
        for name, values in predict_rows(fold_model, config, heads, images, rows, runtime, quiet=True).items():
            probs[name][rows] = values
    keep = np.flatnonzero(held_out)
    OofPredictions([train.ids[i] for i in keep], fold_of_row[keep], {n: v[keep] for n, v in probs.items()},
                   {n: v[keep] for n, v in train.targets.items()}).write(exp.oof_path)
oof = exp.read_oof()
print(f'{len(oof.ids)} out-of-fold predictions from {len(set(oof.fold_of_row.tolist()))} fold models')"""

THRESHOLDS = """\
from src import thresholds as th
from src.formats.base import DecisionRules

if TRAIN:  # per-class thresholds by exact coordinate ascent on the OOF rows, shrunk toward the global one
    tuned = {}
    for head in [head for head in heads if head.thresholded]:
        p, t = oof.probs[head.name], oof.targets[head.name]
        value, _ = th.best_global_threshold(p, t, head.threshold_objective)
        exact = th.exact_thresholds(p, t, head.threshold_objective)
        tuned[head.name] = th.shrink_toward_global(exact, value, t.sum(axis=0), config.thresholds.shrink_strength)
    rules = DecisionRules(tuned, config.thresholds.min_labels, config.thresholds.max_labels) if tuned else None
else:
    rules = exp.decision_rules()  # the thresholds `submit` applied (code/oof/<experiment>/thresholds.json)
print('thresholded heads:', ', '.join(rules.thresholds) if rules and rules.thresholds else 'none (softmax heads: argmax)')"""

EVALUATION = """\
rows = []
for k in sorted(set(oof.fold_of_row.tolist())) + ['all']:
    part = oof.fold_of_row == k if k != 'all' else np.ones(len(oof.ids), bool)
    pick = lambda values: {name: array[part] for name, array in values.items()}
    rows.append({'fold': k, 'images': int(part.sum()), **fmt.evaluate(pick(oof.targets), pick(oof.probs), rules)})
display(pd.DataFrame(rows).set_index('fold').round(4))
at_half = fmt.evaluate(oof.targets, oof.probs, None)[fmt.main_metric]
print(f'OOF {fmt.main_metric}: {at_half:.4f} at 0.5 / argmax, {rows[-1][fmt.main_metric]:.4f} as submitted')
if exp.thresholds_path.exists() and not TRAIN:
    for head, table in json.loads(exp.thresholds_path.read_text()).get('honest', {}).items():
        print(f'{head}: optimistic (tuned and scored on the same rows) vs honest (nested) per method')
        display(pd.DataFrame(table).round(4))"""

CURVES = """\
runs = sorted(p for p in exp.oof_dir.iterdir() if (p / 'epochs.csv').is_file())
fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(11, 3.4))
for run in runs:
    epochs = pd.read_csv(run / 'epochs.csv')
    line, = loss_ax.plot(epochs['epoch'], epochs['train_loss'], label=f'{run.name} train')
    if 'valid_loss' in epochs and epochs['valid_loss'].notna().any():  # a full fit has no held-out rows
        loss_ax.plot(epochs['epoch'], epochs['valid_loss'], '--', color=line.get_color(), label=f'{run.name} valid')
    if 'score' in epochs and epochs['score'].notna().any():
        score_ax.plot(epochs['epoch'], epochs['score'], color=line.get_color(), label=run.name)
loss_ax.set(title='loss per epoch', xlabel='epoch')
score_ax.set(title=f'held-out {fmt.main_metric} per epoch', xlabel='epoch')
loss_ax.legend(fontsize=8)
score_ax.legend(fontsize=8)
plt.show()
from sklearn.metrics import confusion_matrix

for head in [head for head in heads if head.kind == 'softmax']:
    matrix = confusion_matrix(oof.targets[head.name], oof.probs[head.name].argmax(axis=1), labels=range(head.n_outputs))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.imshow(matrix, cmap='Blues')
    ax.set(title=f'{head.name}: OOF confusion matrix', xlabel='predicted', ylabel='true')
    if head.n_outputs <= 20:
        ax.set(xticks=range(head.n_outputs), yticks=range(head.n_outputs))
        for (i, j), n in np.ndenumerate(matrix):
            ax.text(j, i, n, ha='center', va='center', fontsize=7)
    plt.show()"""

PREDICTION = """\
checkpoint = exp.submission_checkpoint()  # the shipped best.pt (or the retrained one)
model, payload = load_inference_model(checkpoint, fmt)
print(f'{checkpoint.relative_to(HERE)}: {payload["model_name"]}, epoch {payload["epoch"]}')
files = []
if test is None:
    print('no test images: nothing to predict (set DATA_ROOT)')
else:
    test_probs = predict_rows(model, config, heads, test_images, np.arange(len(test)), runtime, quiet=True, desc='test')
    labels = fmt.decide(test_probs, rules)  # argmax for softmax heads, the thresholds for multilabel heads
    files = fmt.write_submission(OUT / 'predictions', test.ids, labels, test_probs)  # written and validated
    for file in files:
        lines = file.read_text().splitlines()
        print(f'{file.relative_to(HERE)}: {len(lines)} lines')
        print('\\n'.join(lines[:6]))
    first = heads[0]
    fig, axes = plt.subplots(1, 8, figsize=(12, 1.9))
    for ax, image, index in zip(axes, test_images, range(len(test))):
        ax.imshow(image)
        predicted = labels[first.name][index]
        shown = first.class_names[int(predicted)] if first.kind == 'softmax' else int(np.sum(predicted))
        ax.set_title(f'predicted {first.name}: {shown}', fontsize=8)
    for ax in axes:
        ax.axis('off')
    plt.show()"""

COMPARE = """\
SHIPPED = __SHIPPED__  # prediction file -> its name in this zip
for file in files:
    shipped_file = HERE / SHIPPED[file.name]
    same = shipped_file.is_file() and shipped_file.read_bytes() == file.read_bytes()
    print(f'{file.relative_to(HERE)} vs {SHIPPED[file.name]} in the zip:',
          'byte-identical' if same else 'different (other data, weights or thresholds)')"""


_MARKDOWN = {
    "data": "## 1. Data\n\nThe competition format (`src/formats/`) reads the competition's files into image paths "
    "and targets per head; `decode_table` (`src/data/cache.py`) decodes every image once and resizes it to the "
    "square the model sees. Without DATA_ROOT only the shipped test images are here; the training labels come "
    "from the shipped out-of-fold file.",
    "model": "## 2. Model and loss\n\nOne timm backbone (its classifier removed) feeding one linear layer per "
    "head, built by `src.model.build_model`; the loss is `src.losses.MultiHeadLoss` (cross-entropy for a "
    "softmax head, the config's multilabel loss otherwise, weighted per head).",
    "training": "## 3. Training\n\n`src.engine.train_run` trains one run from the config (AdamW, warm-up + "
    "cosine, the config's augmentations and callbacks) and keeps the best epoch's weights by the held-out "
    "score: every fold (for honest out-of-fold scores), then the run that predicts the test set. It runs only "
    "with `TRAIN = True`; as saved, the trained runs shipped in `code/oof/` are used. A config with "
    "`model.pretrained` fine-tunes from `input/weights/<tag>/` beside this notebook (the `weights` stage fetches "
    "it once; the folder demo's `demo` stage makes its own).",
    "oof": "## 4. Evaluation\n\nEvery training image predicted by the fold model that held it out (out-of-fold, "
    "OOF), the decision rules (thresholds for multilabel heads), the score per fold and overall, the curves per "
    "epoch and the confusion matrix.",
    "prediction": "## 5. Prediction\n\nThe submitted model's weights predict the test images "
    "(`src.inference.predict_rows`), the rules turn probabilities into labels and the format writes the "
    "prediction file and validates it; then it is compared with the file shipped in this zip.",
}


def build_notebook(exp, name: str, code: str, submissions: dict[str, str]):
    """The course notebook of `exp` (package `name`): `code` is the code folder's place in the zip, `submissions`
    maps each prediction file the format writes to its place in the zip (what the last cell compares with)."""
    import nbformat.v4 as nbf

    fill = {"__CONFIG__": repr(f"{exp.name}.yaml"), "__CODE__": repr(code), "__SHIPPED__": repr(submissions)}

    def code_cell(source: str):
        for key, value in fill.items():
            source = source.replace(key, value)
        return nbf.new_code_cell(source)

    title = (
        f"# {name}: {exp.name}\n\nThe whole pipeline of this submission ({exp.config.format} format, "
        f"`{exp.config.model.name}`), step by step, with the project's code in `{code}/` (see Readme.txt). As "
        "saved, `TRAIN = False`: the shipped weights predict the shipped test images, and the prediction file is "
        "written again. Set `DATA_ROOT` to the competition folder to use your copy of the data, and "
        "`TRAIN = True` as well to train again first."
    )
    cells = [nbf.new_markdown_cell(title), code_cell(PARAMETERS), code_cell(SETUP)]
    for key, sources in (
        ("data", [DATA]),
        ("model", [MODEL]),
        ("training", [TRAINING]),
        ("oof", [OOF, THRESHOLDS, EVALUATION, CURVES]),
        ("prediction", [PREDICTION, COMPARE]),
    ):
        cells += [nbf.new_markdown_cell(_MARKDOWN[key]), *(code_cell(source) for source in sources)]
    notebook = nbf.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def execute_notebook(notebook, folder: Path, shown_as: Path):
    """Run every cell with `folder` as the working directory; stop at the first failing cell with one line."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, DeadKernelError

    with tempfile.TemporaryDirectory(prefix="kernelspec-") as spec_root:
        spec_dir = Path(spec_root) / KERNEL_NAME
        spec_dir.mkdir()
        (spec_dir / "kernel.json").write_text(
            json.dumps(
                {
                    "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    "display_name": "Python (this pipeline)",
                    "language": "python",
                }
            )
        )
        # IPC sockets in the temporary folder: nothing listens on TCP, and the kernel's channels stay private.
        manager = KernelManager(
            kernel_name=KERNEL_NAME,
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[spec_root]),
            transport="ipc",
            ip=str(Path(spec_root) / "kernel"),
        )
        client = NotebookClient(
            notebook,
            km=manager,
            timeout=CELL_TIMEOUT_S,
            allow_errors=False,
            resources={"metadata": {"path": str(folder)}},
        )
        try:
            with watch_process(
                lambda: getattr(manager.provisioner, "pid", None),
                f"{shown_as}: the notebook's kernel",
                "check memory (a smaller batch or image size), then package again",
            ):
                client.execute()
        except CellExecutionError as exc:
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # the kernel's traceback is coloured
            error = next((line for line in reversed(text.splitlines()) if line.strip()), "a cell failed")
            raise PipelineError(
                f"{shown_as}: a notebook cell failed ({error[:200]}); run the stages it runs by hand "
                "to see the full error"
            ) from None
        except DeadKernelError as exc:
            raise PipelineError(
                f"{shown_as}: the notebook's kernel died ({exc}); check memory and that ipykernel is "
                "installed (pip install -r requirements.txt)"
            ) from None
        finally:
            if manager.has_kernel:  # nbclient leaves a kernel it was handed running
                _stop_kernel(manager)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


def _stop_kernel(manager) -> None:
    """Shut the kernel down; when its sockets are gone already (nbclient closed them after the kernel died), kill
    its process instead of raising over the error that is being reported."""
    import zmq

    try:
        manager.shutdown_kernel()
    except zmq.ZMQError:
        pid = getattr(manager.provisioner, "pid", None)
        if pid is not None and process_alive(pid):
            os.kill(pid, signal.SIGKILL)


def error_outputs(notebook) -> list[str]:
    """`ename: evalue` of every error output the notebook holds (an executed notebook should hold none)."""
    return [
        f"{output.get('ename')}: {output.get('evalue')}"
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
