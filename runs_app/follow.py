"""Following a run's log from another process, as `runpipeline --follow` does."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from runs_app.models import PipelineRun, WorkerProcess
from runs_app.stored_logs import LogTail


def follow_log(
    run: PipelineRun,
    poll_seconds: float = 0.1,
    on_poll: Callable[[str], None] = lambda status: None,
) -> Iterator[tuple[int, str, str, str]]:
    """Yield the run's log lines (seq, timestamp, stream, text) as they are written, until
    the run is final and its log read to the end. `on_poll(status)` is called on every
    poll (to say why nothing happens, for instance)."""
    tail = LogTail(run.pk)
    while True:
        status = PipelineRun.objects.values_list("status", flat=True).get(pk=run.pk)
        while batch := tail.read():
            yield from batch
        if status in PipelineRun.FINAL_STATUSES:
            return
        on_poll(status)
        time.sleep(poll_seconds)


class NoWorkerNotice:
    """Says once, after a few seconds, that a run waits because no worker is alive."""

    def __init__(self, say: Callable[[str], None], after_seconds: float = 3.0) -> None:
        self.say = say
        self.after = time.monotonic() + after_seconds
        self.said = False

    def __call__(self, status: str) -> None:
        if self.said or status == PipelineRun.Status.RUNNING or time.monotonic() < self.after:
            return
        if WorkerProcess.alive().exists():
            return
        self.said = True
        self.say(
            "No worker is running, so nothing starts this run. Start one with "
            "`uv run manage.py worker` (or the whole instance with `uv run manage.py up`); "
            "the run waits until then (Ctrl-C here leaves it waiting)."
        )


def exit_status(run: PipelineRun) -> int:
    """A shell exit status for a final run: its own code, else 124 timeout, 130 cancel, 1."""
    if run.status == PipelineRun.Status.SUCCEEDED:
        return 0
    if run.status == PipelineRun.Status.TIMED_OUT:
        return 124
    if run.status == PipelineRun.Status.CANCELLED:
        return 130
    return run.exit_code or 1


def wait_for(predicate: Callable[[], bool], timeout: float, poll: float = 0.05) -> bool:
    """Poll `predicate` until true or `timeout` seconds pass; True when it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return predicate()
