"""/metrics in Prometheus' format: every value is read from the database at scrape time, so
the figures are right however many web and worker processes run (no per-process counters
to merge), and survive restarts.

Run durations and setup durations are histograms computed by one aggregate query each."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Min, Q, Sum
from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from pipelines_app.models import GitSource, Pipeline, Schedule, Sync
from runs_app.models import PipelineRun, WorkerProcess

DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)
SETUP_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)
Status = PipelineRun.Status


def _histogram(name: str, help_text: str, queryset, field: str, buckets) -> HistogramMetricFamily:
    """Per pipeline: cumulative bucket counts and the sum, in one GROUP BY query."""
    aggregates = {
        f"le_{index}": Count("pk", filter=Q(**{f"{field}__lte": timedelta(seconds=bound)}))
        for index, bound in enumerate(buckets)
    }
    rows = (
        queryset.exclude(**{f"{field}__isnull": True})
        .values("pipeline__name")
        .annotate(total=Count("pk"), total_seconds=Sum(field), **aggregates)
        .order_by()
    )
    family = HistogramMetricFamily(name, help_text, labels=["pipeline"])
    for row in rows:
        counts = [(str(float(bound)), row[f"le_{i}"]) for i, bound in enumerate(buckets)]
        total = row["total_seconds"]
        seconds = total.total_seconds() if isinstance(total, timedelta) else (total or 0) / 1e6
        family.add_metric(
            [row["pipeline__name"]], [*counts, ("+Inf", row["total"])], sum_value=seconds
        )
    return family


class FastFlowCollector(Collector):
    def collect(self):
        now = timezone.now()
        runs = PipelineRun.objects.all()
        outcomes = CounterMetricFamily(
            "fastflow_runs",
            "Runs that ended, by pipeline and outcome",
            labels=["pipeline", "status"],
        )
        ended = (
            runs.filter(status__in=PipelineRun.FINAL_STATUSES)
            .values("pipeline__name", "status")
            .annotate(count=Count("pk"))
            .order_by()
        )
        for row in ended:
            outcomes.add_metric([row["pipeline__name"], row["status"]], row["count"])
        yield outcomes

        finished = runs.filter(status__in=PipelineRun.FINAL_STATUSES).annotate(
            duration=ExpressionWrapper(F("finished_at") - F("started_at"), DurationField())
        )
        yield _histogram(
            "fastflow_run_duration_seconds",
            "From the container's start to the run's end",
            finished.filter(started_at__isnull=False),
            "duration",
            DURATION_BUCKETS,
        )
        yield _histogram(
            "fastflow_run_setup_duration_seconds",
            "From the container's start until the pipeline's code starts (environment setup)",
            runs,
            "setup_duration",
            SETUP_BUCKETS,
        )

        queued = runs.filter(status=Status.QUEUED).filter(
            Q(not_before__isnull=True) | Q(not_before__lte=now)
        )
        waiting = queued.aggregate(count=Count("pk"), oldest=Min("queued_at"))
        yield GaugeMetricFamily(
            "fastflow_queue_depth", "Runs waiting in the queue for a slot", value=waiting["count"]
        )
        oldest = (now - waiting["oldest"]).total_seconds() if waiting["oldest"] else 0
        yield GaugeMetricFamily(
            "fastflow_queue_oldest_age_seconds", "How long the oldest queued run has waited",
            value=oldest,
        )  # fmt: skip
        in_flight = GaugeMetricFamily(
            "fastflow_runs_in_flight", "Runs holding a slot", labels=["status"]
        )
        counts = dict(
            runs.filter(status__in=PipelineRun.IN_FLIGHT_STATUSES)
            .values_list("status")
            .annotate(count=Count("pk"))
            .order_by()
        )
        for status in PipelineRun.IN_FLIGHT_STATUSES:
            in_flight.add_metric([status], counts.get(status, 0))
        yield in_flight

        lateness = GaugeMetricFamily(
            "fastflow_schedule_lateness_seconds",
            "How far past its due time a schedule's next run is (0: on time)",
            labels=["pipeline", "schedule"],
        )
        due = Schedule.objects.filter(
            enabled=True, pipeline__enabled=True, pipeline__state=Pipeline.State.PRESENT,
            next_fire_at__isnull=False,
        ).values_list("pipeline__name", "config_id", "next_fire_at")  # fmt: skip
        for pipeline, config_id, next_fire_at in due:
            lateness.add_metric(
                [pipeline, config_id], max(0.0, (now - next_fire_at).total_seconds())
            )
        yield lateness

        workers = GaugeMetricFamily(
            "fastflow_worker_last_seen_seconds", "Seconds since each worker last reported",
            labels=["worker", "engine_ok"],
        )  # fmt: skip
        for name, seen_at, engine_ok in WorkerProcess.objects.values_list(
            "name", "seen_at", "engine_ok"
        ):
            workers.add_metric(
                [name, str(bool(engine_ok)).lower()], (now - seen_at).total_seconds()
            )
        yield workers
        yield GaugeMetricFamily(
            "fastflow_workers_alive", "Workers heard from within RUN_HEARTBEAT_TIMEOUT",
            value=WorkerProcess.alive().count(),
        )  # fmt: skip

        yield from self._sync(now)
        warm = GaugeMetricFamily(
            "fastflow_pipelines_by_warmup_status", "Present pipelines by dependency warm-up state",
            labels=["status"],
        )  # fmt: skip
        by_status = dict(
            Pipeline.objects.filter(state=Pipeline.State.PRESENT)
            .values_list("warm_status")
            .annotate(count=Count("pk"))
            .order_by()
        )
        for status in ["", *Pipeline.WarmStatus.values]:
            warm.add_metric([status or "none"], by_status.get(status, 0))
        yield warm

    def _sync(self, now):
        if not GitSource.load().is_configured:
            return
        last = Sync.objects.exclude(status=Sync.Status.RUNNING).first()
        succeeded = Sync.objects.filter(status=Sync.Status.SUCCEEDED).aggregate(
            at=Max("finished_at")
        )["at"]
        yield GaugeMetricFamily(
            "fastflow_sync_last_success_timestamp_seconds",
            "When the repository last synced successfully (0: never)",
            value=succeeded.timestamp() if succeeded else 0,
        )
        yield GaugeMetricFamily(
            "fastflow_sync_last_failed", "1 when the last finished sync failed",
            value=1 if last is not None and last.status == Sync.Status.FAILED else 0,
        )  # fmt: skip


def registry() -> CollectorRegistry:
    """A registry of Fast-Flow's figures only (no per-process Python metrics: they would
    describe whichever web process answered the scrape)."""
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(FastFlowCollector())
    return collectors
