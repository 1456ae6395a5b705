"""`status` over artifact layouts the stages write: finished, half-trained, config-only, kernel built.

The real stages' files are checked in tests/test_report.py (the status of the tiny experiment);
here the layouts are written by hand so every state is covered in milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from src.steps import status


def write_run(run_dir: Path, scores: list[float], finished: bool = True) -> None:
    run_dir.mkdir(parents=True)
    pd.DataFrame(
        {"epoch": range(1, len(scores) + 1), "train_loss": 0.5, "valid_loss": 0.6, "score": scores, "seconds": 2.0}
    ).to_csv(run_dir / "epochs.csv", index=False)
    (run_dir / "best.pt").write_bytes(b"weights")
    (run_dir / "config.json").write_text(json.dumps({"data": {"n_folds": 3}}))
    if finished:
        best = max(range(len(scores)), key=scores.__getitem__)
        (run_dir / "summary.json").write_text(
            json.dumps(
                {"best_epoch": best + 1, "best_score": scores[best], "epochs_run": len(scores), "finished": True}
            )
        )


def make_layout(tmp_path: Path) -> tuple[Path, Path]:
    out, configs = tmp_path / "out", tmp_path / "configs"
    configs.mkdir()
    (configs / "done.yaml").write_text("competition: c\nformat: imet\ndata:\n  root: x\n  n_folds: 4\n")
    (configs / "planned.yaml").write_text("competition: c\nformat: imet\ndata:\n  root: x\n  n_folds: 4\n")
    done = out / "oof" / "done"
    write_run(done / "fold-0", [0.40, 0.55, 0.50])
    write_run(done / "fold-1", [0.45, 0.52, 0.58])
    write_run(done / "fold-2", [0.30, 0.41], finished=False)  # stopped with --stop-after-epochs
    write_run(done / "full", [0.0, 1.0])
    (done / "oof.npz").write_bytes(b"npz")
    (done / "oof_scores.json").write_text(
        json.dumps(
            [{"rows": "fold 0", "images": 5, "at 0.5": 0.4}, {"rows": "overall", "images": 10, "at 0.5": 0.4321}]
        )
    )
    (done / "threshold_scores.json").write_text(
        json.dumps([{"rows": "overall", "images": 10, "at 0.5": 0.4321, "tuned (exact)": 0.5678}])
    )
    (done / "thresholds.json").write_text(
        json.dumps(
            {
                "method": "exact",
                "heads": {
                    "attributes": {
                        "class_names": ["a", "b"],
                        "global": 0.125,
                        "methods": {"exact": [0.1, 0.2]},
                        "label_count_rule": {"min_labels": 0, "max_labels": None},
                    }
                },
                "honest": {
                    "attributes": [
                        {"method": "global", "optimistic": 0.55, "honest": 0.54},
                        {"method": "exact", "optimistic": 0.5678, "honest": 0.5512},
                    ]
                },
            }
        )
    )
    (done / "report").mkdir()
    (done / "report" / "index.html").write_text("<html></html>")
    (out / "submissions" / "done").mkdir(parents=True)
    for name in ("submission.csv", "test_probs.npz", "test_scores.json"):
        (out / "submissions" / "done" / name).write_text("{}")
    (out / "submissions" / "done" / "package").mkdir()
    (out / "submissions" / "done" / "package" / "RollNumber_06.zip").write_bytes(b"PK")
    (out / "kernels" / "done").mkdir(parents=True)
    (out / "kernels" / "done" / "kernel-metadata.json").write_text(json.dumps({"id": "me/done-kernel"}))
    (out / "oof" / "_image_cache").mkdir()
    (out / "oof" / "orphan" / "fold-0").mkdir(parents=True)  # a run folder whose config was deleted
    return out, configs


def test_status_lists_every_experiment_with_its_artifacts(tmp_path):
    out, configs = make_layout(tmp_path)
    lines: list[str] = []
    rows = {row["experiment"]: row for row in status.show(out, configs, lines.append)}
    assert set(rows) == {"done", "planned", "orphan"}  # the image cache is not an experiment

    done = rows["done"]
    assert done["n_folds"] == 3  # the resolved config a run saved wins over the YAML (overrides included)
    assert done["folds_trained"] == 3
    assert [(f["fold"], f["best_epoch"], f["best_score"], f["finished"]) for f in done["folds"]] == [
        (0, 2, 0.55, True),
        (1, 3, 0.58, True),
        (2, 2, 0.41, False),
    ]
    assert done["full_fit"]["finished"] is True
    assert (done["oof_score"], done["oof_score_tuned"]) == (0.4321, 0.5678)
    assert done["thresholds"] == {
        "method": "exact",
        "global": {"attributes": 0.125},
        "optimistic": {"attributes": 0.5678},
        "honest": {"attributes": 0.5512},
    }
    assert done["submission_files"] == [str(out / "submissions" / "done" / "submission.csv")]
    assert done["kernel"] == "me/done-kernel"
    assert done["report"] == str(out / "oof" / "done" / "report" / "index.html")
    assert done["paths"]["kernel"] == str(out / "kernels" / "done")
    assert done["paths"]["package"] == str(out / "submissions" / "done" / "package" / "RollNumber_06.zip")

    planned = rows["planned"]
    assert (planned["folds_trained"], planned["n_folds"], planned["oof_score"], planned["paths"]) == (
        0,
        4,
        None,
        {"config": str(configs / "planned.yaml")},
    )
    assert rows["orphan"]["config"] is None and rows["orphan"]["folds_trained"] == 0

    text = "\n".join(lines)
    table_line = next(line for line in lines[1].splitlines() if line.strip().startswith("done"))
    assert "3/3" in table_line and "0:e2=0.5500" in table_line and "2:e2=0.4100…" in table_line
    assert "0.4321" in table_line and "exact: 0.5678/0.5512 (global 0.125)" in table_line
    assert "me/done-kernel" in table_line
    assert str(out / "submissions" / "done" / "submission.csv") in text


def test_status_of_nothing(tmp_path):
    lines: list[str] = []
    assert status.show(tmp_path / "out", tmp_path / "configs", lines.append) == []
    assert lines and "no experiments" in lines[0]


def test_status_shows_a_damaged_thresholds_file_instead_of_stopping(tmp_path):
    out, configs = make_layout(tmp_path)
    (out / "oof" / "done" / "thresholds.json").write_text('{"method": "exact", "heads": 3}')
    lines: list[str] = []
    rows = {row["experiment"]: row for row in status.show(out, configs, lines.append)}
    assert rows["done"]["thresholds"]["method"] == "damaged" and rows["done"]["oof_score_tuned"] is None


def test_status_counts_held_out_folds_from_the_folds_file(tmp_path):
    """CelebA's official split holds out one fold whatever data.n_folds says."""
    root = tmp_path / "competition"
    root.mkdir()
    pd.DataFrame({"id": ["a", "b", "c"], "fold": [-1, -1, 0]}).to_csv(root / "folds-k5-seed42.csv", index=False)
    run_dir = tmp_path / "out" / "oof" / "official" / "fold-0"
    write_run(run_dir, [0.7, 0.8])
    (run_dir / "config.json").write_text(json.dumps({"data": {"root": str(root), "n_folds": 5, "fold_seed": 42}}))
    [row] = status.show(tmp_path / "out", tmp_path / "configs", lambda line: None)
    assert (row["folds_trained"], row["n_folds"]) == (1, 1)


def test_status_reads_the_folds_file_the_formats_own_scheme_names(tmp_path):
    """A format with its own fold scheme (an official split) names its folds file; status asks the format which."""
    from src.artifacts import folds_file
    from src.formats import folds_scheme_of, format_names

    name = next(name for name in format_names() if folds_scheme_of(name))
    root = tmp_path / "competition"
    root.mkdir()
    pd.DataFrame({"id": ["a", "b", "c"], "fold": [-1, -1, 0]}).to_csv(
        folds_file(root, 5, 42, folds_scheme_of(name)), index=False
    )
    pd.DataFrame({"id": ["a", "b", "c"], "fold": [0, 1, 2]}).to_csv(folds_file(root, 5, 42), index=False)
    run_dir = tmp_path / "out" / "oof" / "official" / "fold-0"
    write_run(run_dir, [0.7, 0.8])
    saved = {"format": name, "format_options": {}, "data": {"root": str(root), "n_folds": 5, "fold_seed": 42}}
    (run_dir / "config.json").write_text(json.dumps(saved))
    lines: list[str] = []
    [row] = status.show(tmp_path / "out", tmp_path / "configs", lines.append)
    assert (row["folds_trained"], row["n_folds"]) == (1, 1)
    assert "1/1 (official split)" in lines[1]  # not mistaken for K folds of which one ran
    # Before its folds file exists the official split's count is unknown: not data.n_folds' 5.
    folds_file(root, 5, 42, folds_scheme_of(name)).unlink()
    [row] = status.show(tmp_path / "out", tmp_path / "configs", lines.append)
    assert row["n_folds"] is None


def test_status_names_configs_that_do_not_load_and_says_what_each_score_is(tmp_path):
    out, configs = make_layout(tmp_path)
    (configs / "typo.yaml").write_text("competition: c\nformat: imet\ndata:\n  root: x\n  imge_size: 3\n")
    lines: list[str] = []
    status.show(out, configs, lines.append)
    broken = [line for line in lines if "does not load" in line]
    assert broken == [
        f"config typo does not load: {configs / 'typo.yaml'} line 5: data.imge_size: unknown key; "
        "did you mean 'image_size'?"
    ]
    legend = next(line for line in lines if line.startswith("scores:"))
    assert "per fold = the fold's held-out rows at its best epoch" in legend and "honest (nested)" in legend


def test_status_reports_the_image_cache_and_clean_cache_deletes_all_but_a_build_in_progress(tmp_path, capsys):
    import fcntl

    from PIL import Image

    from src.data.cache import load_or_build
    from src.stage import main

    cache_dir = tmp_path / "out" / "oof" / "_image_cache"
    images = [tmp_path / f"{i}.png" for i in range(3)]
    for path in images:
        Image.new("RGB", (16, 16), (40, 50, 60)).save(path)
    load_or_build(images, 8, cache_dir, skip_unreadable=False, quiet=True)
    load_or_build(images, 12, cache_dir, skip_unreadable=False, quiet=True)
    (cache_dir / ".deadbeef.npy.x1.tmp").write_bytes(b"left by a killed build")
    size = sum(p.stat().st_size for p in cache_dir.iterdir())

    lines: list[str] = []
    status.show(tmp_path / "out", tmp_path / "configs", lines.append)
    assert any(
        line.startswith("image cache: 2 decoded image set(s)") and "status --clean-cache" in line for line in lines
    )

    busy_key = sorted(cache_dir.glob("*.npy"))[0].stem
    with open(cache_dir / f"{busy_key}.lock", "a") as held:  # another process building this set right now
        fcntl.flock(held, fcntl.LOCK_EX)
        assert (
            main(
                [
                    "status",
                    "--output-dir",
                    str(tmp_path / "out"),
                    "--configs",
                    str(tmp_path / "configs"),
                    "--clean-cache",
                ]
            )
            == 0
        )
    out = capsys.readouterr().out
    freed = size - sum(p.stat().st_size for p in cache_dir.iterdir())
    assert f"deleted 1 image set(s), {freed / 2**30:.2f} GB freed" in out and "1 being built, left alone" in out
    assert sorted(p.name for p in cache_dir.iterdir()) == [f"{busy_key}.json", f"{busy_key}.lock", f"{busy_key}.npy"]
    assert load_or_build(images, 8, cache_dir, skip_unreadable=False, quiet=True).images.shape == (
        3,
        8,
        8,
        3,
    )  # rebuilt


def test_status_shows_the_public_score_beside_the_honest_oof_and_plots_them(tmp_path, capsys):
    from src.stage import main

    out, configs = make_layout(tmp_path)
    (out / "submissions" / "done" / "kaggle.json").write_text(
        json.dumps(
            {
                "submissions": [
                    {
                        "competition": "c",
                        "file": "submissions/done/submission.csv",
                        "message": "m",
                        "ref": 7,
                        "status": "complete",
                        "public_score": 0.53,
                        "private_score": None,
                    }
                ]
            }
        )
    )
    (out / "submissions" / "planned").mkdir(parents=True)
    (out / "submissions" / "planned" / "kaggle.json").write_text(
        json.dumps(
            {"submissions": [{"competition": "c", "file": "submission.csv", "message": "m", "status": "pending"}]}
        )
    )

    assert main(["status", "--output-dir", str(out), "--configs", str(configs), "--plot"]) == 0

    printed = capsys.readouterr().out
    png = out / "oof" / "_leaderboard" / "cv-vs-public.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"CV vs leaderboard (1 point(s)): {png}" in printed  # the pending one has no public score yet
    done = next(line for line in printed.splitlines() if line.strip().startswith("done"))
    planned = next(line for line in printed.splitlines() if line.strip().startswith("planned"))
    assert "0.5512 / 0.5300" in done and "- / pending" in planned
    rows = {row["experiment"]: row for row in status.show(out, configs, [].append)}
    assert "_leaderboard" not in rows
    assert rows["done"]["submission_files"] == [str(out / "submissions" / "done" / "submission.csv")]


def test_plot_without_any_public_score_draws_nothing(tmp_path):
    out, configs = make_layout(tmp_path)
    lines: list[str] = []
    status.run(None, output_dir=out, configs=configs, plot=True, log=lines.append)
    assert "nothing plotted" in lines[-1] and not (out / "oof" / "_leaderboard").exists()


def test_an_alias_bomb_among_the_configs_does_not_hang_status(tmp_path):
    from helpers import alias_bomb_yaml

    from src.steps.status import _experiment_config

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb_yaml())
    assert _experiment_config([], bomb) == {}  # shown as an unknown config, not expanded
