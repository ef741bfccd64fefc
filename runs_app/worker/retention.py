"""Retention, once a day in the worker: the logs and CPU/memory samples of ended runs older
than LOG_RETENTION_DAYS, or beyond the newest LOG_RETENTION_RUNS of their pipeline, are
removed — archived first, compressed by day, to BACKUP_DIR when it is set — and the run
rows stay, saying "log removed". Run rows themselves go after RUN_RETENTION_DAYS. Nothing
of a run that has not ended is ever touched."""

from __future__ import annotations

import logging
import zipfile
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from runs_app.artifacts import remove_artifacts
from runs_app.logs import metrics_path
from runs_app.models import Chore, PipelineRun

logger = logging.getLogger(__name__)
CHORE = "retention"
BATCH = 500


@dataclass
class Report:
    logs_removed: int = 0
    logs_archived: int = 0
    runs_pruned: int = 0


def run_daily() -> Report | None:
    """Apply retention if no worker did today; None when it was not this one's turn."""
    if not Chore.claim(CHORE, every=timedelta(hours=23)):
        return None
    try:
        report = apply()
    except Exception as problem:
        logger.exception("retention failed")
        Chore.done(CHORE, {}, error=str(problem))
        raise
    Chore.done(CHORE, asdict(report))
    if report.logs_removed or report.runs_pruned:
        logger.info("retention: %s", asdict(report))
    return report


def apply(now: datetime | None = None) -> Report:
    now = now or timezone.now()
    report = Report()
    ended = PipelineRun.objects.filter(status__in=PipelineRun.FINAL_STATUSES)
    if settings.RUN_RETENTION_DAYS:
        old = ended.filter(finished_at__lt=now - timedelta(days=settings.RUN_RETENTION_DAYS))
        for batch in _batches(old):
            _remove_logs(batch, report, now)
            _, deleted = ended.filter(pk__in=[run.pk for run in batch]).delete()
            report.runs_pruned += deleted.get(PipelineRun._meta.label, 0)
    with_logs = ended.filter(log_removed_at__isnull=True)
    if settings.LOG_RETENTION_DAYS:
        cutoff = now - timedelta(days=settings.LOG_RETENTION_DAYS)
        for batch in _batches(with_logs.filter(finished_at__lt=cutoff)):
            _remove_logs(batch, report, now)
    if settings.LOG_RETENTION_RUNS:
        for pipeline_id in ended.values_list("pipeline_id", flat=True).distinct().order_by():
            newest = PipelineRun.objects.filter(pipeline_id=pipeline_id).order_by(
                "-queued_at", "-id"
            )[: settings.LOG_RETENTION_RUNS]
            beyond = with_logs.filter(pipeline_id=pipeline_id).exclude(
                pk__in=list(newest.values_list("pk", flat=True))
            )
            for batch in _batches(beyond):
                _remove_logs(batch, report, now)
    return report


def _batches(runs: QuerySet[PipelineRun]):
    """Runs in batches by primary key (the set shrinks as it is worked on)."""
    last = 0
    while batch := list(runs.filter(pk__gt=last).select_related("pipeline").order_by("pk")[:BATCH]):
        yield batch
        last = batch[-1].pk


def _remove_logs(runs: list[PipelineRun], report: Report, now: datetime) -> None:
    removed = []
    for run in runs:
        if run.log_removed_at is not None or not run.log_path:
            continue
        files = [Path(run.log_path), metrics_path(run.log_path)]
        if settings.BACKUP_DIR and any(path.exists() for path in files):
            archive_run(run, files)
            report.logs_archived += 1
        for path in files:
            path.unlink(missing_ok=True)
        remove_artifacts(run.log_path)  # a models run's docs and graph go with its log
        removed.append(run.pk)
    # Only runs still ended are marked (a row is never taken back from a live run).
    report.logs_removed += PipelineRun.objects.filter(
        Q(pk__in=removed), status__in=PipelineRun.FINAL_STATUSES
    ).update(log_removed_at=now)


def archive_path(day) -> Path:
    return Path(settings.BACKUP_DIR) / "logs" / f"{day:%Y-%m-%d}.zip"


def archive_run(run: PipelineRun, files: list[Path]) -> None:
    """Add a run's files to the archive of the day it was queued (deflate-compressed zip)."""
    target = archive_path(run.queued_at.astimezone(timezone.get_current_timezone()).date())
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        present = set(archive.namelist())
        for path in files:
            name = f"{run.pipeline.name}/{path.name}"
            if path.exists() and name not in present:
                archive.write(path, name)
