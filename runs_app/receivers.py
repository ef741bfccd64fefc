"""The run side's answers to the catalogue's signals (pipelines_app.signals)."""

from __future__ import annotations

from django.conf import settings
from django.dispatch import receiver

from pipelines_app.signals import catalogue_changed, checkouts_in_use
from runs_app.models import PipelineRun
from runs_app.warmup import request_warmups


@receiver(catalogue_changed)
def warm_changed_requirements(sender, **kwargs) -> None:
    """UV_PRE_HEAT: what a discovery changed is warmed before its next run needs it."""
    if settings.UV_PRE_HEAT:
        request_warmups()


@receiver(checkouts_in_use)
def commits_of_runs_in_flight(sender, **kwargs) -> set[str]:
    return set(
        PipelineRun.objects.filter(status__in=PipelineRun.IN_FLIGHT_STATUSES)
        .exclude(git_commit="")
        .values_list("git_commit", flat=True)
    )
