"""The course notebook: built with nbformat, run headless with nbclient on this interpreter, saved with its outputs.

The notebook runs the pipeline from the packaged code (`code/` beside it): with TRAIN = False (as
saved) only the report stage, from the trained run's saved artifacts, then it shows the report's
figures, the resource and per-class tables and the head of the prediction file; TRAIN = True runs
every stage first (folds, train, oof, thresholds, submit). The kernel is this process's own Python
(a kernelspec written to a temporary folder), so the packages the pipeline needs are the ones there.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path

from src.errors import PipelineError
from src.watchdog import process_alive, watch_process

KERNEL_NAME = "src-stage-python"
CELL_TIMEOUT_S = 1800


def build_notebook(title: str, config_relative: str, train_commands: list[list[str]], submission_files: list[str]):
    """A notebook that runs the stages from `code/` (beside it) with `config_relative` (relative to `code/`)."""
    import nbformat.v4 as nbf

    cells = [
        nbf.new_markdown_cell(
            f"# {title}\n\nRuns this project's pipeline from the code in `code/` (see Readme.txt). "
            "As saved, `TRAIN = False`: only the `report` stage runs, from the trained run's saved "
            "artifacts (nothing is retrained), and the figures and tables below come from it. Set "
            "`TRAIN = True` to run every stage first: "
            + ", ".join(f"`{' '.join(c)}`" for c in train_commands)
            + ". Add `key.path=value` overrides (e.g. `data.root=/path/to/data`) to `OVERRIDES`."
        ),
        nbf.new_code_cell(
            "import os, re, sys, json, warnings\nfrom pathlib import Path\n\n"
            "warnings.filterwarnings('ignore', message='IProgress not found')  # tqdm: no widgets here, no bars\n"
            "CODE = Path('code').resolve() if Path('code').is_dir() else Path.cwd()  # run again: already in code/\n"
            "sys.path.insert(0, str(CODE))\nos.chdir(CODE)  # the config's relative paths are relative to code/\n"
            f"CONFIG = {config_relative!r}\nOVERRIDES = []\nTRAIN = False\n\n"
            "from src.stage import main\nfrom src.config import load_config\nfrom src.artifacts import Experiment\n"
            "exp = Experiment(load_config(CONFIG, OVERRIDES), Path(CONFIG))\n"
            "print(exp.name, exp.config.format, exp.config.model.name)"
        ),
        nbf.new_code_cell(
            f"TRAIN_COMMANDS = {json.dumps(train_commands)}\nif TRAIN:\n    for command in TRAIN_COMMANDS:\n"
            "        assert main([command[0], '--config', CONFIG, *command[1:], *OVERRIDES, '--quiet']) == 0, command\n"
            "else:\n    print('TRAIN = False: using the trained run in', exp.oof_dir)"
        ),
        nbf.new_code_cell("assert main(['report', '--config', CONFIG, *OVERRIDES, '--quiet']) == 0"),
        nbf.new_markdown_cell(
            "## Figures of the report (model diagram, curves per epoch, ROC / PR, confusion, examples)"
        ),
        nbf.new_code_cell(
            "from IPython.display import Image, display\n"
            "markdown = (exp.report_dir / 'report.md').read_text()\n"
            "for name in re.findall(r'!\\[[^\\]]*\\]\\(([^)]+\\.png)\\)', markdown):\n"
            "    print(name)\n    display(Image(filename=str(exp.report_dir / name)))"
        ),
        nbf.new_markdown_cell("## Resources and per-class results"),
        nbf.new_code_cell(
            "import pandas as pd\npd.set_option('display.max_rows', 80)\n"
            "tables = json.loads((exp.report_dir / 'tables.json').read_text())\n"
            "display(pd.DataFrame(tables['resources']).set_index('run').T)\n"
            "for key in [k for k in tables if k.startswith(('per_class_', 'attribute_accuracy_'))]:\n"
            "    print(key)\n    display(pd.DataFrame(tables[key]))"
        ),
        nbf.new_markdown_cell("## The prediction file(s)"),
        nbf.new_code_cell(
            f"for name in {submission_files!r}:\n    path = exp.submission_dir / name\n"
            "    lines = path.read_text().splitlines()\n"
            "    print(f'{path}: {len(lines)} lines'); print('\\n'.join(lines[:8]))"
        ),
    ]
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
            error = next((line for line in reversed(str(exc).splitlines()) if line.strip()), "a cell failed")
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
