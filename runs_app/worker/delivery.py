"""Sending notifications, in the worker (a thread of its own, so a slow mail server never
holds up the ticker): each due delivery is claimed by one process (a conditional UPDATE
with a lease), sent through apprise, and recorded — sent, or failed and tried again after
30 s, 1 min, 2 min, … up to NOTIFY_MAX_ATTEMPTS. A channel whose recent deliveries keep
failing is flagged (Channel.is_failing); a worker that dies mid-send loses nothing (the
lease lapses and another process sends it). A message sent while the database went away
is recorded as sent once it is back (before anything else is sent), never sent twice."""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from datetime import timedelta

import apprise
from django.conf import settings
from django.db import DatabaseError
from django.db.models import F, Q
from django.utils import timezone

from runs_app.models import Channel, Delivery

logger = logging.getLogger(__name__)
LEASE = timedelta(minutes=2)
FIRST_RETRY = timedelta(seconds=30)


# Deliveries sent whose outcome could not be stored yet (the database went away right
# after): stored first on the next turn, so a message sent is never sent again.
_unrecorded: deque[Delivery] = deque()


def deliver_due(limit: int = 20) -> int:
    """Send what is due now (at most `limit`); how many were handled."""
    while _unrecorded:
        _unrecorded[0].save()
        _unrecorded.popleft()
    now = timezone.now()
    due = Delivery.objects.filter(
        Q(status=Delivery.Status.PENDING, next_attempt_at__lte=now)
        | Q(status=Delivery.Status.SENDING, lease_until__lt=now)  # a sender died
    ).order_by("next_attempt_at", "id")
    handled = 0
    for pk in due.values_list("pk", flat=True)[:limit]:
        claimed = Delivery.objects.filter(
            Q(status=Delivery.Status.PENDING)
            | Q(status=Delivery.Status.SENDING, lease_until__lt=now),
            pk=pk,
        ).update(status=Delivery.Status.SENDING, lease_until=timezone.now() + LEASE)
        if claimed:
            send(Delivery.objects.select_related("notification", "channel").get(pk=pk))
            handled += 1
    return handled


def send(delivery: Delivery) -> None:
    channel = delivery.channel
    delivery.attempts += 1
    ok, error = _notify(channel, delivery.notification.title, delivery.notification.body)
    now = timezone.now()
    if ok:
        delivery.status, delivery.sent_at, delivery.error = Delivery.Status.SENT, now, ""
        # The channel's tally is not worth a second message: the delivery's own outcome is.
        with contextlib.suppress(DatabaseError):
            Channel.objects.filter(pk=channel.pk).update(
                consecutive_failures=0, last_success_at=now, last_error=""
            )
    else:
        delivery.error = error
        if delivery.attempts >= settings.NOTIFY_MAX_ATTEMPTS:
            delivery.status = Delivery.Status.FAILED
        else:
            delivery.status = Delivery.Status.PENDING
            delivery.next_attempt_at = now + FIRST_RETRY * 2 ** (delivery.attempts - 1)
        if channel is not None:
            with contextlib.suppress(DatabaseError):
                Channel.objects.filter(pk=channel.pk).update(
                    failures_total=F("failures_total") + 1,
                    consecutive_failures=F("consecutive_failures") + 1,
                    last_failure_at=now,
                    last_error=error,
                )
        logger.warning("notification to %s failed: %s", delivery.channel_name, error)
    delivery.lease_until = None
    try:
        delivery.save()
    except DatabaseError:
        _unrecorded.append(delivery)
        raise


def _notify(channel: Channel | None, title: str, body: str) -> tuple[bool, str]:
    if channel is None:
        return False, "the channel was deleted"
    if not channel.enabled:
        return False, "the channel is disabled"
    try:
        url = channel.url()
    except Exception as problem:  # a URL that no longer decrypts
        return False, str(problem)
    sender = apprise.Apprise()
    if not sender.add(url):
        return False, f"apprise does not understand this {channel.kind}:// URL"
    with apprise.LogCapture(level=logging.WARNING) as captured:
        ok = bool(sender.notify(title=title, body=body))
    # apprise's words, with the channel's own URL (tokens) never repeated
    said = captured.getvalue().strip().replace(url, f"{channel.kind}://…")
    last = said.splitlines()[-1].split(" - ")[-1] if said else "the service refused it"
    return ok, "" if ok else last[:500]
