"""The catalogue pages. Login is enforced for every view by LoginRequiredMiddleware."""

from __future__ import annotations

import hashlib
import hmac
import json

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required, permission_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from fastflow_site.audit import Action, record
from pipelines_app import deployed_code
from pipelines_app.forms import ScheduleForm
from pipelines_app.gitsync import SyncNotRequested, live_commit, request_sync, safe_url
from pipelines_app.models import DiscoveryScan, GitSource, Pipeline, Schedule, Sync, WebhookKey
from runs_app.artifacts import artifact_content
from runs_app.dashboard import pipeline_overview
from runs_app.graph import pipelines_graph, render_svg
from runs_app.limits import effective_limits
from runs_app.models import (
    Daemon,
    DependencyCheck,
    EnvironmentLock,
    NodeWarmth,
    PipelineRun,
    ScheduleSkip,
    with_last_run,
)
from runs_app.steps import docs_run, model_graph

RECENT_RUNS = 20
UPCOMING_FIRE_TIMES = 5
RECENT_SKIPS = 10


@permission_required("pipelines_app.view_pipeline", raise_exception=True)
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
        "latest_sync": Sync.objects.first() if GitSource.load().is_configured else None,
        "can_run": request.user.has_perm("runs_app.add_pipelinerun"),
    }
    return render(request, "pipelines_app/pipeline_list.html", context)


@permission_required("pipelines_app.view_pipeline", raise_exception=True)
def recent_runs(request: HttpRequest, name: str) -> HttpResponse:
    """The pipeline page's recent runs (it reloads them: a run goes from queued to its end
    there without a reload of the page)."""
    pipeline = get_object_or_404(Pipeline, name=name)
    context = {"pipeline": pipeline, "runs": _recent_runs(pipeline)}
    return render(request, "pipelines_app/_recent_runs.html", context)


def _recent_runs(pipeline: Pipeline) -> list[PipelineRun]:
    return list(pipeline.runs.select_related("triggered_by")[:RECENT_RUNS])


@permission_required("pipelines_app.view_pipeline", raise_exception=True)
def pipeline_detail(request: HttpRequest, name: str, new_webhook_key: str = "") -> HttpResponse:
    pipeline = get_object_or_404(Pipeline, name=name)
    overview = pipeline_overview(pipeline)
    context = {
        "pipeline": pipeline,
        "overview": overview,
        "duration_chart": overview.duration_chart(width=600, height=64),
        "spec": pipeline.spec,
        "limits": effective_limits(pipeline.spec.run),  # what its next run gets
        "executor": pipeline.executor,
        "instance_retries": settings.RETRY_ATTEMPTS,
        "runs": _recent_runs(pipeline),
        "can_run": request.user.has_perm("runs_app.add_pipelinerun"),
        "schedules": [
            (schedule, schedule.next_fire_times(UPCOMING_FIRE_TIMES) if schedule.enabled else [])
            for schedule in pipeline.schedules.all()
        ],
        "daemon": _daemon_of(pipeline),
        "chain_svg": _chains_around(pipeline),
        "skips": ScheduleSkip.objects.filter(schedule__pipeline=pipeline).select_related(
            "schedule", "waiting_run"
        )[:RECENT_SKIPS],
        "webhook_url": request.build_absolute_uri(reverse("webhook", args=[pipeline.name])),
        "webhook_keys": pipeline.webhook_keys.all()
        if request.user.has_perm("pipelines_app.view_webhookkey")
        else [],
        "new_webhook_key": new_webhook_key,
        "dependency_check": DependencyCheck.objects.filter(pipeline=pipeline).first(),
        "warm_nodes": _warm_nodes(pipeline),
        "vulnerabilities": pipeline.vulnerabilities.all(),
    }
    if pipeline.spec.type == "models":
        graph = model_graph(pipeline)
        context["model_graph_svg"] = render_svg(
            graph, f"the models of {pipeline.name}", "No run has reported its models yet."
        )
        context["docs_run"] = docs_run(pipeline)
    return render(request, "pipelines_app/pipeline_detail.html", context)


@permission_required("pipelines_app.view_pipeline", raise_exception=True)
def pipeline_code(request: HttpRequest, name: str) -> HttpResponse:
    """The files of the version its runs take, one shown highlighted (`?file=`; its entry
    point first)."""
    pipeline = get_object_or_404(Pipeline.objects.select_related("bundle"), name=name)
    context = {"pipeline": pipeline, "code_page": True, "files": [], "shown": None}
    if pipeline.bundle is not None:
        version = deployed_code.version_of(pipeline.bundle)  # read once for the page
        asked = request.GET.get("file")
        context["files"] = version.listing
        context["shown"] = version.show(asked or pipeline.spec.entry_point)
        if context["shown"] is None and asked:
            context["not_found"] = asked
    return render(request, "pipelines_app/pipeline_code.html", context)


# The docs page is the project's own HTML and JavaScript, made inside a run: it is served
# sandboxed (an opaque origin: no cookies, no storage, no requests to Fast-Flow) and may load
# nothing — models_runner.py inlined everything it needs.
DOCS_POLICY = (
    "sandbox allow-scripts allow-popups; default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src data:; font-src data:; connect-src data:"
)


@permission_required("pipelines_app.view_pipeline", raise_exception=True)
def models_docs(request: HttpRequest, name: str) -> HttpResponse:
    """A models pipeline's generated docs, from its newest succeeded run that made them."""
    pipeline = get_object_or_404(Pipeline, name=name)
    run = docs_run(pipeline)
    content = artifact_content(run, "docs.html") if run else None
    if content is None:
        return HttpResponse(
            f"{pipeline.name} has no generated docs yet: they come from a succeeded run.\n",
            status=404,
            content_type="text/plain; charset=utf-8",
        )
    response = HttpResponse(content, content_type="text/html; charset=utf-8")
    response["Content-Security-Policy"] = DOCS_POLICY
    response["X-Content-Type-Options"] = "nosniff"
    response["Referrer-Policy"] = "no-referrer"
    response["X-Fastflow-Docs-Run"] = str(run.public_id)
    return response


def _warm_nodes(pipeline: Pipeline) -> list[NodeWarmth]:
    """The worker nodes whose cache holds the lock its runs install now."""
    lock = EnvironmentLock.current(pipeline)
    return list(NodeWarmth.objects.filter(lock=lock)) if lock is not None else []


def _chains_around(pipeline: Pipeline) -> str:
    """The pipelines that start it and that it starts, drawn ("" when there are none)."""
    graph = pipelines_graph(around=pipeline)
    return render_svg(graph, f"the chains around {pipeline.name}") if graph.edges else ""


def _daemon_of(pipeline: Pipeline) -> dict | None:
    """What the pipeline page says about a daemon (restart_on_crash)."""
    daemon = Daemon.objects.filter(pipeline=pipeline).first()
    if not pipeline.spec.restart_on_crash and daemon is None:
        return None
    active = pipeline.runs.filter(
        trigger=PipelineRun.Trigger.DAEMON, status__in=PipelineRun.ACTIVE_STATUSES
    ).first()
    return {
        "row": daemon,
        "run": active,
        "state": daemon.state_in_words(active) if daemon else "not started yet",
    }


def _get_ui_schedule(pipeline: Pipeline, config_id: str) -> Schedule:
    """A schedule made in the UI; pipeline.json's are changed in git, not here."""
    schedule = get_object_or_404(Schedule, pipeline=pipeline, config_id=config_id)
    if schedule.origin == Schedule.Origin.FILE:
        raise PermissionDenied("This schedule comes from pipeline.json: change it there.")
    return schedule


def _schedule_page(request: HttpRequest, pipeline: Pipeline, schedule: Schedule) -> HttpResponse:
    """The form for a new (unsaved `schedule`) or an existing UI schedule."""
    is_new = schedule.pk is None
    form = ScheduleForm(request.POST or None, instance=schedule, initial={"pipeline": pipeline})
    form.fields["pipeline"].disabled = True  # still validated: the id is unique per pipeline
    form.fields["pipeline"].widget = forms.HiddenInput()
    if request.method == "POST" and form.is_valid():
        schedule = form.save()
        done = "added" if is_new else "saved"
        messages.success(request, f"Schedule {schedule.config_id} {done}: {schedule.describe()}.")
        return redirect(pipeline)
    context = {
        "pipeline": pipeline,
        "form": form,
        "schedule": None if is_new else schedule,
        "instance_time_zone": settings.TIME_ZONE,
    }
    return render(request, "pipelines_app/schedule_form.html", context)


@permission_required("pipelines_app.add_schedule", raise_exception=True)
def schedule_add(request: HttpRequest, name: str) -> HttpResponse:
    pipeline = get_object_or_404(Pipeline, name=name)
    return _schedule_page(request, pipeline, Schedule(pipeline=pipeline))


@permission_required("pipelines_app.change_schedule", raise_exception=True)
def schedule_edit(request: HttpRequest, name: str, config_id: str) -> HttpResponse:
    pipeline = get_object_or_404(Pipeline, name=name)
    return _schedule_page(request, pipeline, _get_ui_schedule(pipeline, config_id))


@require_POST
@permission_required("pipelines_app.delete_schedule", raise_exception=True)
def schedule_delete(request: HttpRequest, name: str, config_id: str) -> HttpResponse:
    pipeline = get_object_or_404(Pipeline, name=name)
    schedule = _get_ui_schedule(pipeline, config_id)
    schedule.delete()
    messages.success(request, f"Schedule {config_id} deleted.")
    return redirect(pipeline)


@require_POST
@permission_required("pipelines_app.add_webhookkey", raise_exception=True)
def webhook_key_add(request: HttpRequest, name: str) -> HttpResponse:
    """Make a key and show it once, on the pipeline page (never stored in plain text)."""
    pipeline = get_object_or_404(Pipeline, name=name)
    _, key = WebhookKey.make(pipeline, request.POST.get("label", "").strip()[:100], request.user)
    response = pipeline_detail(request, name, new_webhook_key=key)
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@permission_required("pipelines_app.delete_webhookkey", raise_exception=True)
def webhook_key_delete(request: HttpRequest, name: str, prefix: str) -> HttpResponse:
    key = get_object_or_404(WebhookKey, pipeline__name=name, prefix=prefix)
    key.delete()
    messages.success(request, f"Webhook key {prefix}… revoked.")
    return redirect(key.pipeline)


RECENT_SYNCS = 20


@permission_required("pipelines_app.view_sync", raise_exception=True)
def sync_status(request: HttpRequest) -> HttpResponse:
    """The repository, the live commit, and the history of syncs with their errors."""
    source = GitSource.load()
    context = {
        "source": source,
        "safe_url": safe_url(source.url),
        "syncs": Sync.objects.select_related("requested_by")[:RECENT_SYNCS],
        "live_commit": live_commit(),
        "push_url": request.build_absolute_uri(reverse("git_push")),
        "auto_sync_interval": settings.AUTO_SYNC_INTERVAL,
    }
    return render(request, "pipelines_app/sync.html", context)


@require_POST
@permission_required("pipelines_app.add_sync", raise_exception=True)
def sync_now(request: HttpRequest) -> HttpResponse:
    if not GitSource.load().is_configured:
        messages.error(request, "No repository is configured (GIT_REPO_URL, or the admin).")
    else:
        try:
            request_sync(Sync.Trigger.MANUAL, request.user)
        except SyncNotRequested as problem:
            messages.error(request, str(problem))
            return redirect("sync")
        record(Action.SYNC_REQUESTED, GitSource.load())
        messages.success(request, "Sync requested: the worker fetches the repository now.")
    return redirect("sync")


@login_not_required
@csrf_exempt
@require_POST
def git_push(request: HttpRequest) -> JsonResponse:
    """GitHub's push webhook: verified with X-Hub-Signature-256, other branches ignored."""
    source = GitSource.load()
    secret = source.secret("webhook_secret") if source.is_configured else ""
    if not secret:
        return JsonResponse({"error": "Push webhooks are not set up here."}, status=404)
    expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    given = request.headers.get("X-Hub-Signature-256", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return JsonResponse({"error": "The signature does not match."}, status=403)
    event = request.headers.get("X-GitHub-Event", "push")
    if event == "ping":
        return JsonResponse({"ok": "pong"})
    if event != "push":
        return JsonResponse({"ignored": f"the {event} event"}, status=202)
    try:
        ref = json.loads(request.body).get("ref", "")
    except (ValueError, AttributeError):
        return JsonResponse({"error": "The body is not a push event."}, status=400)
    if ref != f"refs/heads/{source.branch}":
        return JsonResponse({"ignored": f"{ref} is not {source.branch}"}, status=202)
    try:
        request_sync(Sync.Trigger.PUSH)
    except SyncNotRequested as problem:  # GitHub shows it; "Redeliver" sends it again
        return JsonResponse({"error": str(problem)}, status=503, headers={"Retry-After": "5"})
    return JsonResponse({"sync": "requested", "branch": source.branch}, status=202)
