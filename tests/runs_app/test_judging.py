"""How a run's end is judged from what its executor saw (runs_app.worker.execution.judge):
which cause wins when several hold, and the words a failed run is told with."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from runs_app.executors.base import Outcome, RunSpec
from runs_app.models import PipelineRun
from runs_app.worker.execution import judge

Status, Reason = PipelineRun.Status, PipelineRun.FailureReason
STARTED = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def spec(**fields) -> RunSpec:
    return RunSpec(
        run_id="r",
        pipeline="p",
        folder=Path(),
        entry_point="main.py",
        requirements_file="",
        python_version=None,
        env={},
        **fields,
    )


def ended(**fields) -> Outcome:
    """An outcome whose own code started (setup is over), unless said otherwise."""
    return Outcome(**{"user_code_started_at": STARTED, **fields})


def test_a_clean_exit_succeeds():
    assert judge(ended(exit_code=0), spec()) == (Status.SUCCEEDED, "", "")


def test_a_cancel_wins_over_everything_it_caused():
    """A cancelled run is stopped: its exit code, a timeout or a full log are its effects."""
    outcome = ended(cancelled=True, timed_out=True, log_overflow=True, exit_code=137)
    assert judge(outcome, spec()) == (Status.CANCELLED, "", "cancelled on request")


def test_a_log_that_cannot_be_written_wins_over_its_overflow(settings):
    outcome = ended(log_failure="No space left on device", log_overflow=True, exit_code=137)
    status, reason, message = judge(outcome, spec())
    assert (status, reason) == (Status.FAILED, Reason.LOG_UNWRITABLE)
    assert message == ("its log could not be written (No space left on device); it was stopped")


def test_flooding_the_log_fails_with_the_limit_named(settings):
    settings.LOG_MAX_SIZE_MB = 3
    status, reason, message = judge(ended(log_overflow=True, exit_code=137), spec())
    assert (status, reason) == (Status.FAILED, Reason.LOG_LIMIT)
    assert "more than LOG_MAX_SIZE_MB (3 MB)" in message


def test_a_timeout_is_its_own_end_even_when_memory_ran_out_while_it_was_killed():
    outcome = ended(timed_out=True, oom_killed=True, exit_code=137)
    assert judge(outcome, spec(timeout_seconds=30)) == (
        Status.TIMED_OUT,
        "",
        "killed after its timeout of 30 s",
    )


@pytest.mark.parametrize(
    ("limit", "said"),
    [
        (512 * 1024**2, "out of memory: killed for using more than its memory limit (512 MiB)"),
        (None, "out of memory: killed for using more than its memory limit"),
    ],
)
def test_out_of_memory_names_the_limit_it_had(limit, said):
    outcome = ended(oom_killed=True, exit_code=137)
    assert judge(outcome, spec(mem_hard_limit_bytes=limit)) == (
        Status.FAILED,
        Reason.OUT_OF_MEMORY,
        said,
    )


def test_out_of_memory_wins_over_a_zero_exit():
    """A child process killed by the OOM killer while the main one exits 0 is still OOM."""
    status, reason, _ = judge(ended(oom_killed=True, exit_code=0), spec())
    assert (status, reason) == (Status.FAILED, Reason.OUT_OF_MEMORY)


@pytest.mark.parametrize(
    ("peak", "out_of_memory"),
    [(None, True), (45 * 1024**2, True), (10 * 1024**2, False)],
)
def test_a_kill_nobody_asked_for_near_the_memory_limit_is_out_of_memory(peak, out_of_memory):
    """The engine's OOM flag can lose the race with the exit: a SIGKILL (137) Fast-Flow did
    not send, to a run not seen far below its memory limit, was the kernel's."""
    outcome = ended(exit_code=137, peak_memory_bytes=peak)
    _, reason, _ = judge(outcome, spec(mem_hard_limit_bytes=50 * 1024**2))
    assert reason == (Reason.OUT_OF_MEMORY if out_of_memory else Reason.EXIT_CODE)


def test_a_kill_without_a_memory_limit_is_an_exit_code():
    _, reason, message = judge(ended(exit_code=137), spec())
    assert (reason, message) == (Reason.EXIT_CODE, "exited with code 137")


def test_a_failure_before_the_code_started_is_the_environments():
    outcome = Outcome(exit_code=1, last_stderr=[f"line {n}" for n in range(12)])
    status, reason, message = judge(outcome, spec())
    assert (status, reason) == (Status.FAILED, Reason.DEPENDENCY_INSTALL)
    lines = message.split("\n")
    assert lines[0] == "uv could not prepare the run's environment:"
    assert lines[1:] == [f"line {n}" for n in range(4, 12)]  # its last eight words


def test_a_failure_before_the_code_started_without_words():
    assert judge(Outcome(exit_code=2), spec())[2] == "uv could not prepare the run's environment"


def test_a_failing_exit_says_its_code():
    expected = (Status.FAILED, Reason.EXIT_CODE, "exited with code 3")
    assert judge(ended(exit_code=3), spec()) == expected


@pytest.mark.parametrize(
    ("last_words", "hint"),
    [
        ("OSError: [Errno 28] No space left on device", "RUN_TMPFS_SIZE_MB"),
        ("RuntimeError: can't start new thread", "RUN_PIDS_LIMIT"),
        ("BlockingIOError: [Errno 11] Resource temporarily unavailable", "RUN_PIDS_LIMIT"),
    ],
)
def test_a_failing_exit_names_the_limit_its_last_words_point_to(settings, last_words, hint):
    settings.RUN_TMPFS_SIZE_MB, settings.RUN_PIDS_LIMIT = 64, 100
    outcome = ended(exit_code=1, last_stderr=["Traceback (most recent call last):", last_words])
    status, reason, message = judge(outcome, spec())
    assert (status, reason) == (Status.FAILED, Reason.EXIT_CODE)
    assert message.startswith("exited with code 1: ")
    assert hint in message
