"""Following a run's log from another process, as `runpipeline --follow` does."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

from runs_app.logs import LogTail
from runs_app.models import PipelineRun


def follow_log(run: PipelineRun, poll_seconds: float = 0.1) -> Iterator[tuple[int, str, str, str]]:
    """Yield the run's log lines (seq, timestamp, stream, text) as they are written, until
    the run is final and its log read to the end."""
    tail = LogTail(Path(run.log_path))
    while True:
        finished = PipelineRun.objects.filter(
            pk=run.pk, status__in=PipelineRun.FINAL_STATUSES
        ).exists()
        yield from tail.read()
        if finished:
            return
        time.sleep(poll_seconds)


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
