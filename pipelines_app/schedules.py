"""Schedules from pipeline.json kept in step with the file by every discovery.

Rows of origin "file" are rewritten only when a value changed, so their due times survive
restarts; firing them is the run side's job (runs_app.worker.scheduler).
"""

from __future__ import annotations

import logging
from datetime import datetime

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
