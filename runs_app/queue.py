"""The run queue: which queued runs may start now, and handing them to the workers.

Limits: at most MAX_CONCURRENT_RUNS runs are RUNNING across the instance, at most
`max_instances` per pipeline. Queued runs start in FIFO order (queued_at, id) as slots free;
a run whose pipeline is at its limit waits without holding up runs of other pipelines.
Nothing is refused or dropped: a run waits as long as it takes.
"""

from __future__ import annotations

import logging
import zlib
from functools import partial

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from runs_app import live
from runs_app.models import PipelineRun

logger = logging.getLogger(__name__)

# PostgreSQL advisory lock that serialises claiming across every web and worker process.
DISPATCH_LOCK = zlib.crc32(b"fastflow.dispatch")
CANDIDATE_WINDOW = 500


def dispatch() -> list[int]:
    """Claim what may start now and send each claimed run to a worker."""
    claimed = claim_runs()
    if claimed:
        from django_q.tasks import async_task

        for run_id in claimed:
            async_task("runs_app.execution.execute_run", run_id, task_name=f"run-{run_id}")
    return claimed


def claim_runs() -> list[int]:
    """QUEUED → RUNNING for as many runs as the limits allow, oldest first."""
    now = timezone.now()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [DISPATCH_LOCK])
        # On SQLite the IMMEDIATE transaction already holds the database's write lock.
        running = dict(
            PipelineRun.objects.filter(status=PipelineRun.Status.RUNNING)
            .values_list("pipeline_id")
            .annotate(n=Count("id"))
        )
        free_slots = settings.MAX_CONCURRENT_RUNS - sum(running.values())
        if free_slots <= 0:
            return []
        candidates = (
            PipelineRun.objects.filter(status=PipelineRun.Status.QUEUED)
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
            .select_related("pipeline")
            .order_by("queued_at", "id")[:CANDIDATE_WINDOW]
        )
        claimed: list[int] = []
        for run in candidates:
            limit = run.pipeline.spec.max_instances
            if limit is not None and running.get(run.pipeline_id, 0) >= limit:
                continue
            took = PipelineRun.objects.filter(pk=run.pk, status=PipelineRun.Status.QUEUED).update(
                status=PipelineRun.Status.RUNNING, claimed_at=now
            )
            if took:
                transaction.on_commit(partial(live.status_changed, run.public_id))
                claimed.append(run.pk)
                running[run.pipeline_id] = running.get(run.pipeline_id, 0) + 1
                if len(claimed) == free_slots:
                    break
    if claimed:
        logger.info("claimed runs %s", claimed)
    return claimed
