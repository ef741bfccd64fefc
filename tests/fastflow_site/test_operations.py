"""Health and metrics: what a load balancer and Prometheus see, checked by the client
library's parser and by a real Prometheus server scraping the endpoint."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from datetime import timedelta
from html import escape

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from pipelines_app.discovery import discover
from pipelines_app.models import GitSource, Pipeline, Schedule, Sync
from runs_app.follow import wait_for
from runs_app.models import Channel, PipelineRun, WorkerProcess
from tests.runs_app.conftest import free_port, require
from tests.runs_app.test_worker import kill_group

pytestmark = pytest.mark.django_db
TOKEN = "metrics-token-for-tests-0123456789"
Status = PipelineRun.Status


@pytest.fixture
def instance(make_pipeline, settings, tmp_path):
    settings.LOGS_DIR = tmp_path / "logs"
    settings.DATA_DIR = tmp_path / "data"
    settings.LOGS_DIR.mkdir()
    settings.DATA_DIR.mkdir()
    settings.MAX_CONCURRENT_RUNS = 0
    settings.METRICS_TOKEN = TOKEN
    settings.FASTFLOW_EXECUTOR = "docker"
    make_pipeline("etl")
    make_pipeline("report")
    discover()
    etl, report = Pipeline.objects.get(name="etl"), Pipeline.objects.get(name="report")
    now = timezone.now()

    def ended(pipeline, status, seconds, setup):
        """A run followed by a worker, ended through the state machine as a worker ends it."""
        run = PipelineRun.objects.create(
            pipeline=pipeline, status=Status.RUNNING, worker_id="host:1:abc",
            queued_at=now - timedelta(minutes=5), started_at=now - timedelta(seconds=seconds),
            setup_duration=timedelta(seconds=setup),
        )  # fmt: skip
        assert run.finish(status, finished_at=now)

    ended(etl, Status.SUCCEEDED, 3, 0.2)
    ended(etl, Status.SUCCEEDED, 40, 0.4)
    ended(etl, Status.FAILED, 700, 1.5)
    ended(report, Status.TIMED_OUT, 3700, 0.3)
    PipelineRun.objects.create(pipeline=etl, status=Status.RUNNING, started_at=now)
    PipelineRun.objects.create(pipeline=report, queued_at=now - timedelta(seconds=90))
    cancelled = PipelineRun.objects.create(pipeline=report)
    assert cancelled.request_cancel() == "cancelled"  # counted, with no duration
    Schedule.objects.create(
        pipeline=etl, config_id="nightly", interval_seconds=3600,
        next_fire_at=now - timedelta(seconds=120),
    )  # fmt: skip
    WorkerProcess.report("host:1:abc", engine_ok=True)
    return etl, report


def scrape(client) -> dict:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_liveness_answers_anyone(client):
    response = client.get("/health/")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readiness_for_anonymous_callers_names_checks_only(client, instance):
    response = client.get("/health/ready/")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {name: {"ok": True} for name in ("database", "worker", "engine", "disk", "sync")},
    }


def test_readiness_fails_with_a_reason_operators_see(client, instance, admin_user):
    WorkerProcess.objects.update(seen_at=timezone.now() - timedelta(hours=1))
    anonymous = client.get("/health/ready/")
    assert anonymous.status_code == 503
    assert anonymous.json()["checks"]["worker"] == {"ok": False}
    assert "detail" not in json.dumps(anonymous.json())
    operator = Client(headers={"Authorization": f"Bearer {TOKEN}"})
    checks = operator.get("/health/ready/").json()["checks"]
    assert "no worker has reported" in checks["worker"]["detail"]
    assert checks["engine"] == {"ok": False, "detail": "unknown: no live worker to ask"}
    client.force_login(admin_user)
    assert "detail" in client.get("/health/ready/").json()["checks"]["database"]


def test_a_degraded_worker_fails_readiness_and_says_why_in_the_admin(instance, admin_client):
    """A worker that reports a loop failing (or a thread started again) is degraded: the
    instance is not ready, and operators see why — on /health/ready/ and in the admin."""
    why = "schedules fails since 2026-12-06T10:00:00+00:00 (12 turns): OperationalError: gone"
    WorkerProcess.report(
        "host:1:abc",
        engine_ok=True,
        threads=[{"name": "ticker", "alive": True, "restarts": 0,
                  "loops": [{"name": "schedules", "state": "failing"}]}],
        degraded=why,
    )  # fmt: skip
    anonymous = Client().get("/health/ready/")
    assert anonymous.status_code == 503 and anonymous.json()["checks"]["worker"] == {"ok": False}
    checks = Client(headers={"Authorization": f"Bearer {TOKEN}"}).get("/health/ready/").json()
    assert checks["checks"]["worker"]["detail"] == f"host:1:abc is degraded: {why}"
    workers = admin_client.get(reverse("admin:runs_app_workerprocess_changelist"))
    assert f"degraded: {why}" in workers.content.decode()
    detail = admin_client.get(
        reverse("admin:runs_app_workerprocess_change", args=[WorkerProcess.objects.get().pk])
    )
    assert escape('"state": "failing"') in detail.content.decode()
    metrics = Client(headers={"Authorization": f"Bearer {TOKEN}"}).get("/metrics")
    assert "fastflow_workers_degraded 1.0" in metrics.content.decode()
    WorkerProcess.report("host:1:abc", engine_ok=True, threads=[], degraded="")  # well again
    assert Client().get("/health/ready/").status_code == 200


def test_readiness_sees_an_unreachable_engine_a_full_disk_and_a_failed_sync(
    client, instance, settings
):
    WorkerProcess.objects.update(engine_ok=False, engine_error="Cannot connect to dockerd")
    settings.HEALTH_MIN_FREE_DISK_MB = 10**9
    GitSource.objects.create(url="https://example.com/repo.git")
    Sync.objects.create(trigger="cli", status=Sync.Status.FAILED, error="auth failed\nmore")
    checks = Client(headers={"Authorization": f"Bearer {TOKEN}"}).get("/health/ready/").json()
    assert checks["checks"]["engine"]["detail"].endswith("Cannot connect to dockerd")
    assert "fewer than HEALTH_MIN_FREE_DISK_MB" in checks["checks"]["disk"]["detail"]
    assert checks["checks"]["sync"] == {"ok": False, "detail": "the last sync failed: auth failed"}
    assert checks["status"] == "unavailable"


def test_metrics_need_the_token_or_a_staff_session(client, instance, viewer, operator):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    client.force_login(viewer)
    assert client.get("/metrics").status_code == 401
    client.force_login(operator)
    assert client.get("/metrics").status_code == 200


def test_metrics_hold_the_instance_figures(client, instance, settings):
    samples = scrape(client)
    assert samples[("fastflow_runs_total", (("pipeline", "etl"), ("status", "succeeded")))] == 2
    assert samples[("fastflow_runs_total", (("pipeline", "etl"), ("status", "failed")))] == 1
    assert samples[("fastflow_runs_total", (("pipeline", "report"), ("status", "timed_out")))] == 1
    assert samples[("fastflow_runs_total", (("pipeline", "report"), ("status", "cancelled")))] == 1
    etl = ("pipeline", "etl")
    assert samples[("fastflow_run_duration_seconds_bucket", (("le", "5.0"), etl))] == 1
    assert samples[("fastflow_run_duration_seconds_bucket", (("le", "60.0"), etl))] == 2
    assert samples[("fastflow_run_duration_seconds_bucket", (("le", "+Inf"), etl))] == 3
    assert samples[("fastflow_run_duration_seconds_count", (etl,))] == 3
    assert samples[("fastflow_run_duration_seconds_sum", (etl,))] == pytest.approx(743, abs=1)
    assert samples[("fastflow_run_setup_duration_seconds_bucket", (("le", "0.25"), etl))] == 1
    assert samples[("fastflow_run_setup_duration_seconds_sum", (etl,))] == pytest.approx(2.1)
    assert samples[("fastflow_queue_depth", ())] == 1
    assert samples[("fastflow_queue_oldest_age_seconds", ())] == pytest.approx(90, abs=5)
    assert samples[("fastflow_runs_in_flight", (("status", "running"),))] == 1
    lateness = ("fastflow_schedule_lateness_seconds", (etl, ("schedule", "nightly")))
    assert samples[lateness] == pytest.approx(120, abs=5)
    assert samples[("fastflow_workers_alive", ())] == 1
    assert samples[("fastflow_pipelines_by_warmup_status", (("status", "none"),))] == 2
    assert not any(name == "fastflow_sync_last_failed" for name, _ in samples)
    broken = Channel(name="ops", failures_total=4, consecutive_failures=3)
    broken.set_url("json://127.0.0.1:9/x")
    broken.save()
    samples = scrape(client)
    assert samples[("fastflow_notification_failures_total", (("channel", "ops"),))] == 4
    assert samples[("fastflow_notification_channel_failing", (("channel", "ops"),))] == 1
    # pruning old runs never lowers a counter
    PipelineRun.objects.filter(status=Status.SUCCEEDED).delete()
    etl_ok = ("fastflow_runs_total", (("pipeline", "etl"), ("status", "succeeded")))
    assert scrape(client)[etl_ok] == 2
    GitSource.objects.create(url="https://example.com/repo.git")
    Sync.objects.create(trigger="cli", status=Sync.Status.FAILED)
    assert scrape(client)[("fastflow_sync_last_failed", ())] == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_real_prometheus_scrapes_the_endpoint(instance, live_server, tmp_path):
    binary = shutil.which("prometheus")
    require(binary is not None, "Debian's Prometheus (apt-get install prometheus)")
    port = free_port()
    target = urllib.parse.urlparse(live_server.url).netloc
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: fastflow\n"
        "    metrics_path: /metrics\n"
        f"    authorization: {{credentials_file: {tmp_path / 'token'}}}\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    server = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=open(tmp_path / "prometheus.log", "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True,
    )  # fmt: skip
    try:

        def query(expression: str) -> list:
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode(
                {"query": expression}
            )
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    return json.load(reply)["data"]["result"]
            except OSError:
                return []

        expression = 'fastflow_runs_total{pipeline="etl",status="succeeded"}'
        assert wait_for(lambda: query(expression), timeout=30, poll=0.5), (
            tmp_path / "prometheus.log"
        ).read_text()[-2000:]
        assert query(expression)[0]["value"][1] == "2"
        assert query('up{job="fastflow"}')[0]["value"][1] == "1"
        quantile = 'histogram_quantile(0.5, fastflow_run_duration_seconds_bucket{pipeline="etl"})'
        assert wait_for(lambda: query(quantile), timeout=10, poll=0.5)
    finally:
        kill_group(server)
