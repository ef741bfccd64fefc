"""The catalogue pages. Login is enforced for every view by LoginRequiredMiddleware."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from pipelines_app.models import DiscoveryScan, Pipeline


def pipeline_list(request: HttpRequest) -> HttpResponse:
    pipelines = list(Pipeline.objects.all())
    latest_scan = DiscoveryScan.objects.order_by("-started_at").first()
    context = {
        "pipelines": [p for p in pipelines if p.state == Pipeline.State.PRESENT],
        "missing_pipelines": [p for p in pipelines if p.state == Pipeline.State.MISSING],
        "invalid_count": sum(1 for p in pipelines if p.status == "invalid"),
        "latest_scan": latest_scan,
    }
    return render(request, "pipelines_app/pipeline_list.html", context)


def pipeline_detail(request: HttpRequest, name: str) -> HttpResponse:
    pipeline = get_object_or_404(Pipeline, name=name)
    context = {
        "pipeline": pipeline,
        "spec": pipeline.spec,
        "instance_timeout": settings.CONTAINER_TIMEOUT,
        "instance_retries": settings.RETRY_ATTEMPTS,
    }
    return render(request, "pipelines_app/pipeline_detail.html", context)
