"""/metrics in Prometheus' format: every value is read from the database at scrape time, so
the figures are right however many web and worker processes run (no per-process counters
to merge), and survive restarts.

Runs by outcome and the duration histograms come from running totals kept as each run
ends (runs_app.models.tally): a few rows, whatever the history, and never lower after old
runs are pruned."""

from __future__ import annotations

from django.db.models import Count, Max, Min, Q
from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from pipelines_app.models import GitSource, Pipeline, Schedule, Sync
from runs_app.models import Channel, Delivery, PipelineRun, RunTally, WorkerProcess
from runs_app.models.tally import DURATION_BUCKETS, SETUP_BUCKETS

Status = PipelineRun.Status


def _histogram(name: str, help_text: str, per_pipeline: dict, bounds: tuple):
    """Cumulative buckets and the sum per pipeline, from the tallies' per-bucket counts."""
    family = HistogramMetricFamily(name, help_text, labels=["pipeline"])
    for pipeline, (buckets, total) in sorted(per_pipeline.items()):
        cumulative, counts = 0, []
        for bound, count in zip([*map(float, bounds), "+Inf"], buckets, strict=True):
            cumulative += count
            counts.append((str(bound), cumulative))
        family.add_metric([pipeline], counts, sum_value=total)
    return family


def _add(into: dict, pipeline: str, buckets: list[int], total: float, size: int) -> None:
    summed, seconds = into.get(pipeline, ([0] * size, 0.0))
    into[pipeline] = ([a + b for a, b in zip(summed, buckets or [0] * size, strict=True)],
                      seconds + total)  # fmt: skip


class FastFlowCollector(Collector):
    def collect(self):
        now = timezone.now()
        runs = PipelineRun.objects.all()
        outcomes = CounterMetricFamily(
            "fastflow_runs",
            "Runs that ended, by pipeline and outcome",
            labels=["pipeline", "status"],
        )
        durations: dict = {}
        setups: dict = {}
        for tally in RunTally.objects.order_by("pipeline_name", "status"):
            outcomes.add_metric([tally.pipeline_name, tally.status], tally.count)
            _add(durations, tally.pipeline_name, tally.duration_buckets, tally.duration_sum,
                 len(DURATION_BUCKETS) + 1)  # fmt: skip
            _add(setups, tally.pipeline_name, tally.setup_buckets, tally.setup_sum,
                 len(SETUP_BUCKETS) + 1)  # fmt: skip
        yield outcomes
        yield _histogram(
            "fastflow_run_duration_seconds",
            "From the container's start to the run's end",
            durations,
            DURATION_BUCKETS,
        )
        yield _histogram(
            "fastflow_run_setup_duration_seconds",
            "From the container's start until the pipeline's code starts (environment setup)",
            setups,
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
        yield GaugeMetricFamily(
            "fastflow_workers_degraded", "Live workers whose loops fail or threads restarted",
            value=WorkerProcess.alive().exclude(degraded="").count(),
        )  # fmt: skip

        yield from self._sync(now)
        failures = CounterMetricFamily(
            "fastflow_notification_failures", "Failed delivery attempts, by channel",
            labels=["channel"],
        )  # fmt: skip
        failing = GaugeMetricFamily(
            "fastflow_notification_channel_failing",
            "1 when a channel's last deliveries kept failing", labels=["channel"],
        )  # fmt: skip
        for channel in Channel.objects.all():
            failures.add_metric([channel.name], channel.failures_total)
            failing.add_metric([channel.name], int(channel.is_failing))
        yield failures
        yield failing
        yield GaugeMetricFamily(
            "fastflow_notifications_waiting", "Deliveries waiting to be sent (or retried)",
            value=Delivery.objects.filter(status=Delivery.Status.PENDING).count(),
        )  # fmt: skip
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
