"""Webhooks: keys (pipeline.json, a schedule's, made in the UI), uniform refusals, disabled
pipelines, values for the run, reserved names, the rate limit."""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache
from django.urls import reverse

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline, WebhookKey
from runs_app.models import PipelineRun
from secrets_app import crypto
from secrets_app.models import Variable

pytestmark = pytest.mark.django_db

FILE_KEY = "file-key-0123456789abcdef"
SCHEDULE_KEY = "schedule-key-0123456789abcdef"


@pytest.fixture(autouse=True)
def _setup(settings, make_pipeline):
    settings.MAX_CONCURRENT_RUNS = 0  # the runs stay queued: these tests look at the call
    settings.WEBHOOK_RATE_LIMIT = 60
    cache.clear()  # the rate-limit counters of earlier tests
    make_pipeline(
        "hooked",
        config={
            "webhook_key": FILE_KEY,
            "encrypted_env": {"DB_PASSWORD": crypto.encrypt("the real one")},
            "schedules": [{"id": "prod", "webhook_key": SCHEDULE_KEY, "timeout": 30}],
        },
    )
    stored = Variable(name="API_TOKEN", kind=Variable.Kind.SECRET)
    stored.set_value("stored secret")
    stored.save()
    make_pipeline("off", config={"webhook_key": FILE_KEY, "enabled": False})
    discover()


def call(client, name, key=None, body=None, header="X-Fastflow-Key"):
    headers = {}
    if key is not None:
        headers = {header: f"Bearer {key}" if header == "Authorization" else key}
    return client.post(
        reverse("webhook", args=[name]),
        data=json.dumps(body) if body is not None else "",
        content_type="application/json",
        headers=headers,
    )


def test_the_pipeline_key_starts_a_run(client):
    response = call(client, "hooked", FILE_KEY, {"DAY": "monday", "COUNT": 3, "DRY": True})
    assert response.status_code == 202
    run = PipelineRun.objects.get()
    assert response.json() == {
        "run_id": str(run.public_id),
        "url": f"http://testserver{run.get_absolute_url()}",
        "status": "queued",
        "pipeline": "hooked",
        "schedule": None,
    }
    assert run.trigger == PipelineRun.Trigger.WEBHOOK
    assert run.parameters == {"DAY": "monday", "COUNT": "3", "DRY": "true"}


def test_a_bearer_header_works_too(client):
    assert call(client, "hooked", FILE_KEY, header="Authorization").status_code == 202


def test_a_schedules_key_starts_the_run_with_its_overrides(client):
    response = call(client, "hooked", SCHEDULE_KEY)
    assert response.status_code == 202 and response.json()["schedule"] == "prod"
    run = PipelineRun.objects.get()
    assert run.config_id == "prod" and run.run_settings.timeout_seconds == 30


def test_a_key_made_in_the_ui_works_and_is_stored_hashed(client):
    webhook_key, key = WebhookKey.make(Pipeline.objects.get(name="hooked"), "CI")
    assert key not in webhook_key.key_hash
    assert call(client, "hooked", key).status_code == 202
    webhook_key.refresh_from_db()
    assert webhook_key.last_used_at is not None


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("hooked", "wrong-key"),
        ("hooked", None),
        ("hooked", ""),
        ("no-such-pipeline", FILE_KEY),
        ("no-such-pipeline", None),
    ],
)
def test_unknown_pipelines_and_wrong_keys_get_the_same_answer(client, name, key):
    response = call(client, name, key)
    assert response.status_code == 404
    assert response.json() == {"error": "No such pipeline, or the key is wrong."}
    assert not PipelineRun.objects.exists()


def test_a_disabled_pipeline_refuses(client):
    response = call(client, "off", FILE_KEY)
    assert response.status_code == 409 and "disabled" in response.json()["error"]
    assert not PipelineRun.objects.exists()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"PATH": "/evil"}, "PATH is reserved"),
        ({"PYTHONPATH": "/evil"}, "PYTHONPATH is reserved"),
        ({"UV_INDEX_URL": "http://evil"}, "UV_INDEX_URL is reserved"),
        ({"LD_PRELOAD": "x.so"}, "LD_PRELOAD is reserved"),
        ({"SSL_CERT_FILE": "/x"}, "SSL_CERT_FILE is reserved"),
        ({"FASTFLOW_RUN_ID": "x"}, "FASTFLOW_RUN_ID is reserved"),
        ({"HTTPS_PROXY": "http://evil:3128"}, "HTTPS_PROXY is reserved"),
        ({"https_proxy": "http://evil:3128"}, "https_proxy is reserved"),
        ({"NO_PROXY": "*"}, "NO_PROXY is reserved"),
        ({"CURL_CA_BUNDLE": "/evil.pem"}, "CURL_CA_BUNDLE is reserved"),
        ({"REQUESTS_CA_BUNDLE": "/evil.pem"}, "REQUESTS_CA_BUNDLE is reserved"),
        ({"NETRC": "/evil"}, "NETRC is reserved"),
        # A caller may not swap a secret of the pipeline for a value of its own.
        ({"DB_PASSWORD": "mine"}, "DB_PASSWORD is a secret of hooked"),
        ({"API_TOKEN": "mine"}, "API_TOKEN is a secret of hooked"),
        ({"bad name": "x"}, "is not a variable name"),
        ({"NESTED": {"a": 1}}, "must be a string, number or boolean"),
        (["not", "an", "object"], "must be a JSON object"),
    ],
)
def test_values_that_would_change_how_the_run_is_built_are_rejected(client, body, why):
    response = call(client, "hooked", FILE_KEY, body)
    assert response.status_code == 400
    assert any(why in problem for problem in response.json()["problems"])
    assert not PipelineRun.objects.exists()


def test_a_deeply_nested_body_is_a_400_not_a_500(client):
    response = client.post(
        reverse("webhook", args=["hooked"]),
        data="[" * 100_000 + "]" * 100_000,
        content_type="application/json",
        headers={"X-Fastflow-Key": FILE_KEY},
    )
    assert response.status_code == 400
    assert not PipelineRun.objects.exists()


def test_a_body_that_is_not_json_is_rejected(client):
    response = client.post(
        reverse("webhook", args=["hooked"]),
        data="{nope",
        content_type="application/json",
        headers={"X-Fastflow-Key": FILE_KEY},
    )
    assert response.status_code == 400


def test_the_rate_limit_answers_429(client, settings):
    settings.WEBHOOK_RATE_LIMIT = 3
    codes = [call(client, "hooked", FILE_KEY).status_code for _ in range(4)]
    assert codes == [202, 202, 202, 429]
    refused = call(client, "hooked", FILE_KEY)
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert PipelineRun.objects.count() == 3


def test_only_post_and_no_login_or_csrf_needed(client):
    assert client.get(reverse("webhook", args=["hooked"])).status_code == 405
    csrf_client = client.__class__(enforce_csrf_checks=True)
    assert call(csrf_client, "hooked", FILE_KEY).status_code == 202


def test_ui_keys_are_made_and_shown_once_then_revoked(admin_client):
    page = admin_client.post(
        reverse("pipelines_app:webhook_key_add", args=["hooked"]), {"label": "CI"}
    )
    assert page.status_code == 200
    stored = WebhookKey.objects.get()
    key = page.content.decode().split('<pre class="code">')[1].split("</pre>")[0]
    assert WebhookKey.hash(key) == stored.key_hash
    later = admin_client.get(reverse("pipelines_app:detail", args=["hooked"])).content.decode()
    assert key not in later and f"{stored.prefix}…" in later
    assert FILE_KEY not in later and SCHEDULE_KEY not in later  # keys are never shown
    admin_client.post(reverse("pipelines_app:webhook_key_delete", args=["hooked", stored.prefix]))
    assert not WebhookKey.objects.exists()


def test_people_without_permission_cannot_make_keys(viewer_client):
    response = viewer_client.post(reverse("pipelines_app:webhook_key_add", args=["hooked"]))
    assert response.status_code == 403
