"""The dashboard: what runs and waits now, the last day, the last year, the last hours per
pipeline, what needs attention, the storage in use, every pipeline at a glance."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.utils import timezone

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline, Schedule, Sync
from runs_app import attention, dashboard_charts
from runs_app.models import (
    Chore,
    DependencyCheck,
    PipelineRun,
    RunDay,
    WorkerNode,
    WorkerProcess,
)
from runs_app.models.notification import Channel, Delivery, Notification
from runs_app.worker import storage

pytestmark = pytest.mark.django_db
Status = PipelineRun.Status


def test_empty_dashboard(viewer_client, pipelines_dir):
    html = viewer_client.get("/").content.decode()
    assert "No pipelines yet" in html
    assert "Nothing runs now." in html and "Nothing waits." in html
    assert "No failures." in html
    assert "Not measured yet" in html


def test_dashboard_counts_failures_and_pipelines(viewer_client, make_pipeline):
    make_pipeline("nightly", config={"schedule_cron": "0 3 * * *"})
    make_pipeline("poller", config={"schedule_interval_seconds": 300})
    make_pipeline("idle")
    discover()
    nightly = Pipeline.objects.get(name="nightly")
    now = timezone.now()
    for status in [Status.SUCCEEDED] * 3 + [Status.FAILED, Status.TIMED_OUT]:
        PipelineRun.objects.create(
            pipeline=nightly,
            status=status,
            started_at=now - timedelta(seconds=30),
            finished_at=now - timedelta(seconds=10),
            failure_reason="exit_code" if status == Status.FAILED else "",
            error_message="exited with code 3" if status == Status.FAILED else "",
        )
    WorkerProcess.report("box:7:t", engine_ok=True, node="box-7")
    PipelineRun.objects.create(
        pipeline=nightly, status=Status.RUNNING, started_at=now, worker_id="box:7:t"
    )
    PipelineRun.objects.create(pipeline=nightly, status=Status.QUEUED)
    PipelineRun.objects.create(
        pipeline=nightly, status=Status.FAILED, queued_at=now - timedelta(days=3)
    )
    html = viewer_client.get("/").content.decode()
    assert '<span class="stat-number" id="count-running">1</span> ▶ running now' in html
    assert '<span class="stat-number" id="count-waiting">1</span> … waiting' in html
    assert '<span class="stat-number ok" id="count-succeeded">3</span>' in html
    assert '<span class="stat-number bad" id="count-failed">2</span>' in html
    running = html.split('id="now-running"')[1].split("</section>")[0]
    assert "nightly" in running and "on box-7" in running  # the worker node it is on
    waiting = html.split('id="now-waiting"')[1].split("</section>")[0]
    assert "nightly" in waiting
    failures = html.split('id="recent-failures"')[1].split("</section>")[0]
    assert "Non-zero exit code: exited with code 3" in failures  # the reason, in words
    assert 'id="overview-nightly"' in html and 'id="overview-idle"' in html
    nightly_row = html.split('id="overview-nightly"')[1].split("</tr>")[0]
    assert nightly_row.count("h5v") == 8  # a bar per run, in a path per outcome
    label = 'aria-label="its last 8 runs: 1 queued, 1 running, 3 succeeded, 2 failed, 1 timed out"'
    assert label in nightly_row
    assert "<td>50%</td>" in nightly_row  # 3 of its 6 ended runs succeeded
    next_due = Schedule.objects.get(pipeline=nightly).next_fire_at
    assert f'<time datetime="{next_due.isoformat()}' in nightly_row  # the scheduler's 03:00
    poller_row = html.split('id="overview-poller"')[1].split("</tr>")[0]
    assert "<time datetime=" in poller_row
    idle_row = html.split('id="overview-idle"')[1].split("</tr>")[0]
    assert "<time datetime=" not in idle_row


def test_a_waiting_run_says_why(viewer_client, make_pipeline):
    make_pipeline("gpu", config={"placement": {"gpu": "yes"}})
    discover()
    PipelineRun.objects.create(pipeline=Pipeline.objects.get(name="gpu"), status=Status.QUEUED)
    html = viewer_client.get("/").content.decode()
    assert "no worker is up" in html.split('id="now-waiting"')[1]
    WorkerNode.report("cpu-box", labels={}, capacity=2, engine="docker", pool={})
    html = viewer_client.get("/").content.decode()
    waiting = html.split('id="now-waiting"')[1].split("</section>")[0]
    assert "gpu=yes" in waiting  # no live node has the label it asks for


def test_the_calendar_counts_runs_as_they_end_and_keeps_them(viewer_client, make_pipeline):
    make_pipeline("job")
    discover()
    job = Pipeline.objects.get(name="job")
    cancelled = PipelineRun.objects.create(pipeline=job, status=Status.QUEUED)
    assert cancelled.request_cancel() == "cancelled"
    ran = PipelineRun.objects.create(
        pipeline=job, status=Status.RUNNING, worker_id="w:1:x", started_at=timezone.now()
    )
    assert ran.finish(Status.FAILED, failure_reason="exit_code", error_message="boom")
    today = timezone.localdate()
    assert dict(RunDay.objects.filter(day=today).values_list("status", "count")) == {
        "cancelled": 1,
        "failed": 1,
    }
    RunDay.objects.create(day=today - timedelta(days=40), status="succeeded", count=12)
    PipelineRun.objects.all().delete()  # retention removes runs; the calendar keeps them
    html = viewer_client.get("/").content.decode()
    calendar = html.split('id="calendar"')[1].split("</section>")[0]
    assert "Runs by day over the last year: 14 ended, 1 failed" in calendar
    assert f"{today:%a %-d %b %Y}: 2 runs — 0 succeeded, 1 failed, 1 cancelled" in calendar
    old = today - timedelta(days=40)
    assert f"{old:%a %-d %b %Y}: 12 runs — 12 succeeded, 0 failed" in calendar
    days = dashboard_charts.calendar_days()
    assert len(days) >= 365 and days[0].day.weekday() == 0 and days[-1].day == today


def test_the_timeline_shows_the_runs_that_overlap_the_last_hours(make_pipeline):
    make_pipeline("etl")
    make_pipeline("report")
    discover()
    etl, report = Pipeline.objects.order_by("name")
    now = timezone.now()
    long_one = PipelineRun.objects.create(  # queued two days ago, still going
        pipeline=etl,
        status=Status.RUNNING,
        queued_at=now - timedelta(days=2),
        started_at=now - timedelta(days=2),
    )
    recent = PipelineRun.objects.create(
        pipeline=report,
        status=Status.SUCCEEDED,
        queued_at=now - timedelta(hours=1, seconds=5),
        started_at=now - timedelta(hours=1),
        finished_at=now - timedelta(minutes=50),
    )
    PipelineRun.objects.create(  # ended before the window: not shown
        pipeline=report,
        status=Status.SUCCEEDED,
        queued_at=now - timedelta(hours=9),
        started_at=now - timedelta(hours=9),
        finished_at=now - timedelta(hours=8),
    )
    start, end, lanes = dashboard_charts.timeline_bars()
    assert list(lanes) == ["etl", "report"]
    assert [bar.public_id for bar in lanes["etl"]] == [str(long_one.public_id)]
    assert [bar.public_id for bar in lanes["report"]] == [str(recent.public_id)]
    svg = str(dashboard_charts.timeline_svg(start, end, lanes))
    assert f"report #{recent.short_id}: succeeded, 10 min 0 s" in svg
    assert f"etl #{long_one.short_id}: running, 2 d 0 h" in svg
    assert f'href="/runs/{long_one.public_id}/"' in svg
    assert "2 runs of 2 pipelines" in svg


def test_needs_attention_says_each_problem_in_plain_words(viewer_client, make_pipeline):
    make_pipeline("broken", config='{"timeout_seconds": "soon"')
    make_pipeline("heavy", requirements="pandas\n")
    make_pipeline("old", requirements="requests\n")
    discover()
    Pipeline.objects.filter(name="heavy").update(
        warm_status=Pipeline.WarmStatus.FAILED, warm_error="No solution found for pandas==99\nmore"
    )
    DependencyCheck.objects.create(
        pipeline=Pipeline.objects.get(name="old"),
        status=DependencyCheck.Status.UNREACHABLE,
        error="the vulnerability service could not be reached from the worker",
    )
    WorkerProcess.report("box:1:t", engine_ok=False, engine_error="connection refused", node="box")
    WorkerNode.report("spare", labels={}, capacity=1, engine="docker", pool={})
    WorkerNode.objects.get(name="spare").drain(by="ada")
    channel = Channel(name="ops")
    channel.set_url("json://127.0.0.1:9/")
    channel.save()
    notification = Notification.objects.create(event="failed", title="t", body="b")
    Delivery.objects.create(
        notification=notification,
        channel=channel,
        channel_name="ops",
        status=Delivery.Status.FAILED,
        error="Connection refused\ntrace",
    )
    Sync.objects.create(trigger=Sync.Trigger.CLI, status=Sync.Status.FAILED, error="auth failed")
    html = viewer_client.get("/").content.decode()
    box = html.split('id="needs-attention"')[1].split("</section>")[0]
    for words in (
        "broken: its pipeline.json has a problem",
        "heavy: its packages failed to install — No solution found for pandas==99",
        "Not checked for vulnerabilities (old): the vulnerability service could not be reached",
        "Worker box cannot reach its container engine: connection refused",
        "Node spare is drained by ada: it takes no new runs",
        "Notifications through ops failed 1 time in the last day: Connection refused",
        "The repository sync failed: auth failed",
    ):
        assert words in box, words
    assert "trace" not in box and "more" not in box  # first lines only
    assert "No worker is running" not in box  # one worker is alive (if unwell)
    serious = [c.words for c in attention.concerns() if c.serious]
    assert serious[0].startswith("broken:")  # what fails comes before what to look at


def test_storage_is_measured_by_the_workers_and_shown(viewer_client, settings, tmp_path):
    cache = tmp_path / "cache"
    (cache / "bucket").mkdir(parents=True)
    (cache / "bucket" / "wheel.bin").write_bytes(b"x" * 100_000)
    os.link(cache / "bucket" / "wheel.bin", cache / "linked.bin")  # one file, two names
    settings.UV_CACHE_DIR = cache
    settings.LOGS_DIR = tmp_path / "logs"
    settings.WORKER_NAME = "node-a"
    settings.FASTFLOW_EXECUTOR = "docker"
    storage.measure_instance()
    storage.measure_node()
    report = Chore.objects.get(name="storage:node-a").last_report
    assert 100_000 <= report["uv_cache"] < 200_000  # the hard link counted once
    assert Chore.objects.get(name="storage").last_report["database"] > 0
    html = viewer_client.get("/").content.decode()
    box = html.split('id="storage"')[1].split("</section>")[0]
    assert "Database" in box and "Package cache on node-a" in box
    assert not storage.Chore.claim("storage", every=storage.EVERY)  # hourly, not each look


def test_the_live_parts_come_back_by_id(viewer_client, client, make_pipeline):
    make_pipeline("job")
    discover()
    PipelineRun.objects.create(pipeline=Pipeline.objects.get(name="job"), status=Status.QUEUED)
    html = viewer_client.get("/dashboard/live/").content.decode()
    for part in ("stats", "now-running", "now-waiting", "recent-failures", "timeline", "last-day"):
        assert f'id="{part}" aria-labelledby' in html or f'id="{part}" hx-swap-oob' in html, part
    assert html.count('hx-swap-oob="true"') == 6
    assert '<span class="stat-number" id="count-waiting">1</span>' in html
    client.logout()
    assert client.get("/dashboard/live/").status_code == 302  # a login first


def test_dashboard_query_count_stays_flat(
    viewer_client, make_pipeline, django_assert_max_num_queries
):
    for name in ("a", "b", "c"):
        make_pipeline(name)
    discover()
    for pipeline in Pipeline.objects.all():
        for status in (Status.QUEUED, Status.RUNNING, Status.FAILED):
            PipelineRun.objects.create(pipeline=pipeline, status=status)
    with django_assert_max_num_queries(30):
        viewer_client.get("/")
