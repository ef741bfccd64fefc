"""The catalogue pages. Login is enforced for every view by LoginRequiredMiddleware."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from pipelines_app.models import DiscoveryScan, Pipeline
from runs_app.environment import check_parameters
from runs_app.models import PipelineRun, RunRefused, with_last_run

RECENT_RUNS = 20


def pipeline_list(request: HttpRequest) -> HttpResponse:
    pipelines = list(with_last_run(Pipeline.objects.all()))
    latest_scan = DiscoveryScan.objects.order_by("-started_at").first()
    all_tags = sorted({tag for p in pipelines for tag in p.tags})
    search = request.GET.get("q", "").strip().lower()
    tag = request.GET.get("tag", "")
    shown = [
        p
        for p in pipelines
        if p.state == Pipeline.State.PRESENT
        and (not search or search in p.name.lower() or search in p.description.lower())
        and (not tag or tag in p.tags)
    ]
    context = {
        "pipelines": shown,
        "all_tags": all_tags,
        "search": request.GET.get("q", ""),
        "tag": tag,
        "filtered": bool(search or tag),
        "missing_pipelines": [p for p in pipelines if p.state == Pipeline.State.MISSING],
        "invalid_count": sum(1 for p in pipelines if p.status == "invalid"),
        "latest_scan": latest_scan,
        "can_run": request.user.has_perm("runs_app.add_pipelinerun"),
    }
    return render(request, "pipelines_app/pipeline_list.html", context)


def pipeline_detail(request: HttpRequest, name: str) -> HttpResponse:
    pipeline = get_object_or_404(Pipeline, name=name)
    context = {
        "pipeline": pipeline,
        "spec": pipeline.spec,
        "instance_timeout": settings.CONTAINER_TIMEOUT,
        "instance_retries": settings.RETRY_ATTEMPTS,
        "runs": pipeline.runs.select_related("triggered_by")[:RECENT_RUNS],
        "can_run": request.user.has_perm("runs_app.add_pipelinerun"),
    }
    return render(request, "pipelines_app/pipeline_detail.html", context)


@require_POST
@permission_required("runs_app.add_pipelinerun", raise_exception=True)
def pipeline_run(request: HttpRequest, name: str) -> HttpResponse:
    """Start a run by hand; a disabled pipeline needs the person to confirm."""
    pipeline = get_object_or_404(Pipeline, name=name)
    if not pipeline.enabled and request.POST.get("confirm_disabled") != "yes":
        messages.warning(
            request,
            f"{pipeline.name} is disabled in its pipeline.json; confirm below to run it anyway.",
        )
        return redirect(f"{pipeline.get_absolute_url()}?confirm=run")
    names, values = request.POST.getlist("param_name"), request.POST.getlist("param_value")
    parameters = {n.strip(): v for n, v in zip(names, values, strict=False) if n.strip()}
    problems = check_parameters(parameters)
    if problems:
        for problem in problems:
            messages.error(request, problem)
        return redirect(pipeline)
    try:
        run = PipelineRun.enqueue(
            pipeline, trigger=PipelineRun.Trigger.MANUAL, user=request.user, parameters=parameters
        )
    except RunRefused as exc:
        messages.error(request, str(exc))
        return redirect(pipeline)
    messages.success(request, f"Run {run.short_id} of {pipeline.name} queued.")
    next_url = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure()):
        next_url = run.get_absolute_url()  # watch it run
    return redirect(next_url)
