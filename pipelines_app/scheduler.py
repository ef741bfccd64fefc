"""Schedules: kept in step with pipeline.json, and fired when due.

Firing claims a due time with a conditional UPDATE (next_fire_at = the due time read →
the next one), in the same transaction as the run it queues: a due time fires exactly once
however many workers tick, and never fires without its run. After downtime a schedule that
missed several due times fires once (for the first one missed, so its lateness is the
length of the outage) and plans its next due time from now on; the run records what it was
due for (PipelineRun.scheduled_for) and says how late it started.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from pipelines_app.models import Pipeline, Schedule

logger = logging.getLogger(__name__)


def sync_file_schedules(pipelines: list[Pipeline], now: datetime | None = None) -> None:
    """Make each pipeline's pipeline.json schedules rows; untouched rows keep their due time."""
    now = now or timezone.now()
    existing: dict[tuple[int, str], Schedule] = {
        (schedule.pipeline_id, schedule.config_id): schedule
        for schedule in Schedule.objects.filter(pipeline__in=pipelines, origin=Schedule.Origin.FILE)
    }
    for pipeline in pipelines:
        if pipeline.config_errors:
            # An invalid file says nothing reliable: its schedules stay as they were (and
            # are paused while the pipeline cannot run).
            for key in [key for key in existing if key[0] == pipeline.pk]:
                existing.pop(key)
            continue
        wanted = {spec.id: Schedule.values_from_spec(spec) for spec in pipeline.spec.schedules}
        for config_id, values in wanted.items():
            schedule = existing.pop((pipeline.pk, config_id), None)
            if schedule is None:
                _create_file_schedule(pipeline, config_id, values, now)
            else:
                _update_file_schedule(schedule, values, now)
    stale = [schedule.pk for schedule in existing.values()]
    if stale:
        Schedule.objects.filter(pk__in=stale).delete()


def _create_file_schedule(pipeline: Pipeline, config_id: str, values: dict, now) -> None:
    ui_schedule = Schedule.objects.filter(pipeline=pipeline, config_id=config_id).first()
    if ui_schedule is not None:
        # Git is law: the file's schedule of that id replaces one made in the UI.
        logger.warning("%s: pipeline.json's schedule replaces the UI's", ui_schedule)
        ui_schedule.delete()
    schedule = Schedule(
        pipeline=pipeline, config_id=config_id, origin=Schedule.Origin.FILE, **values
    )
    schedule.plan(now)
    schedule.save()


def _update_file_schedule(schedule: Schedule, values: dict, now) -> None:
    changed = [name for name, value in values.items() if getattr(schedule, name) != value]
    if not changed:
        return
    for name in changed:
        setattr(schedule, name, values[name])
    if set(changed) & {*Schedule.TIMING_FIELDS, "enabled"}:
        schedule.plan(now)
    schedule.save()


def fire_due(now: datetime | None = None) -> list:
    """Queue a run for every schedule whose due time has come; returns the runs queued."""
    now = now or timezone.now()
    due = Schedule.objects.filter(next_fire_at__lte=now).select_related("pipeline")
    runs = []
    for schedule in due:
        run = _fire(schedule, now)
        if run is not None:
            runs.append(run)
    return runs


def _fire(schedule: Schedule, now: datetime):
    from runs_app.models import PipelineRun, RunRefused

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
            logger.info("%s: paused (pipeline disabled, invalid or missing)", schedule)
            return None
        try:
            return PipelineRun.enqueue(
                schedule.pipeline,
                trigger=PipelineRun.Trigger.SCHEDULE,
                schedule=schedule,
                scheduled_for=due_at,
            )
        except RunRefused as refused:
            logger.warning("%s: not started: %s", schedule, refused)
            return None


def seconds_until_next_due(longest: float) -> float:
    """Sleep until the next schedule is due, but never longer than `longest`."""
    try:
        next_due = Schedule.objects.filter(next_fire_at__isnull=False).order_by("next_fire_at")
        moment = next_due.values_list("next_fire_at", flat=True).first()
    except Exception:
        logger.exception("could not read the next due time")
        return longest
    if moment is None:
        return longest
    return min(longest, max(0.05, (moment - timezone.now()).total_seconds()))
