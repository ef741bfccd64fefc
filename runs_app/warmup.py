"""Which pipelines need a dependency warm-up, and handing warm-ups to the worker.

After every discovery (and so every sync) with UV_PRE_HEAT, pipelines whose environment
changed are marked pending (`request_warmups`; the admin's "Warm now" forces it);
`dispatch_warmups()` starts at most WARMUP_CONCURRENCY at once as worker tasks (claimed
with a conditional UPDATE, like runs), so warm-ups never take the workers runs need. The
warm-up itself runs in the worker (runs_app.worker.warming).
"""

from __future__ import annotations

from django.db import transaction
from django_q.tasks import async_task

from pipelines_app.models import Pipeline
from runs_app.models import EnvironmentLock

WARM_TASK = "runs_app.worker.warming.warm"
WARMUP_CONCURRENCY = 2
Warm = Pipeline.WarmStatus


def needs_warming(pipeline: Pipeline) -> bool:
    return pipeline.needs_environment and (
        pipeline.warmed_hash != pipeline.environment_key
        or not EnvironmentLock.objects.filter(
            pipeline=pipeline, environment_key=pipeline.environment_key
        ).exists()
    )


def request_warmups(names: list[str] | None = None, *, force: bool = False) -> int:
    """Mark pipelines to warm: those whose environment changed (all named ones if force)."""
    candidates = Pipeline.objects.filter(state=Pipeline.State.PRESENT, config_errors=[]).exclude(
        warm_status__in=[Warm.PENDING, Warm.WARMING]
    )
    if names is not None:
        candidates = candidates.filter(name__in=names)
    wanted = [p.pk for p in candidates if p.needs_environment and (force or needs_warming(p))]
    marked = Pipeline.objects.filter(pk__in=wanted).exclude(
        warm_status__in=[Warm.PENDING, Warm.WARMING]
    )
    count = marked.update(warm_status=Warm.PENDING, warm_error="")
    if count:
        dispatch_warmups()
    return count


def requeue_interrupted_warmups() -> int:
    """At a worker's start: warm-ups of a worker that died are started again."""
    return Pipeline.objects.filter(warm_status=Warm.WARMING).update(warm_status=Warm.PENDING)


def dispatch_warmups() -> list[int]:
    """Start pending warm-ups while fewer than WARMUP_CONCURRENCY are warming."""
    started = []
    warming = Pipeline.objects.filter(warm_status=Warm.WARMING).count()
    pending = Pipeline.objects.filter(warm_status=Warm.PENDING).order_by("pk")
    for pk in pending.values_list("pk", flat=True)[: max(0, WARMUP_CONCURRENCY - warming)]:
        # Claimed and queued together: when the queue (Redis, or the database) cannot take
        # the task, the claim is undone and the next turn hands it out again.
        with transaction.atomic():
            if Pipeline.objects.filter(pk=pk, warm_status=Warm.PENDING).update(
                warm_status=Warm.WARMING
            ):
                async_task(WARM_TASK, pk, group="warmup")
                started.append(pk)
    return started
