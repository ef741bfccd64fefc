"""The worker's long-lived loops and the threads that carry them: every turn on a sound
database connection, and no thread that dies in silence.

A loop treats its connection the way Django's request cycle does (STYLE.md): each turn
begins with `close_old_connections()`, so a connection that failed (PostgreSQL restarted,
failed over, ended it) is closed and the next query opens a new one, and a turn's
exception ends the turn, never the thread. The worker keeps its connections open between
turns with health checks (`keep_connections_open`): the first query of a turn finds a
connection that died meanwhile and replaces it, without the turn failing at all. A loop
that fails is *failing* until a turn succeeds again: the first failure is logged (in one
line when the database or Redis is away, with its traceback when it is a fault of ours),
then a reminder every LOG_AGAIN_SECONDS, and the recovery once.

`Threads` starts the worker's threads and watches them (`watch()`, from the main thread):
one whose function raises or returns while the worker is not stopping is logged and
started again after a backoff (1 s, doubling up to a minute; back to 1 s once it ran
for HEALTHY_RUN_SECONDS). `report()` and `degraded()` are what the worker tells the
instance (WorkerProcess.threads and .degraded, shown in the admin and by /health/ready/):
each thread, whether it runs, its restarts, each of its loops' state, and why it is not
well. A loop failing, or stuck in one turn,
or a thread dead, for WORKER_UNHEALTHY_EXIT_SECONDS is something a restart of the process
may cure: `give_up_reason()` says so, and the worker exits non-zero for its process
manager (compose's `restart: unless-stopped`, `up`'s parent) to start it afresh.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db import close_old_connections, connection, connections

from runs_app.outages import SERVICE_AWAY

logger = logging.getLogger(__name__)


LOG_AGAIN_SECONDS = 60.0
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0
HEALTHY_RUN_SECONDS = 600.0
# A thread restarted this recently still shows as degraded: a flapping thread is seen.
RECENT_RESTART_SECONDS = 60.0
# The worker's connections live this long between turns (health-checked at each turn).
CONNECTION_MAX_AGE_SECONDS = 600


def keep_connections_open(max_age: int = CONNECTION_MAX_AGE_SECONDS) -> None:
    """This process keeps its database connections between turns, checked at the first
    query of each turn (CONN_HEALTH_CHECKS): a loop turning every second does not open a
    connection — a PostgreSQL backend — every second, and a dead one is replaced before it
    fails a query. For the worker; the web process keeps Django's per-request default."""
    for alias in connections:
        connections.settings[alias]["CONN_MAX_AGE"] = max_age
        connections.settings[alias]["CONN_HEALTH_CHECKS"] = True
    connection.close()  # reopened with these settings


def describe(problem: BaseException) -> str:
    first_line = str(problem).strip().splitlines()[0] if str(problem).strip() else ""
    return f"{type(problem).__name__}: {first_line}"[:500] if first_line else type(problem).__name__


@dataclass
class Turn:
    failed: bool = False


class Loop:
    """One long-lived loop's health, and its turns."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failing_since: float | None = None  # wall clock, for the report
        self.failures = 0  # turns failed in a row
        self.error = ""
        self.turn_started: float | None = None  # monotonic
        self.last_said = 0.0

    @contextlib.contextmanager
    def turn(self) -> Iterator[Turn]:
        """One turn: a sound connection first; an exception is logged and counted, and
        the loop goes on (`turn.failed` tells the caller afterwards)."""
        self.turn_started = time.monotonic()
        outcome = Turn()
        try:
            close_old_connections()
            yield outcome
        except Exception as problem:
            outcome.failed = True
            self.failed(problem)
        else:
            self.succeeded()
        finally:
            self.turn_started = None

    def failed(self, problem: BaseException) -> None:
        self.failures += 1
        self.error = describe(problem)
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = time.time()
            self.last_said = now
            if isinstance(problem, SERVICE_AWAY):
                logger.error("%s failed: %s; trying again", self.name, self.error)
            else:  # a fault of ours: where it happened matters
                logger.error("%s failed", self.name, exc_info=problem)
        elif now - self.last_said >= LOG_AGAIN_SECONDS:
            self.last_said = now
            logger.warning(
                "%s still fails (%d turns in %.0f s): %s",
                self.name,
                self.failures,
                time.time() - self.failing_since,
                self.error,
            )
        # Not in the next turn: a loop that waits long between turns should not hold a
        # broken connection (and its server-side resources) meanwhile.
        with contextlib.suppress(Exception):
            close_old_connections()

    def succeeded(self) -> None:
        if self.failing_since is not None:
            logger.warning(
                "%s works again after %.1f s (%d failed turns)",
                self.name,
                time.time() - self.failing_since,
                self.failures,
            )
        self.failing_since, self.failures, self.error = None, 0, ""

    def unhealthy_for(self) -> float:
        """How long this loop has been failing or stuck in one turn (0: it is not)."""
        failing = time.time() - self.failing_since if self.failing_since is not None else 0.0
        stuck = time.monotonic() - self.turn_started if self.turn_started is not None else 0.0
        return max(failing, stuck if stuck >= self.stuck_after() else 0.0)

    @staticmethod
    def stuck_after() -> float:
        return float(settings.WORKER_UNHEALTHY_EXIT_SECONDS or 3600)

    def state(self) -> dict:
        if self.failing_since is not None:
            return {
                "name": self.name,
                "state": "failing",
                "since": _iso(self.failing_since),
                "failures": self.failures,
                "error": self.error,
            }
        started = self.turn_started
        if started is not None and time.monotonic() - started >= self.stuck_after():
            since = time.time() - (time.monotonic() - started)
            return {"name": self.name, "state": "stuck", "since": _iso(since), "error": ""}
        return {"name": self.name, "state": "ok"}


@dataclass
class KeptThread:
    """A thread the worker keeps running, started again when it dies."""

    name: str
    target: Callable[[], None]
    loops: list[Loop]
    thread: threading.Thread | None = None
    started_at: float = 0.0  # monotonic
    restarts: int = 0
    last_restart_at: float | None = None  # wall clock
    dead_since: float | None = None  # wall clock
    # Since it first died, until it then ran for RECENT_RESTART_SECONDS (wall clock).
    troubled_since: float | None = None
    restart_at: float | None = None  # monotonic
    backoff: float = field(default_factory=lambda: FIRST_BACKOFF_SECONDS)
    error: str = ""

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)


class Threads:
    """The threads of a worker process, kept alive."""

    def __init__(self, stopping: threading.Event | None = None) -> None:
        self.stopping = stopping or threading.Event()
        self.kept: list[KeptThread] = []
        self.lock = threading.Lock()

    def add(
        self, name: str, target: Callable[[], None], loops: list[Loop] | tuple = ()
    ) -> KeptThread:
        kept = KeptThread(name, target, list(loops))
        with self.lock:
            self.kept.append(kept)
        self._start(kept)
        return kept

    def _start(self, kept: KeptThread) -> None:
        kept.started_at = time.monotonic()
        kept.thread = threading.Thread(target=self._run, args=(kept,), name=kept.name, daemon=True)
        kept.thread.start()

    def _run(self, kept: KeptThread) -> None:
        try:
            kept.target()
            if not self.stopping.is_set():
                kept.error = "it ended unexpectedly"
                logger.error("thread %s ended unexpectedly; it is started again", kept.name)
        except BaseException as problem:  # a thread's end must be told, whatever ended it
            kept.error = describe(problem)
            logger.exception("thread %s died; it is started again", kept.name)
        finally:
            with contextlib.suppress(Exception):
                connection.close()  # this thread's own

    def watch(self) -> None:
        """Start again, after their backoff, the threads that died (the main thread calls
        this every fraction of a second)."""
        if self.stopping.is_set():
            return
        now = time.monotonic()
        for kept in list(self.kept):
            if kept.alive:
                if kept.troubled_since and now - kept.started_at >= RECENT_RESTART_SECONDS:
                    kept.troubled_since = None  # it runs again, and keeps running
                continue
            if kept.restart_at is None:
                ran_for = now - kept.started_at
                if ran_for >= HEALTHY_RUN_SECONDS:
                    kept.backoff = FIRST_BACKOFF_SECONDS
                kept.restart_at = now + kept.backoff
                kept.dead_since = kept.dead_since or time.time()
                kept.troubled_since = kept.troubled_since or kept.dead_since
                kept.backoff = min(kept.backoff * 2, MAX_BACKOFF_SECONDS)
            elif now >= kept.restart_at:
                kept.restart_at = None
                kept.restarts += 1
                kept.last_restart_at = time.time()
                kept.dead_since = None
                logger.warning("thread %s started again (restart %d)", kept.name, kept.restarts)
                self._start(kept)

    def stop(self) -> None:
        self.stopping.set()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for kept in self.kept:
            kept.join(max(deadline - time.monotonic(), 0.0))

    def report(self) -> list[dict]:
        """Each thread and its loops, as the worker's report stores them."""
        threads = []
        for kept in self.kept:
            entry: dict = {"name": kept.name, "alive": kept.alive, "restarts": kept.restarts}
            if kept.last_restart_at is not None:
                entry["last_restart"] = _iso(kept.last_restart_at)
            if kept.error:
                entry["error"] = kept.error
            if kept.dead_since is not None and not kept.alive:
                entry["dead_since"] = _iso(kept.dead_since)
            entry["loops"] = [loop.state() for loop in kept.loops]
            threads.append(entry)
        return threads

    def degraded(self) -> str:
        """Why this worker is not fully well, in plain words ("" when it is)."""
        reasons = []
        now = time.time()
        for kept in self.kept:
            if not kept.alive and not self.stopping.is_set():
                reasons.append(f"thread {kept.name} died ({kept.error}); starting it again")
            elif kept.troubled_since is not None or (
                kept.last_restart_at and now - kept.last_restart_at < RECENT_RESTART_SECONDS
            ):
                reasons.append(f"thread {kept.name} was started again after: {kept.error}")
            for loop in kept.loops:
                state = loop.state()
                if state["state"] == "failing":
                    reasons.append(
                        f"{loop.name} fails since {state['since']} "
                        f"({state['failures']} turns): {state['error']}"
                    )
                elif state["state"] == "stuck":
                    reasons.append(f"{loop.name} is stuck in one turn since {state['since']}")
        return "; ".join(reasons)

    def give_up_reason(self) -> str:
        """Why this process should end for its manager to start it afresh ("" while it
        should go on): a loop failing or stuck, or a thread dead, for
        WORKER_UNHEALTHY_EXIT_SECONDS."""
        limit = settings.WORKER_UNHEALTHY_EXIT_SECONDS
        if not limit or self.stopping.is_set():
            return ""
        now = time.time()
        for kept in self.kept:
            if kept.troubled_since is not None and now - kept.troubled_since >= limit:
                return (
                    f"thread {kept.name} keeps dying ({kept.restarts} restarts in "
                    f"{now - kept.troubled_since:.0f} s): {kept.error}"
                )
            for loop in kept.loops:
                if (unhealthy := loop.unhealthy_for()) >= limit:
                    return f"{loop.name} has not worked for {unhealthy:.0f} s: {loop.error}"
        return ""


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")
