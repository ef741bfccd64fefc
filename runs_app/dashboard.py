"""What the dashboard shows, gathered with index-friendly queries (fast at a million runs):
what runs and waits now, the last day's outcomes, recent failures, each pipeline's recent
runs. The charts are drawn in runs_app.dashboard_charts, the attention list and storage in
runs_app.attention."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, Min, QuerySet
from django.db.models.functions import Floor
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from pipelines_app.models import Pipeline, Schedule
from runs_app.models import PipelineRun, WorkerNode, WorkerProcess, with_last_run
from runs_app.placement import why_waiting
from runs_app.timespans import SecondsBetween, ended_or

Status = PipelineRun.Status
RECENT_PER_PIPELINE = 20
RECENT_FAILURES = 6
NOW_SHOWN = 6  # rows of running and of waiting runs; the card keeps that height
CHART_WINDOW = 1000  # newest runs of the instance that feed the small charts


@dataclass
class ChartRun:
    """A bar of a pipeline's small chart: light tuples, not model instances (fast at scale)."""

    status: str
    seconds: float | None  # None: never started

    @property
    def label(self) -> str:
        took = f"{self.seconds:.1f} s" if self.seconds is not None else "not run"
        return f"{PipelineRun.Status(self.status).label}, {took}"


@dataclass
class PipelineOverview:
    pipeline: Pipeline  # annotated with last_run_status, last_run_at, last_run_public_id
    recent: list[ChartRun]  # oldest first
    next_run_at: datetime | None

    @property
    def sparkline(self) -> str:
        """The dashboard's small chart: a path per outcome and one label in words (fifty of
        them on a page: a fifth of the bytes of a rectangle and a title per run)."""
        if not self.recent:
            return ""
        groups: dict[str, list[str]] = defaultdict(list)
        for index, (run, height) in enumerate(self._bar_heights()):
            groups[run.status].append(f"M{index * 7} 100v-{height}h5v{height}z")
        paths = "".join(
            f'<path class="bar-{status}" d="{"".join(bars)}"/>' for status, bars in groups.items()
        )
        counts = ", ".join(
            f"{len(groups[status])} {Status(status).label}"
            for status in Status.values
            if status in groups
        )
        return format_html(
            '<svg class="sparkline" width="140" height="24" viewBox="0 0 {} 100" '
            'preserveAspectRatio="none" role="img" aria-label="{}">{}</svg>',
            max(140, len(self.recent) * 7),
            f"its last {len(self.recent)} runs: {counts}",
            SafeString(paths),  # statuses and numbers only
        )

    def duration_chart(self, width: int, height: int) -> str:
        """A pipeline page's chart: one bar per run, height by duration, colour class and
        title (outcome, duration) by run."""
        if not self.recent:
            return ""
        bars = format_html_join(
            "",
            '<rect class="bar-{}" x="{}" y="{}" width="5" height="{}"><title>{}</title></rect>',
            (
                (run.status, index * 7, 100 - bar, bar, run.label)
                for index, (run, bar) in enumerate(self._bar_heights())
            ),
        )
        return format_html(
            '<svg class="sparkline" width="{}" height="{}" viewBox="0 0 {} 100" '
            'preserveAspectRatio="none" role="img" aria-label="{} recent runs">{}</svg>',
            width,
            height,
            max(140, len(self.recent) * 7),
            len(self.recent),
            bars,
        )

    def _bar_heights(self) -> list[tuple[ChartRun, int]]:
        """Each run with its bar's height, 8 to 100 by duration (the longest is 100)."""
        longest = max((r.seconds or 0 for r in self.recent), default=0) or 1
        return [(run, max(8, round((run.seconds or 0) / longest * 100))) for run in self.recent]

    @property
    def success_rate(self) -> int | None:
        """Per cent of its recent ended runs that succeeded (None before any ended)."""
        ended = [r for r in self.recent if r.status in PipelineRun.FINAL_STATUSES]
        if not ended:
            return None
        return round(100 * sum(r.status == Status.SUCCEEDED for r in ended) / len(ended))


@dataclass
class Now:
    """Runs in flight (with the worker node that follows each) and runs that wait (with
    why, when no live worker may take them)."""

    running: list[PipelineRun] = field(default_factory=list)
    running_total: int = 0
    waiting: list[PipelineRun] = field(default_factory=list)
    waiting_total: int = 0


def now() -> Now:
    in_flight = PipelineRun.objects.filter(status__in=PipelineRun.IN_FLIGHT_STATUSES)
    queued = PipelineRun.objects.filter(status=Status.QUEUED)
    running = list(in_flight.select_related("pipeline").order_by("queued_at", "id")[:NOW_SHOWN])
    waiting = list(queued.select_related("pipeline").order_by("queued_at", "id")[:NOW_SHOWN])
    nodes_of = dict(
        WorkerProcess.objects.filter(
            name__in=[r.worker_id for r in running if r.worker_id]
        ).values_list("name", "node")
    )
    for run in running:
        run.node = nodes_of.get(run.worker_id) or run.worker_id.partition(":")[0]
    alive = list(WorkerNode.alive())
    for run in waiting:
        placement, executor = run.pipeline.spec.placement, run.pipeline.executor_wanted
        run.why = why_waiting(alive, placement, executor) if alive else "no worker is up"
    return Now(
        running=running,
        running_total=len(running) if len(running) < NOW_SHOWN else in_flight.count(),
        waiting=waiting,
        waiting_total=len(waiting) if len(waiting) < NOW_SHOWN else queued.count(),
    )


@dataclass
class LastDay:
    counts: dict[str, int]  # status → runs queued in the last 24 hours
    hours: list[tuple[datetime, dict[str, int]]]  # oldest first: an hour and its counts

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        return self.counts.get(Status.FAILED, 0) + self.counts.get(Status.TIMED_OUT, 0)


def last_day() -> LastDay:
    """The last 24 hours by hour and outcome."""
    end = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=24)
    hours = [(start + timedelta(hours=h), {}) for h in range(24)]
    counts: dict[str, int] = {}
    # Counted by the database, per hour and outcome: a day of a busy instance is thousands
    # of runs, and a hundred rows come back.
    rows = (
        PipelineRun.objects.filter(queued_at__gte=start, queued_at__lt=end)
        .annotate(hour=Floor(SecondsBetween("queued_at", start) / 3600))
        .values_list("hour", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for hour, status, n in rows:
        counts[status] = counts.get(status, 0) + n
        bucket = hours[min(23, int(hour))][1]
        bucket[status] = bucket.get(status, 0) + n
    return LastDay(counts, hours)


def recent_failures() -> list[PipelineRun]:
    # One indexed query per status, merged here: `status IN (...) ORDER BY queued_at` would
    # make the database sort every failure ever recorded.
    newest: list[PipelineRun] = []
    for status in (Status.FAILED, Status.TIMED_OUT):
        newest += PipelineRun.objects.filter(status=status).select_related("pipeline")[
            :RECENT_FAILURES
        ]
    newest.sort(key=lambda run: (run.queued_at, run.id), reverse=True)
    return newest[:RECENT_FAILURES]


def pipeline_overviews() -> list[PipelineOverview]:
    """Every present pipeline with its last run and a chart of its recent runs.

    The charts come from the instance's newest runs in one indexed query (a pipeline that
    has not run lately shows fewer bars); the last run is exact, via a subquery each.
    """
    pipelines = with_last_run(Pipeline.objects.filter(state=Pipeline.State.PRESENT))
    recent: dict[int, list[ChartRun]] = {}
    rows = _chart_rows(PipelineRun.objects.all(), "pipeline_id")[:CHART_WINDOW]
    for pipeline_id, status, seconds in rows:
        bars = recent.setdefault(pipeline_id, [])
        if len(bars) < RECENT_PER_PIPELINE:
            bars.append(ChartRun(status, seconds))
    next_due = _next_due_times()
    overviews = []
    for pipeline in pipelines:
        bars = list(reversed(recent.get(pipeline.pk, [])))
        overviews.append(PipelineOverview(pipeline, bars, _next_run(pipeline, next_due)))
    return overviews


def pipeline_overview(pipeline: Pipeline, count: int = 30) -> PipelineOverview:
    """One pipeline's newest runs as a chart, and its next due time (its page's overview)."""
    bars = [ChartRun(*run) for run in reversed(_chart_rows(pipeline.runs.all())[:count])]
    return PipelineOverview(pipeline, bars, _next_run(pipeline, _next_due_times(pipeline.pk)))


def _next_run(pipeline: Pipeline, due_times: dict[int, datetime]) -> datetime | None:
    """Its next scheduled run; none while its schedules are paused (it is disabled, broken
    or missing)."""
    return due_times.get(pipeline.pk) if pipeline.enabled and pipeline.is_runnable else None


def _chart_rows(runs: QuerySet[PipelineRun], *first: str) -> QuerySet:
    """Newest first: (*first, status, seconds it ran so far); the database works out the
    seconds (runs_app.timespans)."""
    took = SecondsBetween(ended_or(timezone.now()), "started_at")
    return runs.order_by("-queued_at", "-id").values_list(*first, "status", took)


def _next_due_times(pipeline_id: int | None = None) -> dict[int, datetime]:
    """The scheduler's next due time per pipeline (UI and pipeline.json schedules alike)."""
    schedules = Schedule.objects.filter(next_fire_at__isnull=False, enabled=True)
    if pipeline_id is not None:
        schedules = schedules.filter(pipeline_id=pipeline_id)
    rows = (
        schedules.values("pipeline_id")
        .annotate(next_due=Min("next_fire_at"))
        .values_list("pipeline_id", "next_due")
    )
    return dict(rows)
