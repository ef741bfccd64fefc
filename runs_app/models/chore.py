"""Daily chores of the workers (retention): each runs once a day across all workers."""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.db.models import Q
from django.utils import timezone

# The storage in use (runs_app.worker.storage): one chore for the instance, one per node.
STORAGE = "storage"
STORAGE_NODE_PREFIX = "storage:"


class Chore(models.Model):
    name = models.CharField(max_length=50, unique=True)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)
    last_report = models.JSONField(default=dict, blank=True)
    last_error = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.name

    @classmethod
    def claim(cls, name: str, every: timedelta) -> bool:
        """Whether this process should do `name` now: at most once per `every`, by one
        process among all workers (a conditional UPDATE: exactly one wins)."""
        now = timezone.now()
        cls.objects.get_or_create(name=name)  # (a race to make it is handled by Django)
        due = Q(last_started_at__isnull=True) | Q(last_started_at__lte=now - every)
        return cls.objects.filter(due, name=name).update(last_started_at=now) == 1

    @classmethod
    def done(cls, name: str, report: dict, error: str = "") -> None:
        cls.objects.filter(name=name).update(
            last_finished_at=timezone.now(), last_report=report, last_error=error
        )
