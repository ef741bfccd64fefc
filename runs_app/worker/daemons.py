"""Daemons: pipelines with `restart_on_crash`, kept running by the worker's ticker.

`supervise_daemons()` looks at each daemon pipeline once per tick, in a transaction that
holds its Daemon row (select_for_update; SQLite's write lock), so several workers never
start two copies:

- wanted (present, valid, enabled, not paused) and no run in flight → start one (trigger
  "daemon"), unless it ended cleanly (exit 0: it stays stopped until its next
  restart_interval) or a crash's cooldown is not over;
- a crash (failed or timed out) is restarted after `restart_cooldown`; CRASH_LOOP crashes
  within CRASH_WINDOW is a crash loop: each restart then waits twice as long as the one
  before (up to MAX_BACKOFF), and the pipeline page says so;
- `restart_interval` (cron): the running copy is stopped (as a cancel), then started again;
- not wanted any more (disabled, invalid, removed, paused) → its run is stopped;
- a run of it cancelled by a person pauses the daemon (resume it on the pipeline page).

Daemon runs have slots of their own (MAX_DAEMON_RUNS), so they never take the slots of
ordinary runs; they are never retried (the supervisor restarts them) and survive a worker
restart like any run (re-attached, never a second copy: the in-flight run counts).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from pipelines_app.cron import next_fire_times
from pipelines_app.models import Pipeline
from runs_app import notify
from runs_app.models import Daemon, PipelineRun, RunRefused
from runs_app.models.daemon import CRASH_LOOP

Status = PipelineRun.Status
CRASH_WINDOW = timedelta(minutes=10)
MAX_BACKOFF = timedelta(hours=1)
STOPPED_BY_SUPERVISOR = {"restart_interval", "not wanted"}


def daemon_pipelines() -> list[Pipeline]:
    """Pipelines that are daemons now, and those that have been (to stop them)."""
    daemons = list(
        Pipeline.objects.filter(
            state=Pipeline.State.PRESENT, config_errors=[], config__restart_on_crash=True
        )
    )
    known = Pipeline.objects.filter(daemon__isnull=False).exclude(pk__in=[p.pk for p in daemons])
    return [*daemons, *known]


def supervise_daemons(now: datetime | None = None) -> list[PipelineRun]:
    """One pass over every daemon; returns the runs it started."""
    now = now or timezone.now()
    started = []
    for pipeline in daemon_pipelines():
        run = supervise(pipeline, now)
        if run is not None:
            started.append(run)
    return started


def supervise(pipeline: Pipeline, now: datetime) -> PipelineRun | None:
    with transaction.atomic():
        Daemon.objects.get_or_create(pipeline=pipeline)
        daemon = Daemon.objects.select_for_update().get(pipeline=pipeline)
        runs = pipeline.runs.filter(trigger=PipelineRun.Trigger.DAEMON)
        active = runs.filter(status__in=PipelineRun.ACTIVE_STATUSES).first()
        last = runs.order_by("-queued_at", "-id").first()
        if last is not None and last.is_finished and last.pk != daemon.accounted_run_id:
            _account_for_end(daemon, last)
        started = _decide(daemon, pipeline, active, last, now)
        daemon.updated_at = now
        daemon.save()
        return started


def _account_for_end(daemon: Daemon, run: PipelineRun) -> None:
    daemon.accounted_run = run
    daemon.last_exit = f"{Status(run.status).label}" + (
        f" (exit code {run.exit_code})" if run.exit_code is not None else ""
    )
    if run.status in (Status.FAILED, Status.TIMED_OUT):
        ended = run.finished_at or timezone.now()
        recent = [t for t in daemon.crash_times if _moment(t) > ended - CRASH_WINDOW]
        daemon.crash_times = [*recent, ended.isoformat()]
        crashes = len(daemon.crash_times)
        if crashes >= CRASH_LOOP:
            wait = _backoff(timedelta(seconds=run.pipeline.spec.restart_cooldown), crashes)
            notify.crash_loop(run.pipeline, crashes, wait.total_seconds())
    elif run.status == Status.CANCELLED and daemon.stopping_reason not in STOPPED_BY_SUPERVISOR:
        daemon.paused = True  # a person stopped it: it stays stopped until resumed


def _decide(
    daemon: Daemon,
    pipeline: Pipeline,
    active: PipelineRun | None,
    last: PipelineRun | None,
    now: datetime,
) -> PipelineRun | None:
    spec = pipeline.spec
    wanted = (
        pipeline.state == Pipeline.State.PRESENT
        and pipeline.is_valid
        and pipeline.enabled
        and spec.restart_on_crash
        and not daemon.paused
    )
    if not wanted:
        if active is not None:
            daemon.stopping_reason = "not wanted"
            active.request_cancel()
        return None
    if spec.restart_interval and daemon.next_restart_at is None:
        daemon.next_restart_at = next_fire_times(spec.restart_interval, now, _tz(pipeline), 1)[0]
    restart_due = daemon.next_restart_at is not None and daemon.next_restart_at <= now
    if restart_due:
        daemon.next_restart_at = next_fire_times(spec.restart_interval, now, _tz(pipeline), 1)[0]
    if active is not None:
        _end_a_crash_loop_that_is_over(daemon, pipeline, active, now)
        if restart_due:
            daemon.stopping_reason = "restart_interval"
            active.request_cancel()
        return None
    start_at = _start_at(daemon, last, restart_due, now)
    daemon.start_not_before = start_at if start_at and start_at > now else None
    if start_at is None or start_at > now:
        return None
    try:
        run = PipelineRun.enqueue(pipeline, trigger=PipelineRun.Trigger.DAEMON)
    except RunRefused:
        return None
    if last is not None:
        daemon.restarts += 1
    daemon.stopping_reason = ""
    return run


def _end_a_crash_loop_that_is_over(
    daemon: Daemon, pipeline: Pipeline, active: PipelineRun, now: datetime
) -> None:
    """A copy that has stayed up for CRASH_WINDOW ends a crash loop: its crashes are
    forgotten and people are told it recovered."""
    steady = active.started_at is not None and active.started_at <= now - CRASH_WINDOW
    if steady and len(daemon.crash_times) >= CRASH_LOOP:
        daemon.crash_times = []
        notify.crash_loop_over(pipeline)


def _start_at(
    daemon: Daemon, last: PipelineRun | None, restart_due: bool, now: datetime
) -> datetime | None:
    """When to start it again (None: not until something changes)."""
    if last is None or restart_due:
        return now
    if last.status == Status.SUCCEEDED:
        return None  # it ended cleanly: stopped until its next restart_interval
    if last.status == Status.CANCELLED:
        return now  # stopped by the supervisor (a person's cancel paused it instead)
    cooldown = timedelta(seconds=last.pipeline.spec.restart_cooldown)
    return (last.finished_at or now) + _backoff(cooldown, len(daemon.crash_times))


def _backoff(cooldown: timedelta, crashes: int) -> timedelta:
    """The wait before a restart: the cooldown, doubling in a crash loop (up to a cap)."""
    if crashes < CRASH_LOOP:
        return cooldown
    base = max(cooldown, timedelta(seconds=1))
    return min(base * 2 ** (crashes - CRASH_LOOP + 1), MAX_BACKOFF)


def _tz(pipeline: Pipeline) -> ZoneInfo:
    return ZoneInfo(pipeline.spec.timezone or settings.TIME_ZONE)


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)
