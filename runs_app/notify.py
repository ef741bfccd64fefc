"""Telling people: events become messages for the channels that want them.

Events come from where things happen — a run's final outcome (in the transaction that ends
it), a daemon's crash loop, a failed warm-up or sync. A thing that keeps failing is one
*incident*: its first failure is told at once; later ones only after a pause that doubles
each time (NOTIFY_REPEAT_MINUTES, up to NOTIFY_REPEAT_MAX_MINUTES), saying how many failures
there were meanwhile; its recovery is told once. A cancelled run tells nobody.

Messages are rows with one delivery per channel; the worker sends them (runs_app.worker.delivery),
never a request. A message names the pipeline, the outcome and why, the duration and the
link to the run (BASE_URL); it is built from the run's record, whose texts are already
masked, and never holds a secret.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.utils import timezone

from pipelines_app.models import Pipeline
from runs_app.models import Channel, Delivery, Incident, Notification, PipelineRun, Rule
from runs_app.models.notification import EVENTS

Status = PipelineRun.Status
Kind = Incident.Kind
logger = logging.getLogger(__name__)


def _never_fails(event: Callable[..., None]) -> Callable[..., None]:
    """Telling people must never break what happened: a run's end, a sync, a warm-up. A
    failure here is logged and its writes undone (a savepoint), nothing more."""

    @functools.wraps(event)
    def guarded(*args, **kwargs) -> None:
        try:
            with transaction.atomic():
                event(*args, **kwargs)
        except Exception:
            logger.exception("could not record the %s notification", event.__name__)

    return guarded


# --- what happened --------------------------------------------------------------------------


@_never_fails
def run_ended(run: PipelineRun) -> None:
    """A run's final outcome (after its last retry): failed, timed out, or a recovery.
    A daemon's crashes are told as its crash loop (crash_loop) instead: each is restarted."""
    if run.trigger == PipelineRun.Trigger.DAEMON:
        return
    if run.status in (Status.FAILED, Status.TIMED_OUT):
        event = "failed" if run.status == Status.FAILED else "timed_out"
        _failure(Kind.FAILING, run.pipeline, event, run=run)
    elif run.status == Status.SUCCEEDED:
        _recovery(Kind.FAILING, run.pipeline, run=run)


@_never_fails
def crash_loop(pipeline: Pipeline, crashes: int, wait_seconds: float) -> None:
    detail = f"{crashes} crashes in a row; the next start waits {wait_seconds:.0f} s"
    _failure(Kind.CRASH_LOOP, pipeline, "crash_loop", detail=detail)


@_never_fails
def crash_loop_over(pipeline: Pipeline) -> None:
    _recovery(Kind.CRASH_LOOP, pipeline, event="crash_loop")


@_never_fails
def warmup_failed(pipeline: Pipeline, error: str) -> None:
    _failure(Kind.WARMUP, pipeline, "warmup_failed", detail=error.strip().splitlines()[-1:])


@_never_fails
def warmup_succeeded(pipeline: Pipeline) -> None:
    _close_quietly(Kind.WARMUP, pipeline.name)


@_never_fails
def sync_failed(error: str) -> None:
    _failure(Kind.SYNC, None, "sync_failed", detail=error.strip().splitlines()[:1])


@_never_fails
def sync_succeeded() -> None:
    _close_quietly(Kind.SYNC, "repository")


@_never_fails
def cve_found(pipeline: Pipeline, findings: list[str]) -> None:
    """New advisories for a pipeline's requirements (told once per new finding)."""
    title = f"{pipeline.name}: {len(findings)} new known vulnerabilities"
    _tell("cve_found", pipeline, title, "\n".join(findings), link=pipeline.get_absolute_url())


def test_message(channel: Channel) -> Notification:
    """ "Send a test message": one delivery to this channel, sent by the worker."""
    with transaction.atomic():
        notification = Notification.objects.create(
            event="test",
            title="Fast-Flow test message",
            body=f"Channel {channel.name} reaches you. {settings.BASE_URL}",
        )
        Delivery.objects.create(
            notification=notification, channel=channel, channel_name=channel.name
        )
    return notification


# --- grouping -------------------------------------------------------------------------------


def _subject(pipeline: Pipeline | None) -> str:
    return pipeline.name if pipeline is not None else "repository"


def _open_incident(kind: str, subject: str) -> Incident | None:
    return (
        Incident.objects.select_for_update()
        .filter(kind=kind, subject=subject, closed_at__isnull=True)
        .first()
    )


@transaction.atomic
def _failure(kind, pipeline, event, *, run=None, detail="") -> None:
    now = timezone.now()
    subject = _subject(pipeline)
    incident = _open_incident(kind, subject)
    if incident is None:
        try:
            with transaction.atomic():
                incident = Incident.objects.create(
                    kind=kind, subject=subject, pipeline=pipeline, opened_at=now,
                    last_event_at=now, next_tell_at=now + Incident.pause_after(1),
                )  # fmt: skip
        except IntegrityError:  # another process opened it a moment ago
            incident = _open_incident(kind, subject)
        else:
            _tell(event, pipeline, *_failure_text(event, subject, run, detail, None), run=run,
                  incident=incident)  # fmt: skip
            return
    incident.events_count += 1
    incident.last_event_at = now
    if now >= incident.next_tell_at:
        incident.told_count += 1
        incident.next_tell_at = now + Incident.pause_after(incident.told_count)
        _tell(event, pipeline, *_failure_text(event, subject, run, detail, incident), run=run,
              incident=incident)  # fmt: skip
    incident.save()


@transaction.atomic
def _recovery(kind, pipeline, *, run=None, event="recovered") -> None:
    incident = _open_incident(kind, _subject(pipeline))
    if incident is None:
        return
    now = timezone.now()
    incident.closed_at = now
    incident.save()
    title = f"{_subject(pipeline)} recovered"
    lasted = _duration(now - incident.opened_at)
    body = (f"After {incident.events_count} failure(s) since "
            f"{_when(incident.opened_at)} ({lasted}).")  # fmt: skip
    if run is not None:
        body += f"\nRun {run.short_id} succeeded in {_run_duration(run)}."
    _tell("recovered", pipeline, title, body, run=run, incident=incident)


def _close_quietly(kind: str, subject: str) -> None:
    Incident.objects.filter(kind=kind, subject=subject, closed_at__isnull=True).update(
        closed_at=timezone.now()
    )


# --- words ----------------------------------------------------------------------------------

LABELS = {
    "failed": "failed",
    "timed_out": "timed out",
    "crash_loop": "is in a crash loop",
    "warmup_failed": "could not install its requirements",
    "sync_failed": "failed to sync",
}


def _failure_text(event, subject, run, detail, incident) -> tuple[str, str]:
    title = f"{subject} {LABELS[event]}"
    lines = []
    if incident is not None:
        title += f" (still, {incident.events_count} times since {_when(incident.opened_at)})"
        lines.append(f"Failing since {_when(incident.opened_at)}: {incident.events_count} "
                     "failures; told again later if it goes on.")  # fmt: skip
    if run is not None:
        reason = run.get_failure_reason_display() if run.failure_reason else run.status
        if run.exit_code is not None:
            reason += f" (exit code {run.exit_code})"
        lines.append(f"Run {run.short_id}: {reason}. {run.error_message}".strip())
        lines.append(f"Duration {_run_duration(run)}, attempt {run.attempt}, "
                     f"triggered by {run.get_trigger_display()}.")  # fmt: skip
    if detail:
        lines.append(detail if isinstance(detail, str) else " ".join(detail))
    return title, "\n".join(lines)


def _run_duration(run: PipelineRun) -> str:
    if run.started_at and run.finished_at:
        return _duration(run.finished_at - run.started_at)
    return "—"


def _duration(delta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _when(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M %Z")


# --- routing --------------------------------------------------------------------------------


def _tell(event, pipeline, title, body, *, run=None, incident=None, link="") -> None:
    """A message with one delivery per channel that wants `event` for `pipeline`."""
    wanted = _channels_for(event, pipeline)
    if not wanted:
        return
    link = link or (run.get_absolute_url() if run is not None else "")
    if link:
        body = f"{body}\n{settings.BASE_URL}{link}"
    notification = Notification.objects.create(
        event=event, pipeline=pipeline, run=run, incident=incident,
        title=f"[Fast-Flow] {title}"[:200], body=body,
    )  # fmt: skip
    Delivery.objects.bulk_create(
        Delivery(
            notification=notification,
            channel=channel,
            channel_name=name,
            status=Delivery.Status.PENDING if channel else Delivery.Status.FAILED,
            error="" if channel else f'no channel named "{name}" (pipeline.json "notify")',
        )
        for name, channel in wanted.items()
    )


def _channels_for(event: str, pipeline: Pipeline | None) -> dict[str, Channel | None]:
    """Channel name → channel (None: named by pipeline.json but not set up)."""
    found: dict[str, Channel | None] = {}
    for rule in Rule.objects.prefetch_related("channels").for_event(event, pipeline):
        for channel in rule.channels.all():
            if channel.enabled:
                found[channel.name] = channel
    if pipeline is not None and event in pipeline.spec.notify.events:
        names = pipeline.spec.notify.channels
        known = {c.name: c for c in Channel.objects.filter(name__in=names)}
        for name in names:
            channel = known.get(name)
            if channel is None or channel.enabled:
                found[name] = channel
    return found


# --- channels from settings -----------------------------------------------------------------


def sync_settings_channels() -> None:
    """NOTIFY_URLS as channels settings-1, settings-2, … and one rule for NOTIFY_EVENTS."""
    unknown = set(settings.NOTIFY_EVENTS) - set(EVENTS)
    if unknown:
        raise ImproperlyConfigured(
            f"NOTIFY_EVENTS: {', '.join(sorted(unknown))} not events; use {', '.join(EVENTS)}"
        )
    with transaction.atomic():
        channels = []
        for number, url in enumerate(settings.NOTIFY_URLS, start=1):
            channel, _ = Channel.objects.get_or_create(
                name=f"settings-{number}", defaults={"origin": Channel.Origin.SETTINGS}
            )
            if channel.origin == Channel.Origin.SETTINGS:
                if not channel.url_encrypted or channel.url() != url:
                    channel.set_url(url)
                channel.enabled = True
                channel.save()
                channels.append(channel)
        Channel.objects.filter(origin=Channel.Origin.SETTINGS).exclude(
            pk__in=[c.pk for c in channels]
        ).delete()
        rule = Rule.objects.filter(origin=Channel.Origin.SETTINGS).first()
        if not channels:
            Rule.objects.filter(origin=Channel.Origin.SETTINGS).delete()
            return
        if rule is None:
            rule = Rule(name="NOTIFY_URLS", origin=Channel.Origin.SETTINGS)
        rule.events = list(settings.NOTIFY_EVENTS)
        rule.enabled = True
        rule.save()
        rule.channels.set(channels)
