"""The dashboard: what runs now, what failed, every pipeline at a glance."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline, Schedule
from runs_app.models import PipelineRun

pytestmark = pytest.mark.django_db
Status = PipelineRun.Status


def test_empty_dashboard(viewer_client, pipelines_dir):
    html = viewer_client.get("/").content.decode()
    assert "No failures. ✔" in html
    assert "No pipelines yet." in html


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
            error_message="exited with code 3" if status == Status.FAILED else "",
        )
    PipelineRun.objects.create(pipeline=nightly, status=Status.RUNNING, started_at=now)
    PipelineRun.objects.create(pipeline=nightly, status=Status.QUEUED)
    PipelineRun.objects.create(
        pipeline=nightly, status=Status.FAILED, queued_at=now - timedelta(days=3)
    )
    html = viewer_client.get("/").content.decode()
    assert '<span class="stat-number">1</span> ▶ running now' in html
    assert '<span class="stat-number">1</span> … queued' in html
    assert '<span class="stat-number">3</span> ✔ succeeded, 24 h' in html
    assert '<span class="stat-number bad">2</span> ✖ failed or timed out, 24 h' in html
    assert "exited with code 3" in html
    assert 'id="overview-nightly"' in html and 'id="overview-idle"' in html
    assert html.count('<rect class="bar-') == 8
    nightly_row = html.split('id="overview-nightly"')[1].split("</tr>")[0]
    next_due = Schedule.objects.get(pipeline=nightly).next_fire_at
    assert f'<time datetime="{next_due.isoformat()}' in nightly_row  # the scheduler's 03:00
    poller_row = html.split('id="overview-poller"')[1].split("</tr>")[0]
    assert "<time datetime=" in poller_row
    idle_row = html.split('id="overview-idle"')[1].split("</tr>")[0]
    assert "<time datetime=" not in idle_row


def test_dashboard_query_count_stays_flat(
    viewer_client, make_pipeline, django_assert_max_num_queries
):
    for name in ("a", "b", "c"):
        make_pipeline(name)
    discover()
    with django_assert_max_num_queries(15):
        viewer_client.get("/")
