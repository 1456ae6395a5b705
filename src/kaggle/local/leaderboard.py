"""Uploads to Kaggle and what the leaderboard made of them: submit each file, then poll until it is scored.

Kaggle answers an upload with a message only, so a submission is found again in
`kaggle competitions submissions <slug>` as the row that was not there before the upload, with this
file name and message. Polling is bounded (`submit.score_wait_s`); a submission still pending then is
recorded as pending, and `status --refresh-scores` (`refresh_scores`) records its score later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from src.artifacts import LeaderboardEntry
from src.errors import PipelineError
from src.kaggle.local import cli

Log = Callable[[str], None]


@dataclass(frozen=True)
class Upload:
    """One file for one competition; `head` names the format's head it answers when there is one file per head."""

    competition: str
    file: Path
    head: str | None = None


def uploads_for(
    competition: str, by_head: dict[str, str], head_files: dict[str, Path], files: list[Path], where: str
) -> list[Upload]:
    """What to upload where: one file to `competition`, or with `by_head` ({head: slug}) each head's file
    (`head_files`) to its own competition, in the format's head order. `where` names the config in errors."""
    if len(files) == 1 and not by_head:
        return [Upload(competition, files[0])]
    expected = ", ".join(f"{head} ({path.name})" for head, path in head_files.items())
    if len(files) == 1:
        raise PipelineError(
            f"{where}: submit.kaggle_competitions is for formats that write one file per head; this "
            "one writes one file: remove it and set `competition`"
        )
    if set(by_head) != set(head_files):
        raise PipelineError(
            f"{where}: submit.kaggle_competitions names {', '.join(sorted(by_head)) or 'no head'}; this "
            f"format writes {len(files)} files, one per head: set a competition slug for each of {expected}"
        )
    return [Upload(by_head[head], path, head) for head, path in head_files.items()]


def submit_files(uploads: Sequence[Upload], message: str, log: Log = print) -> tuple[list[LeaderboardEntry], dict]:
    """Upload each file to its competition, in order; return (entries, refs listed before the uploads).

    A failure after the first upload says which files went through, so nothing is uploaded twice by hand.
    """
    refuse_without_submissions_left([upload.competition for upload in uploads])
    before = refs_listed([upload.competition for upload in uploads])
    entries: list[LeaderboardEntry] = []
    for upload in uploads:
        try:
            cli.submit_file(upload.competition, upload.file, message)
        except PipelineError as exc:
            if not entries:
                raise
            went = " and ".join(f"{entry.file} to {entry.competition}" for entry in entries)
            raise PipelineError(
                f"{upload.file}: the upload to {upload.competition} failed ({exc}); {went} went through "
                f"already: upload only this file again with: kaggle competitions submit "
                f'{upload.competition} -f {upload.file} -m "{message}"'
            ) from None
        entries.append(uploaded_entry(upload.competition, str(upload.file), message, before, upload.head))
    log("submitted " + " and ".join(f"{Path(e.file).name} to {e.competition}" for e in entries))
    return entries, before


def refuse_without_submissions_left(competitions: Sequence[str]) -> None:
    """Stop in one line, before any upload, when a competition has no submission left today."""
    for competition in competitions:
        limits = cli.submissions_left_today(competition)
        if limits is not None and limits[0] <= 0:
            raise PipelineError(
                f"{competition}: no submission left today ({limits[1]} made today); nothing was uploaded: submit "
                "again after Kaggle's daily reset (00:00 UTC)"
            )


def refs_listed(competitions: Sequence[str]) -> dict[str, set[int]]:
    """{competition: refs of the submissions it lists now}: taken before an upload, to tell its row from older ones."""
    return {
        competition: {row.ref for row in cli.list_submissions(competition)}
        for competition in dict.fromkeys(competitions)
    }


def uploaded_entry(
    competition: str, file: str, message: str, before: dict[str, set[int]], head: str | None = None
) -> LeaderboardEntry:
    """The pending record of one upload; `before` is `refs_listed` from just before it (its highest ref is kept)."""
    return LeaderboardEntry(
        competition=competition,
        file=file,
        head=head,
        message=message,
        listed_before=max(before[competition], default=0),
    )


def refresh_scores(
    entries: list[LeaderboardEntry], log: Log = print, listed: dict[str, list[cli.Submission]] | None = None
) -> list[LeaderboardEntry]:
    """The entries with what their competitions' submission lists show now: one look, no upload, no waiting; only
    pending entries change. `listed` ({competition: rows}) is shared by callers refreshing several records."""
    listed = {} if listed is None else listed
    refreshed = []
    for entry in entries:
        if entry.status == "pending" and entry.ref is None and entry.listed_before is None:
            log(
                f"{Path(entry.file).name} -> {entry.competition}: recorded before uploads kept the last ref listed, "
                f"so its row cannot be told from older ones: see `kaggle competitions submissions {entry.competition}`"
            )
            refreshed.append(entry)
            continue
        refreshed.append(_refreshed(entry, set(), listed, log))
    return refreshed


def wait_for_scores(
    entries: list[LeaderboardEntry],
    before: dict,
    wait_s: float,
    poll_s: float,
    log: Log = print,
    sleep: Callable[[float], None] = time.sleep,
) -> list[LeaderboardEntry]:
    """Poll the competitions' submission lists until every entry is scored (or failed) or `wait_s` has passed."""
    deadline = time.monotonic() + wait_s
    while True:
        listed: dict[str, list[cli.Submission]] = {}
        entries = [_refreshed(entry, before.get(entry.competition, set()), listed, log) for entry in entries]
        pending = [entry for entry in entries if entry.status == "pending"]
        if not pending or time.monotonic() + poll_s > deadline:
            break
        log(f"waiting for Kaggle to score {', '.join(Path(e.file).name for e in pending)} (up to {wait_s:.0f} s)")
        sleep(poll_s)
    for entry in entries:
        log(score_line(entry, wait_s))
    return entries


def score_line(entry: LeaderboardEntry, wait_s: float | None = None) -> str:
    """One line: the file, where it went, and its leaderboard scores (or why there are none yet; `wait_s`: how long
    this call waited for them)."""
    where = f"{Path(entry.file).name} -> {entry.competition}" + (f" (ref {entry.ref})" if entry.ref is not None else "")
    if entry.status == "complete":
        private = f", private {entry.private_score:.5f}" if entry.private_score is not None else ""
        public = "none shown" if entry.public_score is None else f"{entry.public_score:.5f}"
        return f"{where}: public score {public}{private}"
    if entry.status == "error":
        return f"{where}: Kaggle could not score it: open the competition's submissions page to see why"
    waited = "still pending" if wait_s is None else f"not scored after {wait_s:.0f} s"
    return (
        f"{where}: {waited}; `kaggle competitions submissions {entry.competition}` shows the score once Kaggle "
        "has it, and `python -m src.stage status --refresh-scores` records it"
    )


def _refreshed(entry: LeaderboardEntry, known: set[int], listed: dict, log: Log) -> LeaderboardEntry:
    """The entry with what the competition's submission list shows now (unchanged while it is not there)."""
    if entry.status != "pending":
        return entry
    if entry.competition not in listed:
        try:
            listed[entry.competition] = cli.list_submissions(entry.competition)
        except PipelineError as exc:  # the upload went through: a listing failure must not lose the record
            log(f"warning: could not read the submissions of {entry.competition}: {exc}")
            listed[entry.competition] = []
    name = Path(entry.file).name
    # Rows the upload did not see: by the refs listed before it, else (a later refresh) by Kaggle's increasing refs.
    newer_than = -1 if entry.listed_before is None else entry.listed_before
    mine = [
        row
        for row in listed[entry.competition]
        if (row.ref not in known if known else row.ref > newer_than)
        and row.description == entry.message
        and row.file_name in (name, "")
    ]
    if entry.ref is not None:
        mine = [row for row in mine if row.ref == entry.ref]
    if not mine:
        return entry
    row = max(mine, key=lambda found: found.ref)
    return entry.model_copy(
        update={
            "ref": row.ref,
            "submitted": row.date,
            "status": row.status,
            "public_score": row.public_score,
            "private_score": row.private_score,
        }
    )
