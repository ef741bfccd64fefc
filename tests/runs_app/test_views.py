"""The run page, its fragment, log download, cancel and rerun."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.logs import STDERR, STDOUT
from runs_app.models import LogChunk, PipelineRun
from tests.runs_app.conftest import run_log

pytestmark = pytest.mark.django_db
Status = PipelineRun.Status


@pytest.fixture
def finished_run(make_pipeline, settings, tmp_path, admin_user):
    settings.LOGS_DIR = tmp_path / "logs"
    settings.MAX_CONCURRENT_RUNS = 0
    make_pipeline("etl")
    discover()
    first = PipelineRun.enqueue(Pipeline.objects.get(name="etl"), trigger="manual", user=admin_user)
    now = timezone.now()
    PipelineRun.objects.filter(pk=first.pk).update(
        status=Status.FAILED,
        failure_reason=PipelineRun.FailureReason.OUT_OF_MEMORY,
        error_message="out of memory: killed for using more than its memory limit (64 MiB)",
        exit_code=137,
        started_at=now - timedelta(seconds=12),
        finished_at=now,
        setup_duration=timedelta(seconds=0.4),
        uv_version="uv 0.13.9",
        environment={"REGION": "eu"},
        secret_env_names=["DB_PASSWORD"],
        parameters={"DAY": "monday"},
        peak_memory_bytes=64 * 1024**2,
        peak_cpu_percent=97.0,
        limit_warnings=["memory peaked at 64 MiB, above the soft limit of 32 MiB"],
    )
    writer = run_log(first)
    writer.write(STDOUT, "\x1b[32mgreen\x1b[0m hello", "2026-01-01T00:00:00.000000001Z")
    writer.write(STDERR, "boom", "2026-01-01T00:00:01.000000001Z")
    writer.system("finished: failed")
    writer.close()
    first.refresh_from_db()
    return first


def test_run_page_shows_everything_about_the_run(admin_client, finished_run):
    html = admin_client.get(finished_run.get_absolute_url()).content.decode()
    assert "✖ failed" in html
    assert (
        "Out of memory: out of memory: killed for using more than its memory limit (64 MiB)" in html
    )
    assert "<dt>Exit code</dt><dd>137</dd>" in html
    assert "0.40 s (uv 0.13.9)" in html
    assert "12.0 s" in html
    assert "manual by ada" in html
    assert "<code>REGION=eu</code>" in html
    assert "<code>DB_PASSWORD=***</code>" in html
    assert "<code>DAY=monday</code>" in html
    assert "97% CPU, 64 MiB" in html
    assert "⚠ memory peaked at 64 MiB" in html
    assert f'data-ws-url="/ws/runs/{finished_run.public_id}/log/"' in html
    assert "↻ Run again" in html and "⊘ Cancel" not in html  # finished


def test_run_page_links_retries_both_ways(admin_client, finished_run):
    retry = PipelineRun.objects.create(
        pipeline=finished_run.pipeline, retry_of=finished_run, attempt=2, trigger="retry"
    )
    html = admin_client.get(finished_run.get_absolute_url()).content.decode()
    assert f'retried as <a href="/runs/{retry.public_id}/">#{retry.short_id}</a>' in html
    html = admin_client.get(retry.get_absolute_url()).content.decode()
    assert f'retries <a href="/runs/{finished_run.public_id}/">#{finished_run.short_id}</a>' in html
    assert "#1 in the queue" in html


def test_htmx_gets_just_the_summary_fragment(admin_client, finished_run):
    response = admin_client.get(finished_run.get_absolute_url(), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="run-summary"')
    assert "<html" not in html and "live-log" not in html


def test_unknown_run_is_404(admin_client):
    assert admin_client.get("/runs/00000000-0000-4000-8000-000000000000/").status_code == 404
    assert admin_client.get("/runs/not-a-uuid/").status_code == 404


def test_log_download_is_the_whole_plain_log(admin_client, finished_run):
    response = admin_client.get(reverse("runs_app:log", args=[finished_run.public_id]))
    assert (
        response["Content-Disposition"] == f'attachment; filename="etl-{finished_run.short_id}.log"'
    )
    text = b"".join(response.streaming_content).decode()
    assert text == "\x1b[32mgreen\x1b[0m hello\nboom\n[fast-flow] finished: failed\n"
    with_times = admin_client.get(
        reverse("runs_app:log", args=[finished_run.public_id]) + "?timestamps=1"
    )
    assert (
        b"".join(with_times.streaming_content)
        .decode()
        .startswith("2026-01-01T00:00:00.000000001Z \x1b[32mgreen")
    )


def test_log_download_of_a_run_without_a_log_is_empty(admin_client, finished_run):
    LogChunk.objects.filter(run=finished_run).delete()
    response = admin_client.get(reverse("runs_app:log", args=[finished_run.public_id]))
    assert b"".join(response.streaming_content) == b""


def test_cancel_a_queued_run_from_its_page(operator_client, finished_run):
    queued = PipelineRun.objects.create(pipeline=finished_run.pipeline)
    html = operator_client.get(queued.get_absolute_url()).content.decode()
    assert "⊘ Cancel" in html
    response = operator_client.post(
        reverse("runs_app:cancel", args=[queued.public_id]), follow=True
    )
    queued.refresh_from_db()
    assert queued.status == Status.CANCELLED
    assert "Cancelled: the run had not started yet." in response.content.decode()


def test_cancel_with_htmx_returns_the_new_summary(operator_client, finished_run):
    queued = PipelineRun.objects.create(pipeline=finished_run.pipeline)
    response = operator_client.post(
        reverse("runs_app:cancel", args=[queued.public_id]), HTTP_HX_REQUEST="true"
    )
    assert response.content.decode().lstrip().startswith('<section id="run-summary"')
    assert "⊘ cancelled" in response.content.decode()


def test_viewers_cannot_cancel_or_rerun(viewer_client, finished_run):
    queued = PipelineRun.objects.create(pipeline=finished_run.pipeline)
    assert "⊘ Cancel" not in viewer_client.get(queued.get_absolute_url()).content.decode()
    assert (
        viewer_client.post(reverse("runs_app:cancel", args=[queued.public_id])).status_code == 403
    )
    assert viewer_client.post(reverse("runs_app:rerun", args=[queued.public_id])).status_code == 403
    queued.refresh_from_db()
    assert queued.status == Status.QUEUED


def test_rerun_queues_the_same_parameters_and_shows_the_new_run(operator_client, finished_run):
    response = operator_client.post(reverse("runs_app:rerun", args=[finished_run.public_id]))
    new = PipelineRun.objects.exclude(pk=finished_run.pk).get()
    assert new.parameters == {"DAY": "monday"}
    assert new.trigger == PipelineRun.Trigger.MANUAL
    assert response.url == new.get_absolute_url()


def test_cancel_and_rerun_need_post(operator_client, finished_run):
    assert (
        operator_client.get(reverse("runs_app:cancel", args=[finished_run.public_id])).status_code
        == 405
    )
    assert (
        operator_client.get(reverse("runs_app:rerun", args=[finished_run.public_id])).status_code
        == 405
    )


def make_runs(pipeline, count, **fields):
    return PipelineRun.objects.bulk_create(
        PipelineRun(pipeline=pipeline, **fields) for _ in range(count)
    )


def test_a_long_list_is_counted_only_so_far(admin_client, finished_run, monkeypatch):
    monkeypatch.setattr("fastflow_site.paging.COUNT_UP_TO", 60)
    make_runs(finished_run.pipeline, 120, status=Status.SUCCEEDED)
    page = admin_client.get(reverse("runs_app:list")).content.decode()
    assert "page 1 (more than 60 runs)" in page and "older →" in page
    second = admin_client.get(reverse("runs_app:list") + "?page=2").content.decode()
    assert second.count('<tr id="run-') == 50 and "← newer" in second and "older →" in second
    last = admin_client.get(reverse("runs_app:list") + "?page=3").content.decode()
    assert last.count('<tr id="run-') == 21 and "older →" not in last
    past = admin_client.get(reverse("runs_app:list") + "?page=99").content.decode()
    assert past.count('<tr id="run-') > 0
    few = admin_client.get(reverse("runs_app:list") + "?status=failed").content.decode()
    assert "page 1 of 1 (1 runs)" in few


def test_runs_list_filters_sorts_and_paginates(admin_client, finished_run):
    pipeline = finished_run.pipeline
    make_runs(pipeline, 60, status=Status.SUCCEEDED, queued_at=timezone.now() - timedelta(days=3))
    make_runs(pipeline, 2, status=Status.QUEUED, trigger="webhook")
    page = admin_client.get(reverse("runs_app:list")).content.decode()
    assert "page 1 of 2 (63 runs)" in page
    assert page.count('<tr id="run-') == 50
    assert "older →" in page
    only_failed = admin_client.get(reverse("runs_app:list") + "?status=failed").content.decode()
    assert only_failed.count('<tr id="run-') == 1 and f"run-{finished_run.public_id}" in only_failed
    webhook = admin_client.get(reverse("runs_app:list") + "?trigger=webhook").content.decode()
    assert webhook.count('<tr id="run-') == 2
    recent = admin_client.get(reverse("runs_app:list") + "?window=24h").content.decode()
    assert recent.count('<tr id="run-') == 3
    oldest = admin_client.get(reverse("runs_app:list") + "?sort=queued_at").content.decode()
    assert "days" in oldest.split('<tr id="run-')[1]  # the first row is from 3 days ago
    assert "days" not in page.split('<tr id="run-')[1]  # newest first by default
    second = admin_client.get(reverse("runs_app:list") + "?page=2").content.decode()
    assert second.count('<tr id="run-') == 13


def test_runs_list_by_pipeline_and_time_range(admin_client, finished_run):
    other = Pipeline.objects.create(
        name="other", folder_path="/x", discovered_at=timezone.now(), last_seen_at=timezone.now()
    )
    make_runs(other, 3)
    html = admin_client.get(reverse("runs_app:list") + "?pipeline=other").content.decode()
    assert html.count('<tr id="run-') == 3
    since = (timezone.now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert (
        "No runs match."
        in admin_client.get(reverse("runs_app:list") + f"?since={since}").content.decode()
    )


def test_runs_list_ignores_bad_filter_values(admin_client, finished_run):
    response = admin_client.get(
        reverse("runs_app:list") + "?status=exploded&since=yesterday&page=x"
    )
    assert response.status_code == 200
    assert f"run-{finished_run.public_id}" in response.content.decode()


def test_runs_list_fragment_for_htmx_and_empty_state(admin_client, db):
    response = admin_client.get(reverse("runs_app:list"), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="runs-table">')
    assert "No runs match." in html
