"""Run pages: starting runs (the run button, webhooks), the run with its live log, log
download, cancel and rerun."""

from __future__ import annotations

import json
from collections.abc import Iterator

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required, permission_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from fastflow_site.audit import Action, record
from fastflow_site.paging import page_of
from pipelines_app.contract import RUN_SELECTION_NAMES
from pipelines_app.models import Pipeline
from runs_app import attention, dashboard_charts, log_search
from runs_app import dashboard as dashboard_data
from runs_app.forms import LogSearchForm, RunFilterForm
from runs_app.graph import pipelines_graph, render_svg, run_graph
from runs_app.logs import SYSTEM
from runs_app.models import (
    Daemon,
    LogChunk,
    NodeWarmth,
    PipelineRun,
    RunRefused,
    WorkerNode,
    WorkerProcess,
)
from runs_app.run_values import values_from_json
from runs_app.stored_logs import LogTail
from runs_app.webhooks import authenticate, key_of, over_rate_limit

RUNS_PER_PAGE = 50


@permission_required("runs_app.view_pipelinerun", raise_exception=True)
def dashboard(request: HttpRequest) -> HttpResponse:
    context = {
        **_dashboard_live(),
        "calendar_svg": dashboard_charts.calendar_svg(dashboard_charts.calendar_days()),
        "concerns": attention.concerns(),
        "storage": attention.storage_in_use(),
        "overviews": dashboard_data.pipeline_overviews(),
    }
    return render(request, "runs_app/dashboard.html", context)


@permission_required("runs_app.view_pipelinerun", raise_exception=True)
def dashboard_live(request: HttpRequest) -> HttpResponse:
    """What changes while the dashboard is open; HTMX swaps each part in by its id."""
    return render(request, "runs_app/dashboard/live.html", {**_dashboard_live(), "oob": True})


def _dashboard_live() -> dict:
    last_day = dashboard_data.last_day()
    return {
        "now": dashboard_data.now(),
        "last_day": last_day,
        "hours_svg": dashboard_charts.hours_svg(last_day),
        "timeline_svg": dashboard_charts.timeline_svg(*dashboard_charts.timeline_bars()),
        "timeline_hours": dashboard_charts.TIMELINE_HOURS,
        "failures": dashboard_data.recent_failures(),
    }


@permission_required("runs_app.view_pipelinerun", raise_exception=True)
def run_list(request: HttpRequest) -> HttpResponse:
    form = RunFilterForm(request.GET or None)
    runs = form.filter(PipelineRun.objects.select_related("pipeline", "triggered_by"))
    page, query = page_of(request, runs, RUNS_PER_PAGE)
    context = {
        "form": form,
        "page": page,
        "query": query,
        "pipeline_names": Pipeline.objects.values_list("name", flat=True),
    }
    if request.htmx:
        return render(request, "runs_app/_runs_table.html", context)
    return render(request, "runs_app/run_list.html", context)


@permission_required("runs_app.view_pipelinerun", raise_exception=True)
def search(request: HttpRequest) -> HttpResponse:
    """The runs whose log contains a text, newest first."""
    form = LogSearchForm(request.GET if "q" in request.GET else None)
    context = {"form": form, "pipeline_names": Pipeline.objects.values_list("name", flat=True)}
    if form.is_valid():
        pipeline = form.cleaned_data["pipeline"]
        try:
            results = log_search.search(
                form.cleaned_data["q"],
                pipeline_id=pipeline.pk if pipeline else None,
                since=form.since(),
                before=form.cleaned_data["before"],
            )
        except log_search.SearchError as error:
            context["error"] = str(error)
        else:
            older = request.GET.copy()
            older["before"] = results.older or ""
            context.update(results=results, older_query=older.urlencode())
    return render(request, "runs_app/search.html", context)


def _get_run(public_id) -> PipelineRun:
    return get_object_or_404(
        PipelineRun.objects.select_related(
            "pipeline", "triggered_by", "retry_of", "environment_lock"
        ),
        public_id=public_id,
    )


@permission_required("runs_app.view_pipelinerun", raise_exception=True)
def run_detail(request: HttpRequest, public_id) -> HttpResponse:
    run = _get_run(public_id)
    started_by = run.started_by
    chain_links = list(run.chain_links.select_related("downstream__pipeline"))
    chain_svg = ""
    if started_by or chain_links:
        graph = run_graph(run, started_by, chain_links)
        chain_svg = render_svg(graph, f"the chain around run {run.short_id}")
    context = {
        "run": run,
        "retries": list(run.retries.order_by("queued_at")),
        "started_by": started_by,
        "chain_links": chain_links,
        "chain_svg": chain_svg,
        "can_run": request.user.has_perm("runs_app.add_pipelinerun"),
        "can_cancel": request.user.has_perm("runs_app.change_pipelinerun"),
        "backup_dir": settings.BACKUP_DIR,
        "notifications": run.notifications.prefetch_related("deliveries"),
    }
    if request.htmx:
        return render(request, "runs_app/_run_summary.html", context)
    context["steps"] = list(run.steps.all())
    # The charts keep their place from the first paint: samples arriving never move the log.
    context["has_samples"] = (
        run.is_finished
        and LogChunk.objects.filter(run_id=run.pk, kind=LogChunk.Kind.SAMPLES).exists()
    )
    return render(request, "runs_app/run_detail.html", context)


@permission_required("runs_app.view_pipelinerun", raise_exception=True)
def run_steps(request: HttpRequest, public_id) -> HttpResponse:
    """A models run's steps (the run page reloads them while the run goes)."""
    run = _get_run(public_id)
    return render(request, "runs_app/_steps.html", {"run": run, "steps": list(run.steps.all())})


@permission_required("runs_app.view_pipelinerun", raise_exception=True)
def run_log(request: HttpRequest, public_id) -> HttpResponse | StreamingHttpResponse:
    """The whole log as plain text (the browser view may have skipped lines; this never does)."""
    run = _get_run(public_id)
    if run.log_removed_at:
        return HttpResponse(
            f"This run's log was removed by retention on {run.log_removed_at:%Y-%m-%d}.\n",
            status=410,
            content_type="text/plain; charset=utf-8",
        )
    with_timestamps = request.GET.get("timestamps") == "1"

    def lines() -> Iterator[str]:
        tail = LogTail(run.pk)
        while batch := tail.read():  # a few chunks at a time, one piece of the response each
            yield "".join(
                (f"{timestamp} " if with_timestamps else "")
                + ("[fast-flow] " if stream == SYSTEM else "")
                + f"{text}\n"
                for _, timestamp, stream, text in batch
            )

    response = StreamingHttpResponse(lines(), content_type="text/plain; charset=utf-8")
    name = f"{run.pipeline.name}-{run.short_id}.log"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@require_POST
@permission_required("runs_app.change_pipelinerun", raise_exception=True)
def run_cancel(request: HttpRequest, public_id) -> HttpResponse:
    run = _get_run(public_id)
    outcome = run.cancel(by=request.user)
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
        new = run.rerun(by=request.user)
    except RunRefused as exc:
        messages.error(request, exc.describe())
        return redirect("runs_app:detail", public_id=run.public_id)
    messages.success(request, f"Run {new.short_id} queued with the same parameters.")
    return redirect("runs_app:detail", public_id=new.public_id)


@require_POST
@permission_required("runs_app.add_pipelinerun", raise_exception=True)
def start_run(request: HttpRequest, name: str) -> HttpResponse:
    """Start a run by hand; a disabled pipeline needs the person to confirm."""
    pipeline = get_object_or_404(Pipeline, name=name)
    names, values = request.POST.getlist("param_name"), request.POST.getlist("param_value")
    parameters = {n.strip(): v for n, v in zip(names, values, strict=False) if n.strip()}
    parameters.update(_models_selection(request))
    try:
        run = PipelineRun.start(
            pipeline,
            by=request.user,
            parameters=parameters,
            confirm_disabled=request.POST.get("confirm_disabled") == "yes",
        )
    except RunRefused as refused:
        if refused.kind == "disabled":
            messages.warning(
                request,
                f"{pipeline.name} is disabled in its pipeline.json; confirm below to run it "
                "anyway.",
            )
            return redirect(f"{pipeline.get_absolute_url()}?confirm=run")
        for problem in refused.problems or [str(refused)]:
            messages.error(request, problem)
        return redirect(pipeline)
    messages.success(request, f"Run {run.short_id} of {pipeline.name} queued.")
    next_url = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure()):
        next_url = run.get_absolute_url()  # watch it run
    return redirect(next_url)


def _models_selection(request: HttpRequest) -> dict[str, str]:
    """A models pipeline's run form: which models this run builds (FASTFLOW_SELECT, ...),
    only what was filled in (an empty field keeps pipeline.json's)."""
    values = {}
    for name, field in RUN_SELECTION_NAMES.items():
        value = request.POST.get(f"models_{field}", "").strip()
        if field == "full_refresh":
            value = "true" if value else ""
        if value:
            values[name] = value
    return values


NOT_FOUND = {"error": "No such pipeline, or the key is wrong."}


@login_not_required
@csrf_exempt
@require_POST
def webhook(request: HttpRequest, name: str) -> JsonResponse:
    """Start a run from an HTTP call carrying the pipeline's key (runs_app.webhooks)."""
    pipeline = Pipeline.objects.filter(name=name).first()
    match = authenticate(pipeline, key_of(request))
    if match is None:
        return JsonResponse(NOT_FOUND, status=404)
    if not pipeline.enabled or not pipeline.is_runnable:  # (before the rate limit counts it)
        why = "it is disabled" if pipeline.is_runnable else pipeline.status
        return JsonResponse({"error": f"{pipeline.name} does not start: {why}."}, status=409)
    parameters, problems = _webhook_values(request)
    if problems:
        return JsonResponse({"error": "The body was refused.", "problems": problems}, status=400)
    if wait := over_rate_limit(pipeline):
        response = JsonResponse(
            {"error": f"Too many calls for {pipeline.name}; try again in {wait} s."}, status=429
        )
        response["Retry-After"] = str(wait)
        return response
    try:
        run = PipelineRun.start(
            pipeline,
            via="webhook",
            trigger=PipelineRun.Trigger.WEBHOOK,
            parameters=parameters,
            schedule=match.schedule,
        )
    except RunRefused as refused:
        if refused.problems:
            return JsonResponse(
                {"error": "The body was refused.", "problems": refused.problems}, status=400
            )
        return JsonResponse({"error": str(refused)}, status=409)
    return JsonResponse(
        {
            "run_id": str(run.public_id),
            "url": request.build_absolute_uri(run.get_absolute_url()),
            "status": run.status,
            "pipeline": pipeline.name,
            "schedule": match.schedule.config_id if match.schedule else None,
        },
        status=202,
    )


def _webhook_values(request: HttpRequest) -> tuple[dict[str, str], list[str]]:
    """Environment values for the run from an optional JSON object body."""
    if not request.body.strip():
        return {}, []
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        return {}, ["the body is not JSON"]
    except RecursionError:
        return {}, ["the body is nested too deeply"]
    return values_from_json(body)


@require_POST
@permission_required("runs_app.change_pipelinerun", raise_exception=True)
def daemon_pause(request: HttpRequest, name: str) -> HttpResponse:
    """Keep a daemon stopped (its run is stopped by the supervisor), or let it run again."""
    pipeline = get_object_or_404(Pipeline, name=name)
    paused = request.POST.get("paused") == "yes"
    Daemon.objects.update_or_create(
        pipeline=pipeline, defaults={"paused": paused, "stopping_reason": ""}
    )
    record(Action.DAEMON_PAUSED if paused else Action.DAEMON_RESUMED, pipeline)
    messages.info(request, f"{pipeline.name} is {'paused' if paused else 'resumed'}.")
    return redirect(pipeline)


@permission_required("runs_app.view_workernode", raise_exception=True)
def workers(request: HttpRequest) -> HttpResponse:
    """The worker nodes: labels, health, engine, runs in flight, pool; drain and resume."""
    nodes = list(WorkerNode.objects.all())
    processes = list(WorkerProcess.objects.order_by("started_at"))
    running = PipelineRun.objects.filter(status=PipelineRun.Status.RUNNING).select_related(
        "pipeline"
    )
    node_of = {process.name: process.node for process in processes}
    warm_counts = dict(NodeWarmth.objects.values_list("node").annotate(n=Count("id")).order_by())
    for node in nodes:
        node.process_list = [p for p in processes if p.node == node.name]
        node.running = [run for run in running if node_of.get(run.worker_id) == node.name]
        node.health = _node_health(node)
        node.warm_locks = warm_counts.get(node.name, 0)
    context = {
        "nodes": nodes,
        "can_drain": request.user.has_perm("runs_app.change_workernode"),
        "waiting": PipelineRun.objects.filter(status=PipelineRun.Status.CLAIMED).count(),
    }
    return render(request, "runs_app/workers.html", context)


def _node_health(node: WorkerNode) -> str:
    if not node.is_alive:
        return "not heard from"
    unwell = [p.health for p in node.process_list if p.is_alive and p.health != "ok"]
    return unwell[0] if unwell else "ok"


@require_POST
@permission_required("runs_app.change_workernode", raise_exception=True)
def worker_drain(request: HttpRequest, name: str) -> HttpResponse:
    """Drain a node (no new runs; those it follows finish), or let it take runs again."""
    node = get_object_or_404(WorkerNode, name=name)
    if request.POST.get("drain") == "yes":
        node.drain(by=request.user.get_username())
        record(Action.NODE_DRAINED, node)
        messages.info(request, f"{node.name} takes no new runs; the runs it follows finish.")
    else:
        node.resume()
        record(Action.NODE_RESUMED, node)
        messages.info(request, f"{node.name} takes runs again.")
    return redirect("workers")


@permission_required("pipelines_app.view_pipeline", raise_exception=True)
def chain_graph(request: HttpRequest) -> HttpResponse:
    """Every pipeline and what it starts after it (downstream_triggers), with last outcomes."""
    graph = pipelines_graph()
    context = {"graph_svg": render_svg(graph, "the chain graph of all pipelines"), "graph": graph}
    return render(request, "runs_app/chain_graph.html", context)
