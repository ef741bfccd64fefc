"""The JSON API, version 1 (django-ninja): pipelines, starting runs, run status, the log
from a cursor, cancelling. Personal API tokens (`Authorization: Bearer fft_…`) or the
browser's session; the person's role applies either way, and a `read` token only reads.
The OpenAPI description is at /api/v1/openapi.json (browsable at /api/v1/docs)."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Annotated
from uuid import UUID

from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from ninja import Field, NinjaAPI, Query, Schema, Status
from ninja.errors import HttpError, ValidationError
from ninja.parser import Parser
from ninja.security import HttpBearer, SessionAuth
from pydantic import WithJsonSchema

from fastflow_site.models import ApiToken
from pipelines_app.models import Pipeline
from runs_app.limits import effective_limits
from runs_app.models import PipelineRun, RunRefused, with_last_run
from runs_app.run_values import parameters_json_schema, values_from_json
from runs_app.stored_logs import LogTail

LOG_LINES_MAX = 5000


class TokenAuth(HttpBearer):
    openapi_scheme = "bearer"

    def authenticate(self, request: HttpRequest, token: str) -> ApiToken | None:
        found = ApiToken.authenticate(token)
        if found is not None:
            request.user = found.user
            request.api_token = found
        return found


class ActiveSessionAuth(SessionAuth):
    """The signed-in person's session (CSRF-checked for changes, like any form)."""

    def authenticate(self, request: HttpRequest, key):
        user = request.user
        return user if user.is_authenticated and user.is_active else None


def _described_to_callers(view):
    """The OpenAPI description and its page: for a signed-in person or a valid token."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if request.user.is_authenticated or ApiToken.authenticate(token) is not None:
            return view(request, *args, **kwargs)
        return JsonResponse({"detail": "Unauthorized"}, status=401)

    return wrapper


class ObjectBodies(Parser):
    """Every body this API takes is a JSON object: anything else is refused (400), never
    read as an empty request."""

    def parse_body(self, request: HttpRequest):
        data = super().parse_body(request)
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        return data


api = NinjaAPI(
    parser=ObjectBodies(),
    title="Fast-Flow API",
    version="1",
    description=__doc__,
    urls_namespace="api_v1",
    auth=[TokenAuth(), ActiveSessionAuth()],
    docs_decorator=_described_to_callers,
)


def _require(request: HttpRequest, permission: str, scope: str = ApiToken.Scope.READ) -> None:
    token = getattr(request, "api_token", None)
    if token is not None and not token.allows(scope):
        raise HttpError(403, f"This token's scope is {token.scope}; this needs {scope}.")
    if not request.user.has_perm(permission):
        raise HttpError(403, "Your role does not allow this.")


# --- schemas --------------------------------------------------------------------------------


class LimitsOut(Schema):
    cpu_hard: float | None = Field(description="cores; null: no limit")
    mem_hard_bytes: int | None
    cpu_soft: float | None = Field(description="watched only: a warning above it")
    mem_soft_bytes: int | None
    timeout_seconds: int | None = Field(description="null: no limit")
    notes: list[str] = Field(description="limits asked for above the instance's")


class EnvironmentOut(Schema):
    lock: str = Field(alias="sha256", description="sha256 of the lock")
    packages: list[str] = Field(description='"name==version", sorted')


class RunOut(Schema):
    id: UUID = Field(alias="public_id")
    pipeline: str = Field(alias="pipeline.name")
    status: str
    failure_reason: str
    error_message: str
    exit_code: int | None
    trigger: str
    attempt: int
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    git_commit: str
    executor: str = Field(
        description="The executor that started it: docker, swarm, sandbox or local "
        "(empty until it started)"
    )
    environment: EnvironmentOut | None = Field(
        alias="environment_lock", description="The packages it ran with (its warm-up's lock)"
    )
    limits: LimitsOut = Field(
        alias="effective_limits", description="Its effective limits, as its container got them"
    )
    url: str = Field(alias="get_absolute_url")


class LastRun(Schema):
    id: UUID | None
    status: str | None
    queued_at: datetime | None


class PipelineOut(Schema):
    name: str
    description: str
    tags: list[str]
    enabled: bool
    status: str
    last_run: LastRun


class ScheduleOut(Schema):
    id: str = Field(alias="config_id")
    description: str = Field(alias="describe")
    enabled: bool
    origin: str


class PipelineDetailOut(PipelineOut):
    limits: LimitsOut = Field(description="The effective limits its next run gets")
    errors: list[str] = Field(alias="error_messages")
    warnings: list[str] = Field(alias="warning_messages")
    has_requirements: bool
    schedules: list[ScheduleOut]
    recent_runs: list[RunOut]


Parameters = Annotated[
    dict[str, str | int | float | bool], WithJsonSchema(parameters_json_schema())
]
# A log line: [seq, timestamp, stream, text] (prefixItems: OpenAPI 3.1's JSON Schema).
# A log line: [seq, timestamp, stream, text]. Described position by position in words:
# OpenAPI 3.1's own way (prefixItems) is refused by tools still (schemathesis 4.32).
LogLine = Annotated[
    list[int | str],
    WithJsonSchema(
        {
            "type": "array",
            "items": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "minItems": 4,
            "maxItems": 4,
            "description": "[seq, timestamp, stream, text]: the sequence number (from 1), "
            "when it was written (RFC 3339, UTC), O (stdout), E (stderr) or S (Fast-Flow's "
            "own), and the line with secrets masked",
        }
    ),
]


class RunIn(Schema):
    parameters: Parameters = Field(default_factory=dict)
    confirm_disabled: bool = Field(
        default=False, description="Run a pipeline disabled in its pipeline.json anyway"
    )


class LogOut(Schema):
    lines: list[LogLine]
    next: int = Field(description="Ask again with after=next for what follows")
    finished: bool
    log_removed: bool = Field(description="Retention removed this run's log")


class CancelOut(Schema):
    outcome: str
    run: RunOut


class ErrorOut(Schema):
    detail: str
    problems: list[str] = Field(default_factory=list, description="What was wrong, one by one")


def answers(ok: int, schema, *errors: int) -> dict:
    """The responses of an endpoint: its own, and the errors it can give — 401 (no valid
    token or session), 403 (role or token scope), 503 (the database away), and those named
    (400 refused, 404 not found, 409 conflict, 422 a malformed request) — as ErrorOut."""
    return {ok: schema, **dict.fromkeys((401, 403, 503, *errors), ErrorOut)}


@api.exception_handler(ValidationError)
def malformed_request(request: HttpRequest, error: ValidationError):
    """A request the schema refuses: 422, in the shape of every other error."""
    problems = []
    for item in error.errors:
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        problems.append(f"{where}: {item.get('msg', 'invalid')}"[:500])
    return api.create_response(
        request, {"detail": "The request was malformed.", "problems": problems}, status=422
    )


# --- endpoints ------------------------------------------------------------------------------


def _pipeline_out(pipeline: Pipeline) -> dict:
    return {
        "name": pipeline.name,
        "description": pipeline.description,
        "tags": pipeline.tags,
        "enabled": pipeline.enabled,
        "status": pipeline.status,
        "last_run": {
            "id": getattr(pipeline, "last_run_public_id", None),
            "status": getattr(pipeline, "last_run_status", None),
            "queued_at": getattr(pipeline, "last_run_at", None),
        },
    }


@api.get("/pipelines", response=answers(200, list[PipelineOut]), tags=["pipelines"])
def list_pipelines(request: HttpRequest):
    _require(request, "pipelines_app.view_pipeline")
    pipelines = with_last_run(Pipeline.objects.filter(state=Pipeline.State.PRESENT))
    return [_pipeline_out(pipeline) for pipeline in pipelines]


@api.get("/pipelines/{name}", response=answers(200, PipelineDetailOut, 404), tags=["pipelines"])
def pipeline_detail(request: HttpRequest, name: str):
    _require(request, "pipelines_app.view_pipeline")
    pipeline = get_object_or_404(with_last_run(Pipeline.objects.all()), name=name)
    return {
        **_pipeline_out(pipeline),
        "error_messages": pipeline.error_messages,
        "warning_messages": pipeline.warning_messages,
        "has_requirements": pipeline.has_requirements,
        "limits": effective_limits(pipeline.spec.run),
        "schedules": list(pipeline.schedules.all()),
        "recent_runs": list(pipeline.runs.select_related("pipeline", "environment_lock")[:20]),
    }


@api.post(
    "/pipelines/{name}/runs", response=answers(202, RunOut, 400, 404, 409, 422), tags=["runs"]
)
def start_run(request: HttpRequest, name: str, body: RunIn):
    _require(request, "runs_app.add_pipelinerun", ApiToken.Scope.RUN)
    pipeline = get_object_or_404(Pipeline, name=name)
    values, problems = values_from_json(body.parameters)
    if problems:
        return Status(400, {"detail": "The parameters were refused.", "problems": problems})
    try:
        run = PipelineRun.start(
            pipeline,
            by=request.user,
            via="api",
            trigger=PipelineRun.Trigger.API,
            parameters=values,
            confirm_disabled=body.confirm_disabled,
        )
    except RunRefused as refused:
        return Status(REFUSAL_STATUS.get(refused.kind, 409), refusal_body(refused, pipeline))
    return Status(202, run)


# A refused start, by its kind (runs_app.models.entry): the description's 400 is what no
# pipeline takes; what this pipeline does not take, or not now, is a conflict.
REFUSAL_STATUS = {"refused": 400}


def refusal_body(refused: RunRefused, pipeline: Pipeline) -> dict:
    if refused.kind == "disabled":
        detail = f"{pipeline.name} is disabled in its pipeline.json; send confirm_disabled: true"
        return {"detail": detail}
    if refused.kind == "refused":
        return {"detail": "The parameters were refused.", "problems": refused.problems}
    if refused.kind == "conflict":
        return {
            "detail": "The parameters conflict with the pipeline.",
            "problems": refused.problems,
        }
    return {"detail": str(refused)}


def _get_run(public_id: UUID) -> PipelineRun:
    return get_object_or_404(
        PipelineRun.objects.select_related("pipeline", "environment_lock"), public_id=public_id
    )


@api.get("/runs/{run_id}", response=answers(200, RunOut, 404, 422), tags=["runs"])
def run_status(request: HttpRequest, run_id: UUID):
    _require(request, "runs_app.view_pipelinerun")
    return _get_run(run_id)


@api.get("/runs/{run_id}/log", response=answers(200, LogOut, 404, 422), tags=["runs"])
def run_log(
    request: HttpRequest,
    run_id: UUID,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=LOG_LINES_MAX)] = 1000,
):
    """Lines after number `after` (0: from the start), at most `limit` of them."""
    _require(request, "runs_app.view_pipelinerun")
    run = _get_run(run_id)
    tail = LogTail(run.pk, chunks_per_read=1)  # a page needs a few thousand lines at most
    tail.seek(max(0, after))
    lines: list[tuple[int, str, str, str]] = []
    finished = run.status in PipelineRun.FINAL_STATUSES  # read before the file: no line lost
    while len(lines) < limit and (batch := tail.read()):
        lines += batch
    lines = lines[:limit]
    next_after = lines[-1][0] if lines else max(0, min(after, tail.seq))
    return {
        "lines": lines,
        "next": next_after,
        "finished": finished and len(lines) < limit,
        "log_removed": run.log_removed_at is not None,
    }


@api.post("/runs/{run_id}/cancel", response=answers(200, CancelOut, 404, 422), tags=["runs"])
def cancel_run(request: HttpRequest, run_id: UUID):
    _require(request, "runs_app.change_pipelinerun", ApiToken.Scope.RUN)
    run = _get_run(run_id)
    outcome = run.cancel(by=request.user, via="api")
    return {"outcome": outcome, "run": run}
