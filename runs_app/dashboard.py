"""What the dashboard shows, gathered with index-friendly queries (fast at 100k+ runs)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from pipelines_app.cron import next_fire_times
from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun

Status = PipelineRun.Status
RECENT_PER_PIPELINE = 20
RECENT_FAILURES = 8


@dataclass
class PipelineOverview:
    pipeline: Pipeline
    recent: list[PipelineRun]  # newest first
    next_run_at: datetime | None
    schedule_note: str

    @property
    def last(self) -> PipelineRun | None:
        return self.recent[0] if self.recent else None

    @property
    def bars(self) -> list[dict]:
        """Oldest → newest: height by duration (relative), colour and label by outcome."""
        runs = list(reversed(self.recent))
        longest = max((r.duration.total_seconds() for r in runs if r.duration), default=0) or 1
        bars = []
        for index, run in enumerate(runs):
            seconds = run.duration.total_seconds() if run.duration else 0
            height = max(8, round(seconds / longest * 100))
            bars.append({"run": run, "height": height, "y": 100 - height, "x": index * 7})
        return bars


def counts() -> dict[str, int]:
    since = timezone.now() - timedelta(days=1)
    last_day = dict(
        PipelineRun.objects.filter(queued_at__gte=since)
        .values_list("status")
        .annotate(n=Count("id"))
    )
    return {
        "running": PipelineRun.objects.filter(status=Status.RUNNING).count(),
        "queued": PipelineRun.objects.filter(status=Status.QUEUED).count(),
        "succeeded_24h": last_day.get(Status.SUCCEEDED, 0),
        "failed_24h": last_day.get(Status.FAILED, 0) + last_day.get(Status.TIMED_OUT, 0),
    }


def recent_failures() -> list[PipelineRun]:
    return list(
        PipelineRun.objects.filter(status__in=[Status.FAILED, Status.TIMED_OUT])
        .select_related("pipeline")
        .order_by("-queued_at", "-id")[:RECENT_FAILURES]
    )


def pipeline_overviews() -> list[PipelineOverview]:
    now = timezone.now()
    overviews = []
    for pipeline in Pipeline.objects.filter(state=Pipeline.State.PRESENT):
        recent = list(pipeline.runs.order_by("-queued_at", "-id")[:RECENT_PER_PIPELINE])
        next_run_at, note = _next_schedule(pipeline, now)
        overviews.append(PipelineOverview(pipeline, recent, next_run_at, note))
    return overviews


def _next_schedule(pipeline: Pipeline, now: datetime) -> tuple[datetime | None, str]:
    """The next time-based start from pipeline.json (cron and one-off times; intervals are
    described, their anchor belongs to the scheduler)."""
    if not pipeline.enabled or not pipeline.is_valid:
        return None, ""
    moments, notes = [], []
    spec = pipeline.spec
    for schedule in spec.schedules:
        if not schedule.enabled or (schedule.end and schedule.end <= now):
            continue
        zone = ZoneInfo(schedule.timezone or spec.timezone or settings.TIME_ZONE)
        start = max(now, schedule.start) if schedule.start else now
        if schedule.cron:
            moments += next_fire_times(schedule.cron, start, zone)
        elif schedule.run_once_at and schedule.run_once_at > now:
            moments.append(schedule.run_once_at)
        elif schedule.interval_seconds:
            notes.append(f"every {schedule.interval_seconds} s")
    return (min(moments) if moments else None), ", ".join(notes)
