"""A run is one attempt at executing a pipeline; its row answers every question about it.

The state machine. Every arrow is one method of PipelineRun doing one conditional UPDATE
that names the state it leaves, so two processes can never both make the same move (the
loser's UPDATE matches no row):

    enqueue() ──▶ queued ──── request_cancel() ─────────────────────────────▶ cancelled
                    │
                    │ claim_runs()       the dispatcher: a slot is free (MAX_CONCURRENT_RUNS,
                    ▼                    max_instances), oldest first; hands it to a worker
                 claimed ── request_cancel(), no container yet ─────────────▶ cancelled
                  ▲   │
     release()    │   │ take()           one worker process becomes its follower: it holds
     release_     │   │                  the lease (worker_id) and renews it (beat())
     stale()      │   ▼
                 running ── finish(status, …) ──▶ succeeded │ failed │ timed_out │ cancelled
                                                  (failed, reason lost: its container vanished)

- release(): the follower gives the run up without ending it (the engine is unreachable).
  The container goes on; the next follower re-attaches to it.
- release_stale(): the follower stopped renewing its lease, or its process is known dead
  (reconcile; a worker that stops releases its processes' runs this way too); the run waits
  for a new follower the same way.
- mark_started(): the container exists (its id is recorded before it starts), the one
  change of a running run that is not a move.
- finish(): only the lease holder can finish; a cancel request always wins; a retry of a
  failed attempt is created in the same transaction (at most one per attempt).
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import cached_property

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone

from pipelines_app.bundles import BundleError, bundle_for_run
from pipelines_app.contract import RetryStrategy, RunSettings
from pipelines_app.models import CodeBundle, Pipeline
from runs_app import live, wakeup
from runs_app.limits import Limits, effective_limits
from runs_app.models import chaining
from runs_app.models.chain import ChainLink
from runs_app.models.entry import EntryPoints, RunRefused
from runs_app.models.node import WorkerNode
from runs_app.models.status import RunStatus
from runs_app.models.tally import RunDay, RunTally
from runs_app.models.worker import WorkerProcess
from runs_app.placement import taking
from runs_app.signals import run_ended
from runs_app.slots import Slots

# PostgreSQL advisory lock that serialises claiming across every web and worker process.
DISPATCH_LOCK = zlib.crc32(b"fastflow.dispatch")
CANDIDATE_WINDOW = 500
DEFAULT_RETRY_STRATEGY = RetryStrategy("exponential_backoff")


def with_last_run(pipelines: models.QuerySet[Pipeline]) -> models.QuerySet[Pipeline]:
    """Pipelines annotated with their newest run: last_run_status, _at, _public_id."""
    newest = PipelineRun.objects.filter(pipeline=models.OuterRef("pk")).order_by(
        "-queued_at", "-id"
    )
    return pipelines.annotate(
        last_run_status=models.Subquery(newest.values("status")[:1]),
        last_run_at=models.Subquery(newest.values("queued_at")[:1]),
        last_run_public_id=models.Subquery(newest.values("public_id")[:1]),
    )


class PipelineRun(EntryPoints, models.Model):
    """One attempt. A retry is a new row pointing at the run it retries."""

    Status = RunStatus

    # In flight: holding one of the MAX_CONCURRENT_RUNS slots.
    IN_FLIGHT_STATUSES = (Status.CLAIMED, Status.RUNNING)
    ACTIVE_STATUSES = (Status.QUEUED, *IN_FLIGHT_STATUSES)
    FINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT)

    class FailureReason(models.TextChoices):
        EXIT_CODE = "exit_code", "non-zero exit code"
        STEP_FAILED = "step_failed", "a model or data test failed"
        OUT_OF_MEMORY = "out_of_memory", "out of memory"
        DEPENDENCY_INSTALL = "dependency_install", "dependency install failed"
        IMAGE_MISSING = "image_missing", "worker image missing"
        SECRET = "secret", "a secret does not decrypt"
        LOG_LIMIT = "log_limit", "printed more than LOG_MAX_SIZE_MB"
        LOG_UNWRITABLE = "log_unwritable", "its log could not be written"
        LOST = "lost", "lost (container vanished)"
        NOT_ALLOWED = "not_allowed", "its executor is not allowed here"
        INTERNAL_ERROR = "internal_error", "internal error"

    class Trigger(models.TextChoices):
        MANUAL = "manual", "manual"
        SCHEDULE = "schedule", "schedule"
        WEBHOOK = "webhook", "webhook"
        CHAIN = "chain", "chain (upstream pipeline)"
        RETRY = "retry", "retry"
        DAEMON = "daemon", "daemon (kept running)"
        API = "api", "API"
        CLI = "cli", "command line"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    pipeline = models.ForeignKey(Pipeline, on_delete=models.PROTECT, related_name="runs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    failure_reason = models.CharField(max_length=20, choices=FailureReason.choices, blank=True)
    error_message = models.TextField(blank=True, help_text="Why it failed, in words.")
    exit_code = models.IntegerField(null=True, blank=True)

    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.MANUAL)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="triggered_runs",
    )
    schedule = models.ForeignKey(
        "pipelines_app.Schedule",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
        help_text="The schedule (or webhook key of one) that started it; its overrides apply.",
    )
    config_id = models.CharField(
        "schedule id", max_length=100, blank=True, help_text="schedules[].id whose overrides apply"
    )
    scheduled_for = models.DateTimeField(
        null=True, blank=True, help_text="The due time a schedule fired it for."
    )
    attempt = models.PositiveSmallIntegerField(default=1)
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )
    # Chaining: how many runs started each other before this one (0: nothing started it).
    chain_depth = models.PositiveSmallIntegerField(default=0)

    queued_at = models.DateTimeField(default=timezone.now)
    not_before = models.DateTimeField(
        null=True, blank=True, help_text="A retry waits in the queue until this moment."
    )
    claimed_at = models.DateTimeField(null=True, blank=True, help_text="Left the queue.")
    dispatched_at = models.DateTimeField(
        null=True, blank=True, help_text="Last handed to a worker (again after a release)."
    )
    started_at = models.DateTimeField(null=True, blank=True, help_text="Container started.")
    finished_at = models.DateTimeField(null=True, blank=True)
    setup_duration = models.DurationField(
        null=True, blank=True, help_text="Container start until the pipeline's code starts."
    )

    limits = models.JSONField(
        default=dict, blank=True, help_text="Its effective limits (runs_app.limits), as made."
    )
    uv_version = models.CharField(max_length=40, blank=True)
    git_commit = models.CharField(max_length=40, blank=True)
    bundle = models.ForeignKey(
        CodeBundle,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="runs",
        help_text="The code it runs: its pipeline folder's content when it was queued.",
    )
    environment_lock = models.ForeignKey(
        "runs_app.EnvironmentLock",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
        help_text="The packages it ran with (its warm-up's lock).",
    )
    container_id = models.CharField(max_length=64, blank=True)
    # The executor that started it (docker, swarm, sandbox, local); "" until it started.
    executor = models.CharField(max_length=16, blank=True)
    cluster_waiting = models.CharField(
        max_length=500,
        blank=True,
        help_text="Why its cluster (Docker Swarm) has not placed it yet, in the cluster's words.",
    )
    # Never secret values: the environment without secrets, and only the names of secrets.
    environment = models.JSONField(default=dict, blank=True)
    secret_env_names = models.JSONField(default=list, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    log_removed_at = models.DateTimeField(
        null=True, blank=True, help_text="Its log and samples were removed by retention."
    )

    route = models.CharField(
        max_length=256, blank=True, help_text="What the run wrote to FASTFLOW_ROUTE_FILE."
    )
    # The lease: "host:pid:token" of the one worker process following the run, renewed by
    # heartbeats. Empty unless running.
    worker_id = models.CharField(max_length=120, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)

    cells = models.JSONField(
        default=list, blank=True, help_text="Notebooks: each code cell's status and attempts."
    )
    peak_cpu_percent = models.FloatField(null=True, blank=True)
    peak_memory_bytes = models.BigIntegerField(null=True, blank=True)
    limit_warnings = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-queued_at", "-id"]
        indexes = [
            # Each index ends with the ordering's tie-breaker, so lists need no extra sort.
            # runs of pipeline X, newest first
            models.Index(fields=["pipeline", "-queued_at", "-id"], name="run_pipeline_newest"),
            # runs by status; for queued runs also the FIFO order of the queue
            models.Index(fields=["status", "queued_at", "id"], name="run_status_fifo"),
            # runs in a time window, newest first
            models.Index(fields=["-queued_at", "-id"], name="run_newest"),
            # retention: finished before a moment
            models.Index(fields=["finished_at"], name="run_finished"),
        ]
        constraints = [
            # A failed attempt is retried at most once: a second worker finishing the same
            # attempt, or a crash between finish and retry, can never make two retries.
            models.UniqueConstraint(fields=["retry_of"], name="one_retry_per_attempt")
        ]

    def __str__(self) -> str:
        return f"{self.pipeline.name} #{self.short_id} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("runs_app:detail", args=[self.public_id])

    @property
    def short_id(self) -> str:
        return str(self.public_id)[:8]

    # --- queued ------------------------------------------------------------------------------

    @classmethod
    def enqueue(
        cls,
        pipeline: Pipeline,
        *,
        trigger: str,
        user=None,
        parameters: dict[str, str] | None = None,
        retry_of: PipelineRun | None = None,
        not_before: datetime | None = None,
        schedule=None,
        scheduled_for: datetime | None = None,
        chain_depth: int = 0,
    ) -> PipelineRun:
        """Queue a run (a row first); the dispatcher starts it when a slot is free."""
        if pipeline.state == Pipeline.State.MISSING:
            raise RunRefused(f"{pipeline.name} cannot run: its folder is gone")
        if not pipeline.is_valid:
            raise RunRefused(
                f"{pipeline.name} cannot run until its configuration is fixed: "
                + "; ".join(pipeline.error_messages)
            )
        if retry_of is not None and retry_of.bundle_id is not None:
            # A retry runs the very code that failed.
            bundle, commit = retry_of.bundle, retry_of.git_commit
        else:
            try:
                bundle, commit = bundle_for_run(pipeline), pipeline.bundle_commit
            except (BundleError, OSError) as problem:
                raise RunRefused(f"{pipeline.name} cannot run: {problem}") from None
        run = cls(
            pipeline=pipeline,
            bundle=bundle,
            git_commit=commit,
            trigger=trigger,
            triggered_by=user if user is not None and user.is_authenticated else None,
            parameters=dict(parameters or {}),
            retry_of=retry_of,
            attempt=retry_of.attempt + 1 if retry_of else 1,
            not_before=not_before,
            schedule=schedule if schedule is not None else getattr(retry_of, "schedule", None),
            config_id=(schedule.config_id if schedule else getattr(retry_of, "config_id", "")),
            scheduled_for=scheduled_for,
            chain_depth=chain_depth if retry_of is None else retry_of.chain_depth,
        )
        run.limits = effective_limits(run.run_settings).to_json()
        run.save()
        transaction.on_commit(dispatch)
        return run

    def request_cancel(self) -> str:
        """Cancel: a run without a container at once, a running one through its follower.

        Returns "cancelled", "stopping" or "finished" (nothing left to cancel).
        """
        now = timezone.now()
        runs = PipelineRun.objects.filter(pk=self.pk)
        not_started = Q(status=self.Status.QUEUED) | Q(status=self.Status.CLAIMED, container_id="")
        with transaction.atomic():
            cancelled = runs.filter(not_started).update(
                status=self.Status.CANCELLED, finished_at=now, cancel_requested_at=now, worker_id=""
            )
            if cancelled:
                self.refresh_from_db()
                self._count_outcome()
        if cancelled:
            live.status_changed(self.public_id)
            return "cancelled"
        runs.filter(status__in=self.IN_FLIGHT_STATUSES, cancel_requested_at__isnull=True).update(
            cancel_requested_at=now
        )
        self.refresh_from_db()
        return "stopping" if self.status in self.IN_FLIGHT_STATUSES else "finished"

    # --- claimed -----------------------------------------------------------------------------

    @classmethod
    def claim_runs(cls) -> list[int]:
        """queued → claimed for as many runs as the limits allow, oldest first."""
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [DISPATCH_LOCK])
            # On SQLite the IMMEDIATE transaction already holds the database's write lock.
            # The time is read only now, with the lock held: claims are stamped in the order
            # they happen.
            now = timezone.now()
            flying = cls.objects.filter(status__in=cls.IN_FLIGHT_STATUSES)
            slots = Slots.free(
                in_flight=dict(
                    flying.values_list("pipeline_id").annotate(n=Count("id")).order_by()
                ),
                daemons_in_flight=flying.filter(trigger=cls.Trigger.DAEMON).count(),
                max_runs=settings.MAX_CONCURRENT_RUNS,
                max_daemons=settings.MAX_DAEMON_RUNS,
            )
            if slots.full:
                return []
            # With live workers, a run is claimed only when one of them would take it (its
            # labels fit, it can start the executor the pipeline chose, not drained); without
            # any, runs are claimed and wait as ever.
            nodes = list(WorkerNode.alive())
            candidates = (
                cls.objects.filter(status=cls.Status.QUEUED)
                .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
                .select_related("pipeline")
                .order_by("queued_at", "id")[:CANDIDATE_WINDOW]
            )
            claimed: list[int] = []
            for run in candidates:
                is_daemon = run.trigger == cls.Trigger.DAEMON
                if not slots.admits(run.pipeline_id, is_daemon, run.pipeline.spec.max_instances):
                    continue
                if nodes and not taking(
                    nodes, run.pipeline.spec.placement, run.pipeline.executor_wanted
                ):
                    continue  # it waits (its page says why: WorkerNode.why_waiting)
                took = cls.objects.filter(pk=run.pk, status=cls.Status.QUEUED).update(
                    status=cls.Status.CLAIMED, claimed_at=now
                )
                if took:
                    transaction.on_commit(lambda run=run: live.status_changed(run.public_id))
                    claimed.append(run.pk)
                    slots.take(run.pipeline_id, is_daemon)
                    if slots.full:
                        break
        return claimed

    @classmethod
    def hand_to_workers(cls, run_ids: Iterable[int]) -> None:
        """Wake the workers for these claimed runs (whichever takes one first follows it:
        see take())."""
        run_ids = list(run_ids)
        if not run_ids:
            return
        cls.objects.filter(pk__in=run_ids, status=cls.Status.CLAIMED).update(
            dispatched_at=timezone.now()
        )
        wakeup.announce()

    @classmethod
    def take(cls, pk: int, worker_id: str) -> PipelineRun | None:
        """claimed → running: `worker_id` becomes the run's one follower (holds its lease)."""
        now = timezone.now()
        took = cls.objects.filter(pk=pk, status=cls.Status.CLAIMED).update(
            status=cls.Status.RUNNING, worker_id=worker_id, heartbeat_at=now
        )
        if not took:
            return None
        run = cls.objects.select_related("pipeline", "schedule").get(pk=pk)
        live.status_changed(run.public_id)
        return run

    # --- running: only the lease holder acts --------------------------------------------------

    def _held(self) -> models.QuerySet[PipelineRun]:
        return PipelineRun.objects.filter(
            pk=self.pk, status=self.Status.RUNNING, worker_id=self.worker_id
        )

    def beat(self) -> bool:
        """Renew the lease; False when this process no longer holds it."""
        return bool(self._held().update(heartbeat_at=timezone.now()))

    def mark_started(self, container_id: str) -> bool:
        """Record the container (before it starts, so a successor finds it)."""
        self.container_id = container_id
        return bool(self._held().update(container_id=container_id, started_at=timezone.now()))

    def record(self, **fields) -> bool:
        """Store facts of a run in progress (environment, commit); never a status."""
        assert "status" not in fields
        return bool(self._held().update(**fields))

    def cancel_is_requested(self) -> bool:
        return PipelineRun.objects.filter(pk=self.pk, cancel_requested_at__isnull=False).exists()

    def release(self) -> bool:
        """running → claimed: stop following without ending the run (its container goes on)."""
        released = self._held().update(
            status=self.Status.CLAIMED, worker_id="", heartbeat_at=None, dispatched_at=None
        )
        if released:
            transaction.on_commit(lambda: live.status_changed(self.public_id))
        return bool(released)

    @classmethod
    def release_stale(cls, dead_workers: Iterable[str] = ()) -> list[int]:
        """running → claimed for runs whose follower stopped renewing its lease (or is known
        dead): they wait for a new follower, which re-attaches to their container."""
        stale = timezone.now() - timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT)
        lapsed = cls.objects.filter(status=cls.Status.RUNNING).filter(
            Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True) | Q(worker_id__in=dead_workers)
        )
        released = []
        for pk, holder in lapsed.values_list("pk", "worker_id"):
            if cls.objects.filter(pk=pk, status=cls.Status.RUNNING, worker_id=holder).update(
                status=cls.Status.CLAIMED, worker_id="", heartbeat_at=None, dispatched_at=None
            ):
                released.append(pk)
        return released

    def finish(self, status: str, **fields) -> bool:
        """running → a final status, once, by the lease holder; a cancel request wins.

        A failed (or, with RETRY_ON_TIMEOUT, timed-out) attempt with attempts left gets its
        retry row in the same transaction. False when this process no longer held the run.
        """
        assert status in self.FINAL_STATUSES
        fields.setdefault("finished_at", timezone.now())
        with transaction.atomic():
            held = self._held()
            changed = held.filter(cancel_requested_at__isnull=True).update(status=status, **fields)
            if not changed:
                fields.update(failure_reason="", error_message="cancelled on request")
                changed = held.update(status=self.Status.CANCELLED, **fields)
            if changed:
                self.refresh_from_db()
                self._count_outcome()
                if self._enqueue_retry() is None:
                    chaining.fire_downstream_triggers(self)  # its final outcome: no retry follows
                    run_ended.send(sender=PipelineRun, run=self)
        if not changed:
            self.refresh_from_db()
        return bool(changed)

    def _count_outcome(self) -> None:
        """Add this ended run to the totals /metrics and the calendar read (in the transaction
        that ends it)."""
        duration = (
            self.finished_at - self.started_at if self.started_at and self.finished_at else None
        )
        RunTally.count_run(self.pipeline.name, self.status, duration, self.setup_duration)
        RunDay.count_run(timezone.localdate(self.queued_at), self.status)

    # --- retries -----------------------------------------------------------------------------

    @property
    def attempts_allowed(self) -> int:
        """Retries allowed after the first attempt (pipeline.json or RETRY_ATTEMPTS)."""
        attempts = self.run_settings.retry_attempts
        return settings.RETRY_ATTEMPTS if attempts is None else attempts

    def retry_due_in(self, status: str = "", failure_reason: str = "") -> float | None:
        """Seconds until the retry of this attempt if it ends with `status` and
        `failure_reason` (default: its own), or None when it will not be retried.

        A secret that does not decrypt is not retried: trying again cannot help."""
        status = status or self.status
        failure_reason = failure_reason or self.failure_reason
        retryable = status == self.Status.FAILED or (
            status == self.Status.TIMED_OUT and settings.RETRY_ON_TIMEOUT
        )
        if not retryable or failure_reason == self.FailureReason.SECRET:
            return None
        if self.trigger == self.Trigger.DAEMON:
            return None  # a daemon is restarted by its supervisor (runs_app.worker.daemons)
        if self.attempt > self.attempts_allowed:
            return None
        strategy = self.run_settings.retry_strategy or DEFAULT_RETRY_STRATEGY
        return strategy.delay_before_retry(self.attempt)

    def _enqueue_retry(self) -> PipelineRun | None:
        delay = self.retry_due_in()
        if delay is None or self.retries.exists():
            return None
        try:
            with transaction.atomic():
                return PipelineRun.enqueue(
                    self.pipeline,
                    trigger=self.Trigger.RETRY,
                    user=self.triggered_by,
                    parameters=self.parameters,
                    retry_of=self,
                    not_before=timezone.now() + timedelta(seconds=delay),
                )
        except RunRefused:
            return None  # the pipeline became invalid or vanished meanwhile

    # --- chaining (models/chaining.py) -------------------------------------------------------

    @property
    def started_by(self) -> PipelineRun | None:
        """The upstream run whose end started this one (chaining)."""
        link = ChainLink.objects.filter(downstream=self).select_related("upstream").first()
        return link.upstream if link else None

    # --- reading -----------------------------------------------------------------------------

    @cached_property
    def run_settings(self) -> RunSettings:
        """The pipeline's settings with its schedule's overrides on top."""
        base = self.pipeline.spec.run
        return base.overridden_by(self.schedule.settings) if self.schedule_id else base

    @property
    def effective_limits(self) -> Limits:
        """Its limits as stored when it was made (a run made by an older version: worked
        out from its settings now)."""
        if self.limits:
            return Limits.from_json(self.limits)
        return effective_limits(self.run_settings)

    @property
    def lateness(self) -> timedelta | None:
        """How long after its due time a scheduled run left the queue."""
        if not self.scheduled_for:
            return None
        return (self.claimed_at or self.queued_at) - self.scheduled_for

    @property
    def queue_position(self) -> int | None:
        """1 for the next queued run to start, None when not queued."""
        if self.status != self.Status.QUEUED:
            return None
        ahead = PipelineRun.objects.filter(status=self.Status.QUEUED).filter(
            Q(queued_at__lt=self.queued_at) | Q(queued_at=self.queued_at, id__lt=self.id)
        )
        return ahead.count() + 1

    @classmethod
    def followed_on(cls, node: WorkerNode) -> models.QuerySet[PipelineRun]:
        """The runs a node's workers follow now."""
        names = list(node.processes.values_list("name", flat=True))
        return cls.objects.filter(status=cls.Status.RUNNING, worker_id__in=names)

    @cached_property
    def waiting_reason(self) -> str:
        """Why no live worker takes this queued or claimed run, or why its cluster has not
        placed it yet ("" when nothing holds it up)."""
        if self.status == self.Status.RUNNING:
            return self.cluster_waiting
        if self.status not in (self.Status.QUEUED, self.Status.CLAIMED):
            return ""
        return WorkerNode.why_waiting(self.pipeline.spec.placement, self.pipeline.executor_wanted)

    @cached_property
    def node_name(self) -> str:
        """The worker node following it now ("" when none)."""
        if not self.worker_id:
            return ""
        found = WorkerProcess.objects.filter(name=self.worker_id).values_list("node", flat=True)
        return next(iter(found), "") or self.worker_id.partition(":")[0]

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINAL_STATUSES

    @property
    def duration(self) -> timedelta | None:
        """Wall time from start to finish (or until now while running)."""
        if not self.started_at:
            return None
        return (self.finished_at or timezone.now()) - self.started_at


def dispatch() -> list[int]:
    """Claim what may start now and hand each claimed run to a worker."""
    claimed = PipelineRun.claim_runs()
    PipelineRun.hand_to_workers(claimed)
    return claimed
