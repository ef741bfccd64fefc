"""Run pages: the run with its live log, log download, cancel and rerun."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from pipelines_app.models import Pipeline
from runs_app import dashboard as dashboard_data
from runs_app.forms import RunFilterForm
from runs_app.logs import SYSTEM, LogTail
from runs_app.models import PipelineRun, RunRefused

RUNS_PER_PAGE = 50


def dashboard(request: HttpRequest) -> HttpResponse:
    context = {
        "counts": dashboard_data.counts(),
        "failures": dashboard_data.recent_failures(),
        "overviews": dashboard_data.pipeline_overviews(),
    }
    return render(request, "runs_app/dashboard.html", context)


def run_list(request: HttpRequest) -> HttpResponse:
    form = RunFilterForm(request.GET or None)
    runs = form.filter(PipelineRun.objects.select_related("pipeline", "triggered_by"))
    page = Paginator(runs, RUNS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "form": form,
        "page": page,
        "query": query.urlencode(),
        "pipeline_names": Pipeline.objects.values_list("name", flat=True),
    }
    if request.htmx:
        return render(request, "runs_app/_runs_table.html", context)
    return render(request, "runs_app/run_list.html", context)


def _get_run(public_id) -> PipelineRun:
    return get_object_or_404(
        PipelineRun.objects.select_related("pipeline", "triggered_by", "retry_of"),
        public_id=public_id,
    )


def run_detail(request: HttpRequest, public_id) -> HttpResponse:
    run = _get_run(public_id)
    context = {
        "run": run,
        "retries": list(run.retries.order_by("queued_at")),
        "can_run": request.user.has_perm("runs_app.add_pipelinerun"),
        "can_cancel": request.user.has_perm("runs_app.change_pipelinerun"),
    }
    if request.htmx:
        return render(request, "runs_app/_run_summary.html", context)
    return render(request, "runs_app/run_detail.html", context)


def run_log(request: HttpRequest, public_id) -> StreamingHttpResponse:
    """The whole log as plain text (the browser view may have skipped lines; this never does)."""
    run = _get_run(public_id)
    with_timestamps = request.GET.get("timestamps") == "1"

    def lines() -> Iterator[str]:
        tail = LogTail(Path(run.log_path))
        while batch := tail.read():
            for _, timestamp, stream, text in batch:
                prefix = f"{timestamp} " if with_timestamps else ""
                marker = "[fast-flow] " if stream == SYSTEM else ""
                yield f"{prefix}{marker}{text}\n"

    response = StreamingHttpResponse(lines(), content_type="text/plain; charset=utf-8")
    name = f"{run.pipeline.name}-{run.short_id}.log"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@require_POST
@permission_required("runs_app.change_pipelinerun", raise_exception=True)
def run_cancel(request: HttpRequest, public_id) -> HttpResponse:
    run = _get_run(public_id)
    outcome = run.request_cancel()
    text = {
        "cancelled": "Cancelled: the run had not started yet.",
        "stopping": "Stopping the run…",
        "finished": "The run had already ended.",
    }[outcome]
    messages.info(request, text)
    if request.htmx:
        return run_detail(request, public_id)
    return redirect("runs_app:detail", public_id=run.public_id)


@require_POST
@permission_required("runs_app.add_pipelinerun", raise_exception=True)
def run_rerun(request: HttpRequest, public_id) -> HttpResponse:
    run = _get_run(public_id)
    try:
        new = run.rerun(request.user)
    except RunRefused as exc:
        messages.error(request, str(exc))
        return redirect("runs_app:detail", public_id=run.public_id)
    messages.success(request, f"Run {new.short_id} queued with the same parameters.")
    return redirect("runs_app:detail", public_id=new.public_id)
