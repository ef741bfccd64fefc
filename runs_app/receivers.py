"""The run side's answers to the catalogue's signals (pipelines_app.signals)."""

from __future__ import annotations

from django.conf import settings
from django.dispatch import receiver

from pipelines_app.models import Sync
from pipelines_app.signals import catalogue_changed, checkouts_in_use, sync_finished
from runs_app import notify
from runs_app.models import PipelineRun
from runs_app.signals import run_ended
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


@receiver(run_ended)
def tell_of_the_outcome(sender, run: PipelineRun, **kwargs) -> None:
    notify.run_ended(run)


@receiver(sync_finished)
def tell_of_failing_syncs(sender, sync: Sync, **kwargs) -> None:
    if sync.status == Sync.Status.FAILED:
        notify.sync_failed(sync.error)
    else:
        notify.sync_succeeded()
