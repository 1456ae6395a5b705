"""Leaderboard scores after an upload (src/kaggle/local/leaderboard.py, `submit --kaggle`), DeepFashion's two files
to two competitions: the REAL `kaggle` CLI against the fake server in fake_kaggle_server.py."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import tiny_config  # noqa: E402

from src.artifacts import Experiment, LeaderboardRecord  # noqa: E402
from src.config import load_config  # noqa: E402
from src.demo import build_demo  # noqa: E402
from src.errors import PipelineError  # noqa: E402
from src.kaggle.local import cli  # noqa: E402
from src.steps import status  # noqa: E402
from src.steps import submit as submit_step  # noqa: E402

FAST = {"score_wait_s": 20, "score_poll_s": 0.01}
TWO = {"category": "df-category", "attributes": "df-attributes"}


def _experiment(tmp_path: Path, format_name: str, submit: dict) -> tuple[Experiment, list[Path]]:
    """A demo competition and a valid submission of it in submissions/<exp>/ (its held-apart answers)."""
    paths = build_demo(format_name, tmp_path / "input" / f"demo-{format_name}", n_train=80, n_test=6)
    config_path = tiny_config(tmp_path, format_name, paths.root, extra={"submit": {**FAST, **submit}})
    exp = Experiment(load_config(config_path), config_path)
    exp.submission_dir.mkdir(parents=True)
    files = [
        Path(shutil.copy(path, exp.submission_dir / name))
        for path, name in zip(paths.solution_files, exp.fmt.submission_names())
    ]
    return exp, files


def test_submissions_are_read_from_the_cli_csv(fake_kaggle, tmp_path):
    fake_kaggle.competition_files["c"] = {}
    assert cli.list_submissions("c") == []  # the CLI prints "No submissions found"
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("id\n")
    second.write_text("id\n")
    cli.submit_file("c", first, 'tta, "v2"')  # a message the CSV has to quote
    cli.submit_file("c", second, "plain")
    fake_kaggle.scores["c"] = ("0.61234", "0.59876")
    fake_kaggle.pending_listings = 1

    pending = cli.list_submissions("c")
    scored = cli.list_submissions("c")

    assert [(row.ref, row.file_name, row.description, row.status) for row in pending] == [
        (1001, "b.csv", "plain", "pending"),
        (1000, "a.csv", 'tta, "v2"', "pending"),
    ]
    assert pending[0].public_score is None and pending[0].private_score is None
    assert [(row.status, row.public_score, row.private_score) for row in scored] == [("complete", 0.61234, 0.59876)] * 2


def test_submit_waits_for_the_public_score_and_status_shows_it_beside_the_cv(fake_kaggle, tmp_path):
    exp, files = _experiment(tmp_path, "imet", {})
    fake_kaggle.competition_files["demo-imet"] = {}
    fake_kaggle.scores["demo-imet"] = ("0.71", None)
    fake_kaggle.pending_listings = 2
    logs: list[str] = []

    record = submit_step.upload(exp, files, logs.append)

    [entry] = record.submissions
    assert (entry.competition, entry.status, entry.public_score, entry.private_score) == (
        "demo-imet",
        "complete",
        0.71,
        None,
    )
    assert entry.ref == 1000 and entry.file == str(files[0]) and entry.message == "single model"
    assert LeaderboardRecord.read(exp.kaggle_scores_path) == record
    assert "submission.csv -> demo-imet (ref 1000): public score 0.71000" in logs
    assert any(line.startswith("waiting for Kaggle to score submission.csv") for line in logs)
    (exp.oof_dir).mkdir(parents=True)
    (exp.thresholds_path).write_text(
        json.dumps(
            {
                "method": "exact",
                "heads": {},
                "honest": {"attributes": [{"method": "exact", "optimistic": 0.8, "honest": 0.75}]},
            }
        )
    )
    [row] = [row for row in status.show(exp.output_dir, tmp_path / "configs", [].append) if row["experiment"] == "tiny"]
    assert row["leaderboard"] == [
        {
            "head": None,
            "competition": "demo-imet",
            "honest": 0.75,
            "public": 0.71,
            "private": None,
            "status": "complete",
        }
    ]
    assert status._display(row)["CV honest / public LB"] == "0.7500 / 0.7100"
    assert exp.kaggle_scores_path not in map(Path, row["submission_files"])


def test_the_wait_is_bounded_and_a_pending_score_is_recorded(fake_kaggle, tmp_path):
    exp, files = _experiment(tmp_path, "imet", {"score_wait_s": 0.3, "score_poll_s": 0.1})
    fake_kaggle.competition_files["demo-imet"] = {}
    fake_kaggle.pending_listings = 10**6
    logs: list[str] = []

    record = submit_step.upload(exp, files, logs.append)

    assert [(e.status, e.ref, e.public_score) for e in record.submissions] == [("pending", 1000, None)]
    assert any("not scored after 0 s; `kaggle competitions submissions demo-imet`" in line for line in logs)
    assert len(fake_kaggle.rpc_bodies("ListSubmissions")) <= 5


def test_deepfashion_uploads_each_file_to_its_competition(fake_kaggle, tmp_path):
    exp, files = _experiment(tmp_path, "deepfashion", {"kaggle_competitions": TWO})
    fake_kaggle.competition_files.update({"df-category": {}, "df-attributes": {}})
    fake_kaggle.scores.update({"df-category": ("0.9", None), "df-attributes": ("0.55", None)})
    logs: list[str] = []

    record = submit_step.upload(exp, files, logs.append)

    sent = {
        body["competitionName"]: fake_kaggle.uploads[body["blobFileTokens"]]
        for body in fake_kaggle.rpc_bodies("CreateSubmission")
    }
    assert sent == {"df-category": files[0].read_bytes(), "df-attributes": files[1].read_bytes()}
    assert [(e.head, Path(e.file).name, e.competition, e.public_score) for e in record.submissions] == [
        ("category", "category.csv", "df-category", 0.9),
        ("attributes", "attribute.csv", "df-attributes", 0.55),
    ]
    assert "submitted category.csv to df-category and attribute.csv to df-attributes" in logs


def test_deepfashion_validates_both_files_before_uploading_either(fake_kaggle, tmp_path):
    exp, files = _experiment(tmp_path, "deepfashion", {"kaggle_competitions": TWO})
    fake_kaggle.competition_files.update({"df-category": {}, "df-attributes": {}})
    files[1].write_text(
        files[1]
        .read_text()
        .replace("file_path,attribute_label\n", "file_path,attribute_label\nnot/an/image.jpg,1\n", 1)
    )

    with pytest.raises(PipelineError, match="attribute.csv"):
        submit_step.upload(exp, files, [].append)

    assert fake_kaggle.uploads == {} and not exp.kaggle_scores_path.exists()


def test_a_failed_second_upload_says_the_first_went_through(fake_kaggle, tmp_path):
    exp, files = _experiment(tmp_path, "deepfashion", {"kaggle_competitions": TWO})
    fake_kaggle.competition_files["df-category"] = {}  # df-attributes is unknown to Kaggle: its upload fails

    with pytest.raises(PipelineError) as failed:
        submit_step.upload(exp, files, [].append)

    message = str(failed.value)
    assert "\n" not in message and message.startswith(f"{files[1]}: the upload to df-attributes failed")
    assert f"{files[0]} to df-category went through already" in message
    assert f"kaggle competitions submit df-attributes -f {files[1]}" in message
    assert [body["competitionName"] for body in fake_kaggle.rpc_bodies("CreateSubmission")] == ["df-category"]


@pytest.mark.parametrize(
    "competitions, expected",
    [
        (
            {},
            "names no head; this format writes 2 files, one per head: set a competition slug for each of "
            "category (category.csv), attributes (attribute.csv)",
        ),
        ({"category": "df-category"}, "names category; this format writes 2 files"),
    ],
)
def test_two_files_need_a_competition_each(fake_kaggle, tmp_path, competitions, expected):
    exp, files = _experiment(tmp_path, "deepfashion", {"kaggle_competitions": competitions})

    with pytest.raises(
        PipelineError, match="submit.kaggle_competitions " + expected.replace("(", r"\(").replace(")", r"\)")
    ):
        submit_step.upload(exp, files, [].append)
    assert fake_kaggle.requests == []


def test_a_bad_slug_is_a_config_error(tmp_path):
    config_path = tiny_config(tmp_path, "imet", tmp_path, extra={"submit": {"kaggle_competitions": {"a": "no slug"}}})
    with pytest.raises(PipelineError, match="submit.kaggle_competitions.*'no slug' is not a competition slug"):
        load_config(config_path)


def test_a_pending_score_is_recorded_later_by_status_refresh_scores(fake_kaggle, tmp_path):
    exp, files = _experiment(tmp_path, "imet", {"score_wait_s": 0.0, "score_poll_s": 0.1})
    fake_kaggle.competition_files["demo-imet"] = {}
    fake_kaggle.scores["demo-imet"] = ("0.6543", None)
    fake_kaggle.pending_listings = 2
    submit_step.upload(exp, files, [].append)
    [pending] = LeaderboardRecord.read(exp.kaggle_scores_path).submissions
    assert (pending.status, pending.ref, pending.listed_before) == ("pending", 1000, 0)
    logs: list[str] = []

    status.run(output_dir=exp.output_dir, configs=tmp_path / "configs", refresh_scores=True, log=logs.append)
    assert LeaderboardRecord.read(exp.kaggle_scores_path).submissions[0].status == "pending"  # Kaggle: not yet
    assert any(line.startswith("tiny: submission.csv -> demo-imet (ref 1000): still pending") for line in logs)
    rows = status.run(output_dir=exp.output_dir, configs=tmp_path / "configs", refresh_scores=True, log=logs.append)

    [entry] = LeaderboardRecord.read(exp.kaggle_scores_path).submissions
    assert (entry.status, entry.ref, entry.public_score) == ("complete", 1000, 0.6543)
    assert "tiny: submission.csv -> demo-imet (ref 1000): public score 0.65430" in logs
    [row] = [row for row in rows if row["experiment"] == "tiny"]
    assert row["leaderboard"][0]["public"] == 0.6543 and row["leaderboard"][0]["status"] == "complete"
    logs.clear()
    status.run(output_dir=exp.output_dir, configs=tmp_path / "configs", refresh_scores=True, log=logs.append)
    assert "leaderboard: no upload is waiting for a score" in logs
    assert len(fake_kaggle.rpc_bodies("ListSubmissions")) == 4  # before the upload, after it, two refreshes


def test_a_refresh_tells_the_upload_from_older_ones_with_the_same_file_and_message(fake_kaggle, tmp_path):
    exp, files = _experiment(tmp_path, "imet", {})
    fake_kaggle.competition_files["demo-imet"] = {}
    cli.submit_file("demo-imet", files[0], "single model")  # ref 1000: an older upload of the same file and message
    cli.submit_file("demo-imet", files[0], "single model")  # ref 1001: the one the record is about
    never_listed = LeaderboardRecord(
        submissions=[
            {"competition": "demo-imet", "file": str(files[0]), "message": "single model", "listed_before": 1000}
        ]
    )
    never_listed.write(exp.kaggle_scores_path)

    status.refresh_leaderboards(exp.output_dir, ["tiny"], [].append)
    assert LeaderboardRecord.read(exp.kaggle_scores_path).submissions[0].ref == 1001

    unknown = LeaderboardRecord(
        submissions=[{"competition": "demo-imet", "file": str(files[0]), "message": "single model"}]
    )
    unknown.write(exp.kaggle_scores_path)  # written before records kept the last ref listed: no safe match
    logs: list[str] = []
    status.refresh_leaderboards(exp.output_dir, ["tiny"], logs.append)
    assert LeaderboardRecord.read(exp.kaggle_scores_path) == unknown
    assert any("cannot be told from older ones" in line for line in logs)


def test_no_upload_when_no_submission_is_left_today(fake_kaggle, tmp_path):
    exp, files = _experiment(tmp_path, "imet", {})
    fake_kaggle.competition_files["demo-imet"] = {}
    fake_kaggle.submission_limits = {"numToday": 5, "numTotal": 40, "numAllowedNow": 0}
    with pytest.raises(PipelineError) as error:
        submit_step.upload(exp, files, [].append)
    assert str(error.value) == (
        "demo-imet: no submission left today (5 made today); nothing was uploaded: submit again after Kaggle's daily "
        "reset (00:00 UTC)"
    )
    assert not fake_kaggle.submissions and not fake_kaggle.rpc_bodies("StartSubmissionUpload")


def test_submission_limits_are_read_from_the_cli_and_unknown_before_a_first_submission(fake_kaggle):
    fake_kaggle.submission_limits = {"numToday": 2, "numTotal": 9, "numAllowedNow": 3}
    assert cli.submissions_left_today("demo-imet") == (3, 2)
    fake_kaggle.submission_limits = {}  # no team yet: Kaggle answers zeros, which is not "none left"
    assert cli.submissions_left_today("demo-imet") is None


def test_a_listing_with_odd_cells_records_no_false_score():
    """Scores that are not finite numbers are no scores (the entry stays pending), a padded status still counts,
    a ref that only looks like digits and a stray line shaped like a row are left out."""
    header = "ref,fileName,date,description,status,publicScore,privateScore"
    rows = [
        "7,a.csv,2026-12-01,m,SubmissionStatus.COMPLETE ,0.91,",
        "6,b.csv,2026-12-01,m,SubmissionStatus.COMPLETE,nan,",
        "5,c.csv,2026-12-01,m,SubmissionStatus.COMPLETE,Infinity,",
        '4,d.csv,2026-12-01,m,SubmissionStatus.COMPLETE,"0,95",',
        "3,e.csv,2026-12-01,m,SubmissionStatus.PENDING,None,None",
        "1²,f.csv,2026-12-01,m,SubmissionStatus.COMPLETE,0.5,",
        "2,warning: retrying,soon,x,y,z,w",
    ]
    found = cli.parse_submissions("\n".join([header, *rows]), "kaggle competitions submissions x")
    assert [(row.ref, row.status, row.public_score) for row in found] == [
        (7, "complete", 0.91),
        (6, "pending", None),
        (5, "pending", None),
        (4, "pending", None),
        (3, "pending", None),
    ]
