"""One way in: every entry point that starts or cancels a run — the run form, the API, the
admin's actions, `runpipeline` and `cancelrun`, webhooks, "Run again" — goes through
`PipelineRun.start` / `run.cancel`: a disabled pipeline is refused unless confirmed (a
webhook cannot confirm), and each start and cancel writes exactly one audit entry."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from fastflow_site.models import ApiToken, AuditEntry
from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun

pytestmark = pytest.mark.django_db
Action = AuditEntry.Action
KEY = "entry-points-webhook-key-0123456789"


@pytest.fixture
def paused(make_pipeline, settings, tmp_path):
    settings.LOGS_DIR = tmp_path / "logs"
    settings.MAX_CONCURRENT_RUNS = 0  # runs stay queued
    make_pipeline("paused", config={"enabled": False, "webhook_key": KEY})
    discover()
    return Pipeline.objects.get(name="paused")


def api_client(user) -> Client:
    _, text = ApiToken.make(user, "entry", ApiToken.Scope.RUN)
    return Client(headers={"Authorization": f"Bearer {text}"})


def started() -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action__in=[Action.RUN_STARTED, Action.RUN_RERUN]))


def test_the_run_form_asks_then_starts_once_confirmed(paused, operator_client):
    url = reverse("runs_app:start", args=["paused"])
    refused = operator_client.post(url)
    assert refused.status_code == 302 and "confirm=run" in refused["Location"]
    assert not PipelineRun.objects.exists() and not started()
    operator_client.post(url, {"confirm_disabled": "yes"})
    (run,) = PipelineRun.objects.all()
    (entry,) = started()
    assert entry.object_id == str(run.public_id) and entry.via == "web"


def test_the_api_asks_then_starts_once_confirmed(paused, operator):
    api = api_client(operator)
    url = "/api/v1/pipelines/paused/runs"
    refused = api.post(url, {}, "application/json")
    assert refused.status_code == 409 and "confirm_disabled" in refused.json()["detail"]
    assert not started()
    assert api.post(url, {"confirm_disabled": True}, "application/json").status_code == 202
    (entry,) = started()
    assert entry.via == "api" and entry.actor == operator


def test_the_admin_action_refuses_a_disabled_pipeline(paused, admin_client):
    response = admin_client.post(
        reverse("admin:pipelines_app_pipeline_changelist"),
        {"action": "run_now", "_selected_action": [paused.pk]},
        follow=True,
    )
    assert "disabled in its pipeline.json" in response.content.decode()
    assert not PipelineRun.objects.exists() and not started()


def test_the_admin_action_starts_an_enabled_pipeline_once(paused, admin_client, make_pipeline):
    make_pipeline("live")
    discover()
    admin_client.post(
        reverse("admin:pipelines_app_pipeline_changelist"),
        {"action": "run_now", "_selected_action": [Pipeline.objects.get(name="live").pk]},
    )
    (entry,) = started()
    assert entry.via == "admin"


def test_runpipeline_needs_confirm_disabled(paused):
    with pytest.raises(CommandError, match=r"disabled in its pipeline\.json.*--confirm-disabled"):
        call_command("runpipeline", "paused")
    assert not PipelineRun.objects.exists()
    call_command("runpipeline", "paused", "--confirm-disabled")
    (entry,) = started()
    assert entry.via == "command"


def test_a_webhook_cannot_start_a_disabled_pipeline(paused, client):
    response = client.post("/hooks/paused/", headers={"X-Fastflow-Key": KEY})
    assert response.status_code == 409
    assert not PipelineRun.objects.exists() and not started()


def test_a_webhook_start_is_audited_once_without_a_person(paused, client):
    Pipeline.objects.filter(pk=paused.pk).update(enabled=True)
    response = client.post(
        "/hooks/paused/",
        json.dumps({"DAY": "monday"}),
        content_type="application/json",
        headers={"X-Fastflow-Key": KEY},
    )
    assert response.status_code == 202
    (entry,) = started()
    assert entry.via == "webhook" and entry.actor is None
    assert entry.details == {"parameters": ["DAY"]}


def test_run_again_is_one_rerun_entry_and_refused_while_disabled(paused, operator_client):
    run = PipelineRun.start(paused, confirm_disabled=True)
    AuditEntry.objects.all().delete()
    response = operator_client.post(reverse("runs_app:rerun", args=[run.public_id]), follow=True)
    assert "disabled in its pipeline.json" in response.content.decode()
    assert PipelineRun.objects.count() == 1
    Pipeline.objects.filter(pk=paused.pk).update(enabled=True)
    operator_client.post(reverse("runs_app:rerun", args=[run.public_id]))
    (entry,) = started()
    assert entry.action == Action.RUN_RERUN and entry.details == {"of": str(run.public_id)}


def test_every_cancel_entry_point_writes_one_entry(paused, operator_client, operator):
    runs = [PipelineRun.start(paused, confirm_disabled=True) for _ in range(4)]
    operator_client.post(reverse("runs_app:cancel", args=[runs[0].public_id]))
    api_client(operator).post(f"/api/v1/runs/{runs[1].public_id}/cancel")
    call_command("cancelrun", str(runs[2].public_id))
    operator_client.force_login(operator)
    # An already ended run: nothing to cancel, nothing recorded.
    call_command("cancelrun", str(runs[0].public_id))
    cancelled = AuditEntry.objects.filter(action=Action.RUN_CANCELLED)
    assert sorted(entry.object_id for entry in cancelled) == sorted(
        str(run.public_id) for run in runs[:3]
    )
    assert sorted(entry.via for entry in cancelled) == ["api", "command", "web"]
