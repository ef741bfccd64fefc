"""The worker processes that are alive, as their tickers report them."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

# A worker killed without a clean stop leaves its row; it is removed after this long.
FORGET_AFTER = timedelta(days=1)


class WorkerProcess(models.Model):
    """A running `manage.py worker`: its heartbeat reports every few seconds, and says
    whether it can reach the Docker engine and how its threads are (runs_app.worker.loops). A
    clean stop removes the row."""

    name = models.CharField(max_length=120, unique=True, help_text="host:pid:token")
    node = models.CharField(max_length=100, blank=True, help_text="Its node (WORKER_NAME).")
    hostname = models.CharField(max_length=100)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    seen_at = models.DateTimeField(default=timezone.now)
    engine_ok = models.BooleanField(null=True, help_text="Whether it reached the engine.")
    engine_error = models.TextField(blank=True)
    threads = models.JSONField(
        default=list,
        blank=True,
        help_text="Its threads as it last reported them: alive, restarts, each loop's state.",
    )
    degraded = models.TextField(
        blank=True, help_text="Why its loops fail or its threads were restarted (empty: well)."
    )

    class Meta:
        ordering = ["-seen_at"]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def report(
        cls,
        name: str,
        *,
        engine_ok: bool | None,
        engine_error: str = "",
        threads: list[dict] | None = None,
        degraded: str = "",
        node: str = "",
    ) -> None:
        """This worker is alive; workers not heard from for a day are forgotten."""
        cls.objects.filter(seen_at__lt=timezone.now() - FORGET_AFTER).delete()
        hostname, pid, _ = name.split(":", 2)
        fields = {
            "engine_ok": engine_ok,
            "engine_error": engine_error,
            "threads": threads or [],
            "degraded": degraded,
            "node": node,
        }
        updated = cls.objects.filter(name=name).update(seen_at=timezone.now(), **fields)
        if not updated:
            cls.objects.create(name=name, hostname=hostname, pid=int(pid), **fields)

    @classmethod
    def alive(cls) -> models.QuerySet[WorkerProcess]:
        """Workers heard from within RUN_HEARTBEAT_TIMEOUT."""
        recent = timezone.now() - timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT)
        return cls.objects.filter(seen_at__gte=recent)

    @property
    def health(self) -> str:
        """ "ok", "degraded: <why>", or "not heard from" — in plain words."""
        if not self.is_alive:
            return "not heard from"
        return f"degraded: {self.degraded}" if self.degraded else "ok"

    @property
    def is_alive(self) -> bool:
        return self.seen_at >= timezone.now() - timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT)
