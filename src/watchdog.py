"""A hung child is not a hung stage: SIGTERM stops the stage, and a child process that dies while the stage waits on
it (the notebook's kernel killed as an out-of-memory kill would) stops the wait with one line.

`stop_on_sigterm` makes SIGTERM raise `Stopped` (a PipelineError) in the main thread, so every `finally` runs: a
temporary file is removed, `subprocess.run` kills its child, the notebook's kernel is shut down. `watch_process` polls
a child's pid from a thread and, when the child is gone, interrupts the main thread with a signal: a wait that
blocks in C (a zmq poll with no timeout) is cut short, not only a Python loop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from src.errors import PipelineError

POLL_S = 1.0  # how often a watched child is checked: a death is noticed within about this long
_WAKE = signal.SIGUSR2  # what the watching thread sends the main thread when the child is gone


class Stopped(PipelineError):
    """The stage was stopped from outside (SIGTERM) or a child it waited on died; `exit_status` is what the process
    should exit with: 128 + the signal's number for a signal (143 for SIGTERM, as a shell reports a process it ended,
    so a caller can tell a stop from a failure), 2 (a failure) otherwise."""

    def __init__(self, message: str, exit_status: int = 2):
        super().__init__(message)
        self.exit_status = exit_status


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (killed, not yet reaped by its parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def terminate_children() -> None:
    """SIGTERM to this process's direct children (a Popen nobody waits on with a timeout would outlive the stage)."""
    for children in Path("/proc/self/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            for pid in children.read_text().split():
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGTERM)


@contextlib.contextmanager
def stop_on_sigterm(what: str = "the stage") -> Iterator[None]:
    """While the block runs (in the main thread), SIGTERM raises Stopped; the previous handler is restored after.
    Outside the main thread (where no handler can be installed) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    received: list[int] = []

    def stopped(signum: int) -> Stopped:
        return Stopped(
            f"{what} was stopped (SIGTERM): its children were stopped too; rerun it when wanted", 128 + signum
        )

    def stop(signum: int, frame: object) -> None:
        received.append(signum)
        terminate_children()
        raise stopped(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except Exception as exc:
        # What a stop brings about is the stop: e.g. a DDP rank whose peer stopped first fails in its collective
        # ("Connection closed by peer") before its own handler runs; that is this stop, not a second error.
        if received and not isinstance(exc, Stopped):
            raise stopped(received[0]) from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def watch_process(pid: int | Callable[[], int | None], what: str, fix: str, poll_s: float = POLL_S) -> Iterator[None]:
    """While the block runs, check every `poll_s` that process `pid` is alive (a callable gives the pid once the
    block has started the process, None before); once it is gone, raise Stopped ("`what` died ...; `fix`") in the
    main thread, whatever the block waits on. Outside the main thread the block runs unwatched."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    died, done = threading.Event(), threading.Event()
    main = threading.main_thread().ident
    seen: list[int] = []
    message = f"{what} died (its process is gone: killed, e.g. out of memory); {fix}"

    def wake(signum: int, frame: object) -> None:
        if died.is_set() and not done.is_set():
            raise Stopped(message)

    def poll() -> None:
        while not done.wait(poll_s):
            current = pid() if callable(pid) else pid
            seen[:] = [current] if current is not None else seen
            if seen and not process_alive(seen[0]):
                died.set()  # and again each poll until the block ends: an event loop may swallow one in a task
                signal.pthread_kill(main, _WAKE)

    previous = signal.signal(_WAKE, wake)
    watcher = threading.Thread(target=poll, name="watchdog", daemon=True)
    watcher.start()
    try:
        yield
    except PipelineError:
        if died.is_set():  # what the block made of the death (e.g. nbclient's DeadKernelError), said our way
            raise Stopped(message) from None
        raise
    finally:
        done.set()
        watcher.join()
        signal.signal(_WAKE, previous)
