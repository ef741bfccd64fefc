"""The worker's loops and threads (runs_app.worker.loops): a turn's failure is told and counted,
never the loop's end; a connection an outage broke is replaced at the next turn; a thread
that dies is started again with a backoff and reported; a loop that cannot recover makes
the worker give up."""

from __future__ import annotations

import itertools
import logging
import threading
import time

import pytest
from django.db import OperationalError, connection

from runs_app.follow import wait_for
from runs_app.worker import loops
from runs_app.worker.loops import Loop, Threads

# A turn begins with close_old_connections(), which asks the connection how it is.
pytestmark = pytest.mark.django_db


def test_a_failing_turn_is_counted_and_the_loop_recovers(caplog):
    loop = Loop("schedules")
    for _ in range(3):
        with loop.turn() as turn:
            raise OperationalError("connection refused")
        assert turn.failed
    state = loop.state()
    assert state["state"] == "failing"
    assert state["failures"] == 3
    assert state["error"] == "OperationalError: connection refused"
    # The service away is told once, in one line, not at every turn.
    told = [r for r in caplog.records if r.name == "runs_app.worker.loops"]
    assert len(told) == 1 and told[0].exc_info is None
    with loop.turn() as turn:
        pass
    assert not turn.failed
    assert loop.state() == {"name": "schedules", "state": "ok"}
    assert "schedules works again" in caplog.text


def test_a_fault_of_ours_is_told_with_its_traceback(caplog):
    loop = Loop("daemons")
    with loop.turn():
        raise KeyError("no such daemon")
    (told,) = [r for r in caplog.records if r.name == "runs_app.worker.loops"]
    assert told.exc_info is not None
    assert "KeyError" in loop.error


@pytest.mark.django_db(transaction=True)
def test_a_turn_replaces_a_connection_that_failed():
    """As Django's request cycle does: a connection that raised, and no longer works, is
    closed when the next turn begins, and the turn's first query opens a new one."""
    loop = Loop("dispatch")
    with loop.turn():
        connection.ensure_connection()
    broken = connection.connection
    connection.errors_occurred = True
    connection.is_usable = lambda: False  # as after the server ended it
    try:
        with loop.turn(), connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        del connection.is_usable
    assert connection.connection is not broken
    assert loop.state()["state"] == "ok"


def test_a_dead_thread_is_started_again_and_reported(monkeypatch):
    monkeypatch.setattr(loops, "FIRST_BACKOFF_SECONDS", 0.05)
    stopping = threading.Event()
    threads = Threads(stopping)
    calls = []

    def fragile() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected")
        stopping.wait()

    kept = threads.add("fragile", fragile)
    try:
        assert wait_for(lambda: not kept.alive, timeout=5)
        assert "fragile died" in threads.degraded()
        assert wait_for(lambda: (threads.watch(), kept.alive)[1], timeout=5)
        assert len(calls) == 2
        (entry,) = threads.report()
        assert entry["alive"] and entry["restarts"] == 1
        assert entry["error"] == "RuntimeError: injected"
        assert "was started again after: RuntimeError: injected" in threads.degraded()
    finally:
        stopping.set()
        threads.join(timeout=5)


def test_a_thread_that_returns_is_started_again_too(monkeypatch):
    """django-q2's pusher returns after a broker error: that is an end, not a success."""
    monkeypatch.setattr(loops, "FIRST_BACKOFF_SECONDS", 0.05)
    stopping = threading.Event()
    threads = Threads(stopping)
    calls = []
    kept = threads.add("returns", lambda: calls.append(1) or (len(calls) > 1 and stopping.wait()))
    try:
        assert wait_for(lambda: (threads.watch(), len(calls) >= 2)[1], timeout=5)
        assert kept.error == "it ended unexpectedly"
    finally:
        stopping.set()
        threads.join(timeout=5)


def test_the_backoff_doubles_while_a_thread_keeps_dying(monkeypatch):
    monkeypatch.setattr(loops, "FIRST_BACKOFF_SECONDS", 0.01)
    threads = Threads()
    started: list[float] = []
    kept = threads.add("doomed", lambda: started.append(time.monotonic()) or 1 / 0)
    assert wait_for(lambda: (threads.watch(), len(started) >= 5)[1], timeout=10, poll=0.005)
    gaps = [b - a for a, b in itertools.pairwise(started)]
    assert gaps[-1] > gaps[0] * 2  # 0.01, 0.02, 0.04, 0.08 s …
    assert kept.restarts >= 4
    threads.stop()


def test_a_loop_that_cannot_recover_makes_the_worker_give_up(settings):
    settings.WORKER_UNHEALTHY_EXIT_SECONDS = 60
    stopping = threading.Event()
    threads = Threads(stopping)
    loop = Loop("notifications")
    threads.add("notifications", stopping.wait, [loop])
    with loop.turn():
        raise OperationalError("the database system is shutting down")
    assert threads.give_up_reason() == ""  # not yet
    loop.failing_since -= 61
    assert threads.give_up_reason().startswith("notifications has not worked for 61 s")
    settings.WORKER_UNHEALTHY_EXIT_SECONDS = 0  # never
    assert threads.give_up_reason() == ""
    stopping.set()


def test_a_turn_stuck_for_too_long_counts_as_unhealthy(settings):
    settings.WORKER_UNHEALTHY_EXIT_SECONDS = 60
    loop = Loop("heartbeat")
    loop.turn_started = time.monotonic() - 61
    assert loop.state()["state"] == "stuck"
    assert loop.unhealthy_for() >= 61


def test_stopping_is_no_death(caplog):
    stopping = threading.Event()
    threads = Threads(stopping)
    kept = threads.add("polite", stopping.wait)
    stopping.set()
    kept.join(timeout=5)
    threads.watch()
    assert not kept.alive and kept.restarts == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
