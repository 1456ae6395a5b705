"""Stage `bench`: data-path (training and inference, per model), thresholds, folds and memory figures, measured
side by side in one run.

Uses the config's model (or `--models`), image size, batch sizes, threads and num_workers (default: the demo config
at 64 px) on real demo images built in a temporary folder; prints a table and writes the JSON.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from src.atomic import write_text
from src.bench import FULL, QUICK, run_all, summary_table


def model_names(models: str | None) -> list[str] | None:
    """'a,b' -> ['a', 'b'] (timm names, each known to timm), None -> None (the config's model)."""
    if models is None:
        return None
    import timm

    from src.errors import PipelineError

    names = [name.strip() for name in models.split(",") if name.strip()]
    unknown = [name for name in names if not timm.is_model(name)]
    if not names or unknown:
        raise PipelineError(
            f"bench --models: {', '.join(unknown) or repr(models)} is not a timm model name; "
            "give comma-separated names, e.g. resnet10t,resnet18,mobilenetv3_small_100"
        )
    return names


def default_json(output_dir: Path, quick: bool) -> Path:
    """Where bench writes by default: `src.artifacts.bench_json_path`."""
    from src.artifacts import bench_json_path

    return bench_json_path(output_dir, quick)


def run(
    exp,
    quick: bool = False,
    out_json: Path | None = None,
    models: str | None = None,
    quiet: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Run every benchmark section; write the result to `out_json` (default <output_dir>/oof/_bench/bench[-quick].json).

    `models` ('resnet10t,resnet18', timm names) measures the data path for each, from scratch (default: the
    config's model). Without --config the stage table hands in the demo config at the goal's 64 px (it trains at 32 px).
    """
    config = exp.config
    sizes = QUICK if quick else FULL
    if out_json is None:
        out_json = default_json(config.output_dir, quick)
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        result = run_all(config, sizes, workdir, log, model_names(models))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["config"] = str(exp.config_path)
    write_text(Path(out_json), json.dumps(result, indent=2))
    log("\n" + summary_table(result))
    log(f"wrote {out_json}")
    return result
