"""Fault-injection points for the crash tests: `PIPELINE_CRASH_AT=<point>:<n>` SIGKILLs this process
the n-th time execution reaches `<point>` (e.g. `batch:7`, `validation:1`, `write_last.pt:2`).

Unset (always, outside tests) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_seen: dict[str, int] = {}


def crash_point(point: str) -> None:
    spec = os.environ.get("PIPELINE_CRASH_AT")
    if not spec:
        return
    name, _, count = spec.partition(":")
    if name != point:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
