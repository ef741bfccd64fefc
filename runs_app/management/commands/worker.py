"""manage.py worker: the worker process — one process, its work in threads.

The supervisor follows runs, each in a thread (runs_app.supervisor); the container pool's
keeper refills pooled containers (runs_app.executors.pool); django-q2's pusher, workers and
monitor execute the other tasks — syncs, warm-ups, retention, the dependency audit — as
threads too (runs_app.task_threads). The ticker, in the main thread, fires due schedules
(waking at the next due time, at most `--tick` apart), starts runs that became due
(retries) and reconciles: at start-up at once (runs of a worker that died are re-attached),
then periodically. Several workers may tick at once: a due time still fires exactly once
(runs_app.scheduler). Every few seconds it reports this worker alive (WorkerProcess), with
whether it reaches the Docker engine.

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
from fastflow_site.upgrades import NewerDatabase, refuse_a_newer_database
from pipelines_app.gitsync import request_sync_when_due
from runs_app import delivery, notify
from runs_app.daemons import supervise_daemons
from runs_app.execution import dead_local_workers, reconcile, worker_id
from runs_app.executors import EngineUnavailable, get_executor
from runs_app.executors.local import process_alive
from runs_app.executors.pool import PoolKeeper
from runs_app.models import PipelineRun, WorkerProcess, dispatch
from runs_app.scheduler import fire_due, seconds_until_next_due
from runs_app.supervisor import RunSupervisor
from runs_app.task_threads import TaskThreads
from runs_app.warmup import dispatch_warmups, requeue_interrupted_warmups

logger = logging.getLogger(__name__)

REPORT_EVERY_SECONDS = 5.0
# Retention claims its daily turn itself (Chore): checking hourly keeps the day's start
# close to a worker that was down, without a scan each tick.
HOUSEKEEPING_EVERY_SECONDS = 3600
NOTIFY_POLL_SECONDS = 1.0


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
        except NewerDatabase as problem:
            raise CommandError(str(problem)) from None
        self.stopping = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        notify.sync_settings_channels()
        tasks = TaskThreads()
        tasks.start()
        self.stdout.write(f"worker up: {tasks.workers} task threads, tick {tick} s")
        sender = threading.Thread(target=self.deliver_notifications, name="notifications")
        sender.start()
        keeper = None
        if settings.FASTFLOW_EXECUTOR != "local" and settings.RUN_POOL_SIZE:
            keeper = PoolKeeper(worker_id())
            keeper.start()
        supervisor = RunSupervisor()
        supervisor.start()
        try:
            self.run_ticker(tick, reconcile_every)
        finally:
            self.stopping.set()
            supervisor.stop()  # its runs wait for the next worker at once
            sender.join(timeout=10)
            if keeper is not None:
                keeper.stop()
            tasks.stop()
            # What runs and tasks started below this process (local runs: they cannot be
            # re-attached; a warm-up's uv) ends with it.
            end_processes(descendants(os.getpid()))
            with contextlib.suppress(Exception):  # the database may be gone too
                PipelineRun.release_stale(dead_local_workers())
                WorkerProcess.objects.filter(name=worker_id()).delete()

    def run_ticker(self, tick: float, reconcile_every: float) -> None:
        self.report()
        self.tick(reconcile_now=True, startup=True)
        self.housekeeping()
        last_reconcile = last_report = last_housekeeping = time.monotonic()
        while not self.stopping.wait(seconds_until_next_due(tick)):
            if time.monotonic() - last_report >= REPORT_EVERY_SECONDS:
                self.report()
                last_report = time.monotonic()
            if time.monotonic() - last_housekeeping >= HOUSEKEEPING_EVERY_SECONDS:
                self.housekeeping()
                last_housekeeping = time.monotonic()
            due = time.monotonic() - last_reconcile >= reconcile_every
            self.tick(reconcile_now=due)
            if due:
                last_reconcile = time.monotonic()

    def report(self) -> None:
        """Tell the instance this worker is alive, and whether it reaches the engine."""
        try:
            get_executor().check()
            engine_ok, error = True, ""
        except EngineUnavailable as problem:
            engine_ok, error = False, str(problem)
        try:
            WorkerProcess.report(worker_id(), engine_ok=engine_ok, engine_error=error)
        except Exception:
            logger.exception("could not report this worker")

    def deliver_notifications(self) -> None:
        """Send due notifications until the worker stops (its own thread: a slow mail
        server never holds up the ticker)."""
        while not self.stopping.is_set():
            try:
                busy = delivery.deliver_due()
            except Exception:
                logger.exception("sending notifications failed")
                close_old_connections()  # a database gone away: connect anew next time
                busy = 0
            if not busy:
                self.stopping.wait(NOTIFY_POLL_SECONDS)

    def housekeeping(self) -> None:
        """Daily (and at start), each once across all workers: retention of logs and runs,
        the dependency audit; audit-log entries older than AUDIT_RETENTION_DAYS go."""
        try:
            # Long work (archiving many logs, asking OSV about every pipeline): tasks for the
            # task threads, never the ticker's time (schedules would fire late).
            async_task("runs_app.retention.run_daily", group="retention")
            async_task("runs_app.vulnerabilities.check_all_daily", group="audit")
            if removed := AuditEntry.prune():
                logger.info("removed %s audit entries past AUDIT_RETENTION_DAYS", removed)
        except Exception:
            logger.exception("housekeeping failed")

    def tick(self, *, reconcile_now: bool, startup: bool = False) -> None:
        """One pass; errors are logged, never allowed to stop the loop."""
        try:
            if startup:
                requeue_interrupted_warmups()
            if reconcile_now:
                dispatch_warmups()
                counts = reconcile(startup=startup)
                if any(counts.values()):
                    logger.info("reconciled: %s", counts)
            fire_due()
            supervise_daemons()
            request_sync_when_due()
            dispatch()
        except Exception:
            logger.exception("worker tick failed")


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
