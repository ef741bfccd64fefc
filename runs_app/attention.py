"""What needs a person's attention, in plain words, and the storage in use: the dashboard's
"Needs attention" and "Storage" cards. Each reads a few small tables (never the runs)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Count, QuerySet
from django.urls import reverse
from django.utils import timezone

from pipelines_app.models import Pipeline, Sync
from runs_app.models import Chore, Delivery, DependencyCheck, WorkerNode, WorkerProcess
from runs_app.models.chore import STORAGE, STORAGE_NODE_PREFIX

MOST_SHOWN = 12


@dataclass
class Concern:
    words: str
    url: str
    serious: bool = False  # something fails (✖), rather than something to look at (⚠)


def concerns() -> list[Concern]:
    found = [
        *_broken_pipelines(),
        *_failed_warmups(),
        *_dependency_audit(),
        *_workers(),
        *_notifications(),
        *_repository(),
        *_chores(),
    ]
    found.sort(key=lambda concern: not concern.serious)
    return found


def _present() -> QuerySet[Pipeline]:
    return Pipeline.objects.filter(state=Pipeline.State.PRESENT)


def _broken_pipelines() -> list[Concern]:
    broken = _present().exclude(config_errors=[]).order_by("name")[:MOST_SHOWN]
    return [
        Concern(
            f"{p.name}: its pipeline.json has a problem — {p.error_messages[0]}",
            p.get_absolute_url(),
            serious=True,
        )
        for p in broken
    ]


def _failed_warmups() -> list[Concern]:
    failed = _present().filter(warm_status=Pipeline.WarmStatus.FAILED).order_by("name")
    return [
        Concern(
            f"{p.name}: its packages failed to install"
            + (f" — {_first_line(p.warm_error)}" if p.warm_error else ""),
            p.get_absolute_url() + "#dependencies",
            serious=True,
        )
        for p in failed[:MOST_SHOWN]
    ]


def _dependency_audit() -> list[Concern]:
    checks = DependencyCheck.objects.select_related("pipeline").filter(
        pipeline__state=Pipeline.State.PRESENT
    )
    vulnerable = checks.filter(status=DependencyCheck.Status.VULNERABLE).annotate(
        findings=Count("pipeline__vulnerabilities")
    )
    found = [
        Concern(
            f"{c.pipeline.name}: {c.findings} known vulnerabilit{'y' if c.findings == 1 else 'ies'}"
            " in its packages",
            c.pipeline.get_absolute_url() + "#vulnerabilities",
        )
        for c in vulnerable.order_by("pipeline__name")[:MOST_SHOWN]
    ]
    unreachable = list(checks.filter(status=DependencyCheck.Status.UNREACHABLE)[:MOST_SHOWN])
    if unreachable:
        names = ", ".join(c.pipeline.name for c in unreachable)
        why = _first_line(unreachable[0].error) or "the vulnerability service could not be reached"
        found.append(
            Concern(f"Not checked for vulnerabilities ({names}): {why}", reverse("workers"))
        )
    return found


def _workers() -> list[Concern]:
    found = []
    alive = list(WorkerProcess.alive().order_by("name"))
    if not alive:
        found.append(
            Concern("No worker is running: runs wait until one starts", reverse("workers"), True)
        )
    for process in alive:
        if process.engine_ok is False:
            found.append(
                Concern(
                    f"Worker {process.node or process.hostname} cannot reach its container engine: "
                    f"{_first_line(process.engine_error)}",
                    reverse("workers"),
                    serious=True,
                )
            )
        elif process.degraded:
            found.append(
                Concern(
                    f"Worker {process.node or process.hostname} is degraded: {process.degraded}",
                    reverse("workers"),
                )
            )
    for node in WorkerNode.objects.filter(draining=True).order_by("name"):
        by = f" by {node.drained_by}" if node.drained_by else ""
        found.append(
            Concern(f"Node {node.name} is drained{by}: it takes no new runs", reverse("workers"))
        )
    return found


def _notifications() -> list[Concern]:
    since = timezone.now() - timedelta(days=1)
    failed = (
        Delivery.objects.filter(status=Delivery.Status.FAILED, next_attempt_at__gte=since)
        .values_list("channel_name")
        .annotate(n=Count("id"))
        .order_by("channel_name")
    )
    found = []
    for channel, n in failed[:MOST_SHOWN]:
        last = (
            Delivery.objects.filter(status=Delivery.Status.FAILED, channel_name=channel)
            .order_by("-next_attempt_at")
            .values_list("error", flat=True)
            .first()
        )
        found.append(
            Concern(
                f"Notifications through {channel} failed {n} time{'s' if n != 1 else ''} in the "
                f"last day: {_first_line(last or '')}",
                reverse("admin:runs_app_channel_changelist"),
                serious=True,
            )
        )
    return found


def _repository() -> list[Concern]:
    last = Sync.objects.only("status", "error").first()
    if last and last.status == Sync.Status.FAILED:
        return [
            Concern(f"The repository sync failed: {_first_line(last.error)}", reverse("sync"), True)
        ]
    return []


def _chores() -> list[Concern]:
    return [
        Concern(
            f"The {chore.name} chore did not finish: {_first_line(chore.last_error)}",
            reverse("workers"),
        )
        for chore in Chore.objects.exclude(last_error="").order_by("name")
    ]


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 200 else line[:199] + "…"


@dataclass
class Storage:
    database: int | None
    logs: int | None
    artifacts: int | None
    nodes: list[tuple[str, dict]]  # node name → its cache and spool sizes
    measured_at: object


def storage_in_use() -> Storage:
    """The last hourly measurements (runs_app.worker.storage); None before the first."""
    rows = {chore.name: chore for chore in Chore.objects.filter(name__startswith=STORAGE)}
    instance = rows.pop(STORAGE, None)
    report = instance.last_report if instance else {}
    nodes = sorted(
        (name.removeprefix(STORAGE_NODE_PREFIX), chore.last_report)
        for name, chore in rows.items()
        if chore.last_report
    )
    return Storage(
        database=report.get("database"),
        logs=report.get("logs"),
        artifacts=report.get("artifacts"),
        nodes=nodes,
        measured_at=instance.last_finished_at if instance else None,
    )
