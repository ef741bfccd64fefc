"""Health and metrics endpoints for load balancers and Prometheus.

/health/        liveness: the process answers (no database touched).
/health/ready/  readiness: 200 when every check passes, 503 otherwise. Anonymous callers
                see each check's name and whether it passed; operators (a staff session or
                the METRICS_TOKEN) also see why.
/metrics        Prometheus' text format, for a bearer METRICS_TOKEN or a staff session.

And the site's error page: a request that meets the database (or Redis) away gets a 503
with Retry-After and says so in plain words, never a 500; pages work again once it is back.
"""

from __future__ import annotations

import hmac
import sys

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fastflow_site import health
from fastflow_site.metrics import registry
from runs_app.outages import SERVICE_AWAY

SERVICE_AWAY_TEXT = (
    "Fast-Flow cannot reach its database (or Redis) at the moment. Runs, schedules and logs "
    "are kept; try again in a few seconds."
)
RETRY_AFTER_SECONDS = "5"


def is_operator(request: HttpRequest) -> bool:
    """A staff session, or the bearer METRICS_TOKEN (compared in constant time)."""
    user = request.user
    if user.is_authenticated and user.is_active and user.is_staff:
        return True
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    token = settings.METRICS_TOKEN
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


@login_not_required
@require_GET
@never_cache
def live(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@login_not_required
@require_GET
@never_cache
def ready(request: HttpRequest) -> JsonResponse:
    checks = health.readiness()
    all_ok = all(check.ok for check in checks)
    detailed = is_operator(request)
    body = {
        "status": "ok" if all_ok else "unavailable",
        "checks": {
            check.name: ({"ok": check.ok, "detail": check.detail} if detailed else {"ok": check.ok})
            for check in checks
        },
    }
    return JsonResponse(body, status=200 if all_ok else 503)


@login_not_required
@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    if not is_operator(request):
        response = HttpResponse(
            "A bearer METRICS_TOKEN or a staff session is needed.\n", status=401
        )
        response["WWW-Authenticate"] = 'Bearer realm="fastflow-metrics"'
        return response
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: the service away is a 503 with Retry-After (touching neither the
    database nor the session); anything else Django's own 500."""
    problem = sys.exc_info()[1]
    if not isinstance(problem, SERVICE_AWAY):
        return defaults.server_error(request)
    if request.path.startswith("/api/") or request.path.startswith("/hooks/"):
        response = JsonResponse({"detail": SERVICE_AWAY_TEXT}, status=503)
    else:
        page = (
            '<!doctype html><html lang="en"><meta charset="utf-8">'
            "<title>Fast-Flow: back in a moment</title>"
            f"<h1>Back in a moment</h1><p>{SERVICE_AWAY_TEXT}</p></html>"
        )
        response = HttpResponse(page, status=503)
    response["Retry-After"] = RETRY_AFTER_SECONDS
    return response
