"""manage.py worker: the worker process — one process, its work in threads.

The supervisor follows runs, each in a thread (runs_app.worker.supervisor); the container pool's
keeper refills pooled containers (runs_app.worker.pool_keeper); django-q2's workers, with our
pusher and monitor, execute the other tasks — syncs, warm-ups, retention, the dependency
audit — as threads too (runs_app.worker.task_threads). The ticker fires due schedules (waking at
the next due time, at most `--tick` apart), supervises daemons, starts runs that may start
and reconciles: at start-up at once (runs of a worker that died are re-attached), then
periodically. Several workers may tick at once: a due time still fires exactly once
(runs_app.worker.scheduler). The heartbeat reports this worker alive every few seconds
(WorkerProcess), with whether it reaches the Docker engine and how its threads are; the
chores start the daily housekeeping; the notifications thread sends what is due.

Every thread's loops work in turns on a sound database connection, and the main thread
starts a dead thread again (runs_app.worker.loops). A loop that cannot recover for
WORKER_UNHEALTHY_EXIT_SECONDS makes the worker exit with status 3, for its process
manager to start it afresh.

Stopping (SIGTERM, Ctrl-C) does not wait for runs, which may take hours: their followers
let go at once, the runs are released (the containers go on), and the next worker
re-attaches to them with their logs continuing where they stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections
from django_q.tasks import async_task

from fastflow_site.models import AuditEntry
from fastflow_site.node_keys import KeysOfItsOwn, refuse_keys_of_its_own
from fastflow_site.upgrades import NewerDatabase, refuse_a_newer_database
from pipelines_app.gitsync import request_sync_when_due
from runs_app import notify
from runs_app.executors import (
    EngineUnavailable,
    engine_description,
    get_executor,
    startable_executors,
)
from runs_app.executors.local import process_alive
from runs_app.models import PipelineRun, WorkerNode, WorkerProcess, dispatch
from runs_app.warmup import dispatch_warmups, requeue_interrupted_warmups
from runs_app.worker import delivery, storage
from runs_app.worker.daemons import supervise_daemons
from runs_app.worker.execution import dead_local_workers, reconcile, worker_id
from runs_app.worker.loops import Loop, Threads, keep_connections_open
from runs_app.worker.pool_keeper import PoolKeeper
from runs_app.worker.scheduler import fire_due, seconds_until_next_due
from runs_app.worker.supervisor import RunSupervisor
from runs_app.worker.task_threads import TaskThreads

logger = logging.getLogger(__name__)

REPORT_EVERY_SECONDS = 5.0
# Retention claims its daily turn itself (Chore): checking hourly keeps the day's start
# close to a worker that was down, without a scan each tick.
CHORES_EVERY_SECONDS = 3600
CHORES_RETRY_SECONDS = 60
NOTIFY_POLL_SECONDS = 1.0
# How often the main thread looks at the others (a dead one is started again).
WATCH_SECONDS = 0.5
# The exit status of a worker that gave up (runs_app.worker.loops): its process manager restarts it.
EXIT_UNHEALTHY = 3


class Command(BaseCommand):
    help = "Run the worker: execute runs, start due ones, re-attach orphaned ones."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tick", type=float, default=1.0, help="seconds between ticks")
        parser.add_argument(
            "--reconcile-every", type=float, default=15.0, help="seconds between reconciles"
        )

    def handle(self, *args, tick: float, reconcile_every: float, **options) -> None:
        try:
            refuse_a_newer_database()
            refuse_keys_of_its_own(settings.WORKER_NAME)
        except (NewerDatabase, KeysOfItsOwn) as problem:
            raise CommandError(str(problem)) from None
        keep_connections_open()
        self.stopping = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        notify.sync_settings_channels()
        self.threads = Threads(self.stopping)
        # The heartbeat reports the pool's state: none until the keeper below is made (the
        # heartbeat's thread starts first).
        self.keeper: PoolKeeper | None = None
        self.ticker = Ticker(self.stopping, tick, reconcile_every)
        tasks = TaskThreads()
        tasks.start(self.threads)
        self.stdout.write(f"worker up: {tasks.workers} task threads, tick {tick} s")
        self.threads.add("ticker", self.ticker.run, self.ticker.loops)
        self.heartbeat = Loop("heartbeat")
        self.threads.add("heartbeat", self.report_alive, [self.heartbeat])
        self.chores = Loop("chores")
        self.threads.add("chores", self.do_chores, [self.chores])
        self.sending = Loop("notifications")
        self.threads.add("notifications", self.deliver_notifications, [self.sending])
        keeper = None
        if settings.FASTFLOW_EXECUTOR == "docker" and settings.RUN_POOL_SIZE:
            keeper = PoolKeeper(worker_id())
            keeper.start(self.threads)
        self.keeper = keeper
        supervisor = RunSupervisor()
        supervisor.start(self.threads)
        give_up = ""
        try:
            give_up = self.watch()
        finally:
            self.stopping.set()
            supervisor.stop()  # its runs wait for the next worker at once
            if keeper is not None:
                keeper.stop()
            tasks.stop()
            self.threads.join(timeout=10)
            # What runs and tasks started below this process (local runs: they cannot be
            # re-attached; a warm-up's uv) ends with it.
            end_processes(descendants(os.getpid()))
            with contextlib.suppress(Exception):  # the database may be gone too
                close_old_connections()
                PipelineRun.release_stale(dead_local_workers())
                WorkerProcess.objects.filter(name=worker_id()).delete()
        if give_up:
            raise CommandError(
                f"the worker gives up: {give_up} (WORKER_UNHEALTHY_EXIT_SECONDS="
                f"{settings.WORKER_UNHEALTHY_EXIT_SECONDS}); its process manager starts it "
                "again",
                returncode=EXIT_UNHEALTHY,
            )

    def watch(self) -> str:
        """Keep the threads alive until the worker is stopped; why it must exit instead
        ("" when it was stopped)."""
        while not self.stopping.wait(WATCH_SECONDS):
            self.threads.watch()
            if reason := self.threads.give_up_reason():
                logger.error("the worker exits for a restart: %s", reason)
                return reason
        return ""

    def report_alive(self) -> None:
        """Every few seconds: this worker is alive, whether it reaches the engine, and how
        its threads and loops are (runs_app.worker.loops)."""
        while not self.stopping.is_set():
            with self.heartbeat.turn():
                try:
                    get_executor().check()
                    engine_ok, error = True, ""
                except EngineUnavailable as problem:
                    engine_ok, error = False, str(problem)
                WorkerProcess.report(
                    worker_id(),
                    engine_ok=engine_ok,
                    engine_error=error,
                    threads=self.threads.report(),
                    degraded=self.threads.degraded(),
                    node=settings.WORKER_NAME,
                )
                WorkerNode.report(
                    settings.WORKER_NAME,
                    labels=settings.WORKER_LABELS,
                    capacity=settings.WORKER_CAPACITY,
                    engine=engine_description(),
                    pool=self.keeper.state() if self.keeper else {},
                    placed_by_cluster=settings.FASTFLOW_EXECUTOR == "swarm",
                    executors=startable_executors(),
                )
            self.stopping.wait(REPORT_EVERY_SECONDS)

    def deliver_notifications(self) -> None:
        """Send due notifications until the worker stops (its own thread: a slow mail
        server never holds up the ticker)."""
        while not self.stopping.is_set():
            busy = 0
            with self.sending.turn():
                busy = delivery.deliver_due()
            if not busy:
                self.stopping.wait(NOTIFY_POLL_SECONDS)

    def do_chores(self) -> None:
        """Daily (and at start), each once across all workers: retention of logs and runs,
        the dependency audit; audit-log entries older than AUDIT_RETENTION_DAYS go. Hourly:
        the storage in use (the dashboard shows it). Hourly
        looks (each chore claims its daily turn itself), a minute after a failed one."""
        while not self.stopping.is_set():
            with self.chores.turn() as turn:
                # Long work (archiving many logs, asking OSV about every pipeline): tasks
                # for the task threads, never the ticker's time (schedules would fire late).
                async_task("runs_app.worker.retention.run_daily", group="retention")
                async_task("runs_app.worker.vulnerabilities.check_all_daily", group="audit")
                async_task("runs_app.worker.storage.measure_instance", group="storage")
                storage.measure_node()  # this node's own disk: not a task any node may take
                if removed := AuditEntry.prune():
                    logger.info("removed %s audit entries past AUDIT_RETENTION_DAYS", removed)
            self.stopping.wait(CHORES_RETRY_SECONDS if turn.failed else CHORES_EVERY_SECONDS)


class Ticker:
    """The worker's ticker: fires due schedules (waking at the next due time, at most
    `tick` apart), supervises daemons, asks for due syncs, starts runs that may start;
    every `reconcile_every` seconds, and at start-up, hands out runs nobody follows and
    dispatches warm-ups. Each is a loop of its own: one failing never holds up the others."""

    def __init__(self, stopping: threading.Event, tick: float, reconcile_every: float) -> None:
        self.stopping = stopping
        self.tick = tick
        self.reconcile_every = reconcile_every
        self.started_up = False
        self.last_reconcile = 0.0
        self.schedules = Loop("schedules")
        self.daemons = Loop("daemons")
        self.syncs = Loop("sync requests")
        self.dispatching = Loop("dispatch")
        self.reconciling = Loop("reconcile")
        self.loops = [self.schedules, self.daemons, self.syncs, self.dispatching, self.reconciling]

    def run(self) -> None:
        while True:
            self.turn()
            if self.stopping.wait(self.pause()):
                return

    def turn(self) -> None:
        """One pass over every loop; errors are theirs, never the ticker's end."""
        if time.monotonic() - self.last_reconcile >= self.reconcile_every or not self.started_up:
            with self.reconciling.turn() as turn:
                if not self.started_up:
                    requeue_interrupted_warmups()
                dispatch_warmups()
                counts = reconcile(startup=not self.started_up)
                if any(counts.values()):
                    logger.info("reconciled: %s", counts)
            if not turn.failed:
                self.started_up = True
                self.last_reconcile = time.monotonic()
        with self.schedules.turn():
            fire_due()
        with self.daemons.turn():
            supervise_daemons()
        with self.syncs.turn():
            request_sync_when_due()
        with self.dispatching.turn():
            dispatch()

    def pause(self) -> float:
        """Until the next schedule is due, at most `tick` (the database away: `tick`; the
        schedules loop tells that failure)."""
        try:
            return seconds_until_next_due(self.tick)
        except Exception:
            return self.tick


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc), children before grandchildren."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def end_processes(pids: list[int], wait_seconds: float = 2.0) -> None:
    """SIGKILL, then wait (briefly) until each is gone or a zombie."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait_seconds
    while any(process_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
