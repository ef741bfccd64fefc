"""Firing schedules: each due time claimed once, its run queued in the same transaction.

Firing claims a due time with a conditional UPDATE (next_fire_at = the due time read →
the next one), in the same transaction as the run it queues: a due time fires exactly once
however many workers tick, and never fires without its run. After downtime a schedule that
missed several due times fires once (for the first one missed, so its lateness is the
length of the outage) and plans its next due time from now on; the run records what it was
due for (PipelineRun.scheduled_for) and says how late it started.

A due time queues nothing — and is recorded as a ScheduleSkip, with the reason — while the
schedule's previous run still waits in the queue (a backlog of identical runs would only
grow), or while the pipeline is paused (disabled, invalid, missing). `max_instances` keeps
limiting how many of its runs execute at once.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import DatabaseError, transaction
from django.utils import timezone

from pipelines_app.models import Schedule
from runs_app.models import PipelineRun, RunRefused, ScheduleSkip

logger = logging.getLogger(__name__)


def fire_due(now: datetime | None = None) -> list[PipelineRun]:
    """Queue a run for every schedule whose due time has come; returns the runs queued."""
    now = now or timezone.now()
    due = Schedule.objects.filter(next_fire_at__lte=now).select_related("pipeline")
    runs = []
    broken: list[Exception] = []
    for schedule in due:
        try:
            run = _fire(schedule, now)
        except DatabaseError:
            raise  # the database away: the next turn tries them all again
        except Exception as problem:  # one schedule's fault never stops the others
            logger.exception("%s could not fire", schedule)
            broken.append(problem)
            continue
        if run is not None:
            runs.append(run)
    if broken:
        raise broken[0]  # the schedules loop is failing, and says why
    return runs


def _fire(schedule: Schedule, now: datetime) -> PipelineRun | None:
    due_at = schedule.next_fire_at
    upcoming = schedule.fire_times(now)
    next_fire_at = upcoming[0] if upcoming else None
    with transaction.atomic():
        claimed = Schedule.objects.filter(pk=schedule.pk, next_fire_at=due_at).update(
            next_fire_at=next_fire_at, last_fired_at=due_at
        )
        if not claimed:
            return None  # another worker fired this due time
        if not schedule.is_active:
            _skip(schedule, due_at, ScheduleSkip.Reason.PAUSED)
            return None
        waiting = (
            PipelineRun.objects.filter(schedule=schedule, status=PipelineRun.Status.QUEUED)
            .order_by("queued_at")
            .first()
        )
        if waiting is not None:
            _skip(schedule, due_at, ScheduleSkip.Reason.STILL_QUEUED, waiting_run=waiting)
            return None
        try:
            return PipelineRun.enqueue(
                schedule.pipeline,
                trigger=PipelineRun.Trigger.SCHEDULE,
                schedule=schedule,
                scheduled_for=due_at,
            )
        except RunRefused as refused:
            _skip(schedule, due_at, ScheduleSkip.Reason.REFUSED, detail=str(refused)[:300])
            return None


def _skip(schedule: Schedule, due_at: datetime, reason: str, **fields) -> None:
    logger.info("%s: due time %s skipped: %s", schedule, due_at.isoformat(), reason)
    ScheduleSkip.objects.create(schedule=schedule, due_at=due_at, reason=reason, **fields)
    old = ScheduleSkip.objects.filter(schedule=schedule).values_list("pk", flat=True)[
        ScheduleSkip.KEEP_PER_SCHEDULE :
    ]
    ScheduleSkip.objects.filter(pk__in=list(old)).delete()


def seconds_until_next_due(longest: float) -> float:
    """Sleep until the next schedule is due, but never longer than `longest`."""
    next_due = Schedule.objects.filter(next_fire_at__isnull=False).order_by("next_fire_at")
    moment = next_due.values_list("next_fire_at", flat=True).first()
    if moment is None:
        return longest
    return min(longest, max(0.05, (moment - timezone.now()).total_seconds()))
