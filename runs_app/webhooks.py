"""Who may start a pipeline over HTTP, and how often.

A request carries a key in `X-Fastflow-Key` (or `Authorization: Bearer <key>`). It matches
the pipeline's `webhook_key` from pipeline.json, a schedule's own `webhook_key` (the run then
uses that schedule's overrides), or a key made in the UI (stored hashed). Every candidate
is compared in constant time, and an unknown pipeline costs the same comparisons as a
known one with a wrong key.
"""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from django.utils import timezone

from pipelines_app.models import Pipeline, Schedule, WebhookKey

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyMatch:
    schedule: Schedule | None = None


def key_of(request: HttpRequest) -> str:
    key = request.headers.get("X-Fastflow-Key", "")
    authorization = request.headers.get("Authorization", "")
    if not key and authorization.lower().startswith("bearer "):
        key = authorization[7:]
    return key.strip()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def authenticate(pipeline: Pipeline | None, key: str) -> KeyMatch | None:
    """Which key of `pipeline` `key` is (None: no pipeline, no key, or a wrong one)."""
    given_hash = WebhookKey.hash(key)
    if pipeline is None or not key:
        _same(given_hash, WebhookKey.hash("no pipeline"))  # the same work either way
        return None
    match: KeyMatch | None = None
    # No early exit: which key matched (or whether any did) must not show in the timing.
    file_key = pipeline.spec.run.webhook_key
    if file_key and _same(key, file_key) and match is None:
        match = KeyMatch()
    for schedule in pipeline.schedules.all():
        schedule_key = schedule.settings.webhook_key
        if schedule_key and _same(key, schedule_key) and match is None:
            match = KeyMatch(schedule=schedule)
    for stored in pipeline.webhook_keys.all():
        if _same(given_hash, stored.key_hash) and match is None:
            match = KeyMatch()
            WebhookKey.objects.filter(pk=stored.pk).update(last_used_at=timezone.now())
    return match


def over_rate_limit(pipeline: Pipeline) -> int | None:
    """Seconds to wait when this pipeline's webhook calls passed the per-minute limit."""
    limit = settings.WEBHOOK_RATE_LIMIT
    if not limit:
        return None
    window = int(time.time() // 60)
    counter = f"webhook-rate:{pipeline.pk}:{window}"
    try:
        cache.add(counter, 0, timeout=120)
        try:
            calls = cache.incr(counter)
        except ValueError:  # expired between add and incr
            cache.set(counter, 1, timeout=120)
            calls = 1
    except redis.RedisError as problem:
        # Redis away for a moment: the call is let through (and said) rather than refused.
        logger.warning("webhook rate limit not checked: the cache is unreachable (%s)", problem)
        return None
    if calls > limit:
        return 60 - int(time.time() % 60)
    return None
