"""Worker nodes: the machines (or containers) whose workers follow runs, as their heartbeats
describe them — name, labels, engine, the executors they can start, capacity, container
pool — and whether they take new runs (a drained node does not; its runs in flight finish).
docs/nodes.md."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from runs_app.models.worker import WorkerProcess
from runs_app.placement import node_fits, why_waiting


class WorkerNode(models.Model):
    name = models.CharField(
        max_length=100, unique=True, help_text="WORKER_NAME (the host's name unless set)."
    )
    labels = models.JSONField(default=dict, blank=True, help_text="WORKER_LABELS.")
    capacity = models.PositiveIntegerField(
        default=0, help_text="How many runs it follows at once (WORKER_CAPACITY)."
    )
    engine = models.CharField(max_length=200, blank=True, help_text="What runs its runs.")
    placed_by_cluster = models.BooleanField(
        default=False,
        help_text="A cluster (Docker Swarm) places its runs: it takes runs of any placement.",
    )
    executors = models.JSONField(
        default=list,
        blank=True,
        help_text="The executors its runs can take: its own (FASTFLOW_EXECUTOR) and those of "
        "PIPELINE_EXECUTORS its machine can start.",
    )
    pool = models.JSONField(
        default=dict, blank=True, help_text="Its container pool: ready, target and maximum."
    )
    seen_at = models.DateTimeField(default=timezone.now)
    draining = models.BooleanField(
        default=False, help_text="Takes no new runs; the runs it follows finish."
    )
    drained_at = models.DateTimeField(null=True, blank=True)
    drained_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def alive(cls) -> models.QuerySet[WorkerNode]:
        """Nodes with a worker heard from within RUN_HEARTBEAT_TIMEOUT."""
        recent = timezone.now() - timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT)
        return cls.objects.filter(seen_at__gte=recent)

    @classmethod
    def report(
        cls,
        name: str,
        *,
        labels: dict,
        capacity: int,
        engine: str,
        pool: dict,
        placed_by_cluster: bool = False,
        executors: list[str] | None = None,
    ) -> None:
        """A worker of this node is alive (its drain stays as it is)."""
        fields = {
            "labels": labels,
            "capacity": capacity,
            "engine": engine,
            "pool": pool,
            "placed_by_cluster": placed_by_cluster,
            "executors": executors or [],
            "seen_at": timezone.now(),
        }
        if not cls.objects.filter(name=name).update(**fields):
            cls.objects.get_or_create(name=name, defaults=fields)

    @classmethod
    def why_waiting(cls, placement, executor: str = "") -> str:
        """Why no live worker takes runs of a pipeline with this placement (and executor)
        now ("" when one would, or when no worker is alive at all)."""
        return why_waiting(list(cls.alive()), placement, executor)

    @property
    def is_alive(self) -> bool:
        return self.seen_at >= timezone.now() - timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT)

    def fits(self, placement, executor: str = "") -> bool:
        return node_fits(self, placement, executor)

    def drain(self, by: str = "") -> None:
        """No new runs from now on; those it follows finish."""
        self.draining, self.drained_at, self.drained_by = True, timezone.now(), by[:150]
        self.save(update_fields=["draining", "drained_at", "drained_by"])

    def resume(self) -> None:
        self.draining, self.drained_at, self.drained_by = False, None, ""
        self.save(update_fields=["draining", "drained_at", "drained_by"])

    @property
    def processes(self) -> models.QuerySet[WorkerProcess]:
        return WorkerProcess.objects.filter(node=self.name)
