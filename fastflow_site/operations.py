"""Health and metrics endpoints for load balancers and Prometheus.

/health/        liveness: the process answers (no database touched).
/health/ready/  readiness: 200 when every check passes, 503 otherwise. Anonymous callers
                see each check's name and whether it passed; operators (a staff session or
                the METRICS_TOKEN) also see why.
/metrics        Prometheus' text format, for a bearer METRICS_TOKEN or a staff session.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fastflow_site import health
from fastflow_site.metrics import registry


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
