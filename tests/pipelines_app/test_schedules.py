"""Schedules: kept in step with pipeline.json, fired exactly once per due time (with a
controllable clock), caught up once after downtime, paused with their pipeline."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline, Schedule
from runs_app.models import PipelineRun, ScheduleSkip
from runs_app.worker.scheduler import fire_due

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)  # a Saturday


@pytest.fixture(autouse=True)
def _nothing_executes(settings):
    settings.MAX_CONCURRENT_RUNS = 0  # runs stay queued: these tests look at the firing


def schedule_of(name: str, config_id: str = "default") -> Schedule:
    return Schedule.objects.select_related("pipeline").get(pipeline__name=name, config_id=config_id)


def interval_schedule(make_pipeline, seconds: int = 60, **config) -> Schedule:
    make_pipeline("every", config={"schedule_interval_seconds": seconds, **config})
    discover()
    schedule = schedule_of("every")
    Schedule.objects.filter(pk=schedule.pk).update(anchor_at=T0, next_fire_at=T0)
    schedule.refresh_from_db()
    return schedule


# --- in step with pipeline.json -------------------------------------------------------------


def test_pipeline_json_schedules_become_rows_with_their_ids(make_pipeline):
    make_pipeline(
        "multi",
        config={
            "schedules": [
                {"id": "nightly", "schedule_cron": "0 2 * * *", "timeout": 60},
                {"id": "often", "schedule_interval_seconds": 300, "enabled": False},
                {"id": "hook_only", "webhook_key": "k" * 20},
            ]
        },
    )
    make_pipeline("once", config={"run_once_at": "2099-01-01T10:00:00+00:00"})
    discover()
    rows = {s.config_id: s for s in Schedule.objects.filter(pipeline__name="multi")}
    assert set(rows) == {"nightly", "often", "hook_only"}
    assert all(s.origin == Schedule.Origin.FILE for s in rows.values())
    assert rows["nightly"].cron == "0 2 * * *" and rows["nightly"].next_fire_at is not None
    assert rows["nightly"].settings.timeout_seconds == 60
    assert rows["often"].next_fire_at is None  # disabled
    assert rows["hook_only"].next_fire_at is None and not rows["hook_only"].fires_by_time
    once = schedule_of("once", "run_once")
    assert once.next_fire_at == datetime(2099, 1, 1, 10, tzinfo=UTC)


def test_rediscovery_keeps_due_times_and_follows_changes(make_pipeline, pipelines_dir):
    folder = make_pipeline("p", config={"schedule_cron": "*/5 * * * *"})
    discover()
    planned = schedule_of("p").next_fire_at
    Schedule.objects.filter(config_id="default").update(next_fire_at=T0)
    discover()  # nothing changed: the due time stays (a restart neither loses nor repeats one)
    assert schedule_of("p").next_fire_at == T0
    (folder / "pipeline.json").write_text('{"schedule_cron": "0 3 * * *"}')
    discover()
    assert schedule_of("p").cron == "0 3 * * *"
    assert schedule_of("p").next_fire_at.astimezone(UTC).hour == 3
    assert planned is not None
    (folder / "pipeline.json").write_text('{"schedule_cron": "not cron"}')
    discover()  # an invalid file keeps the schedule as it was
    assert schedule_of("p").cron == "0 3 * * *"
    (folder / "pipeline.json").write_text("{}")
    discover()
    assert not Schedule.objects.exists()


def test_the_files_schedule_replaces_a_ui_schedule_of_the_same_id(make_pipeline, pipelines_dir):
    folder = make_pipeline("p")
    discover()
    Schedule.objects.create(
        pipeline=Pipeline.objects.get(name="p"), config_id="default", interval_seconds=10
    )
    (folder / "pipeline.json").write_text('{"schedule_interval_seconds": 30}')
    discover()
    (schedule,) = Schedule.objects.all()
    assert schedule.origin == Schedule.Origin.FILE and schedule.interval_seconds == 30


# --- due times ------------------------------------------------------------------------------


@pytest.mark.parametrize("weekday", ["0", "7"])
def test_cron_day_of_week_0_and_7_are_sunday(make_pipeline, weekday):
    make_pipeline("sunday", config={"schedule_cron": f"30 9 * * {weekday}"})
    make_pipeline("monday", config={"schedule_cron": "30 9 * * 1"})
    discover()
    (sunday,) = schedule_of("sunday").fire_times(T0)
    (monday,) = schedule_of("monday").fire_times(T0)
    assert sunday == datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
    assert monday == datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def test_cron_uses_the_schedules_time_zone(make_pipeline):
    make_pipeline(
        "tokyo",
        config={
            "schedules": [{"id": "jp", "schedule_cron": "0 9 * * *", "timezone": "Asia/Tokyo"}]
        },
    )
    discover()
    (moment,) = schedule_of("tokyo", "jp").fire_times(T0)
    assert moment.astimezone(UTC) == datetime(2026, 11, 22, 0, 0, tzinfo=UTC)  # 09:00 JST


def test_the_start_end_window_bounds_the_due_times(make_pipeline):
    make_pipeline(
        "window",
        config={
            "schedule_interval_seconds": 3600,
            "schedule_start": "2026-11-21T14:00:00+00:00",
            "schedule_end": "2026-11-21T16:00:00+00:00",
        },
    )
    discover()
    times = schedule_of("window").fire_times(T0, count=5)
    assert [t.hour for t in times] == [14, 15, 16]


# --- firing ---------------------------------------------------------------------------------


def test_a_due_schedule_queues_one_run_for_its_due_time(make_pipeline):
    schedule = interval_schedule(make_pipeline)
    assert fire_due(T0 - timedelta(seconds=1)) == []
    (run,) = fire_due(T0 + timedelta(seconds=0.5))
    assert run.trigger == PipelineRun.Trigger.SCHEDULE
    assert run.scheduled_for == T0 and run.schedule == schedule and run.config_id == "default"
    schedule.refresh_from_db()
    assert schedule.next_fire_at == T0 + timedelta(seconds=60)
    assert schedule.last_fired_at == T0
    assert fire_due(T0 + timedelta(seconds=1)) == []  # fired once, not again


def test_after_downtime_a_missed_schedule_runs_once_and_knows_how_late(make_pipeline):
    schedule = interval_schedule(make_pipeline)
    back_at = T0 + timedelta(minutes=10, seconds=5)  # ten due times were missed
    (run,) = fire_due(back_at)
    assert run.scheduled_for == T0
    assert run.lateness == run.queued_at - T0
    schedule.refresh_from_db()
    assert schedule.next_fire_at == T0 + timedelta(minutes=11)  # the grid, from now on
    assert fire_due(back_at) == []


@pytest.mark.django_db(transaction=True)
def test_two_schedulers_at_once_fire_a_due_time_exactly_once(make_pipeline):
    interval_schedule(make_pipeline)
    fired: list[int] = []
    start = threading.Barrier(4)

    def scheduler() -> None:
        start.wait()
        try:
            fired.extend(run.pk for run in fire_due(T0 + timedelta(seconds=1)))
        finally:
            connection.close()

    threads = [threading.Thread(target=scheduler) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(fired) == 1
    assert PipelineRun.objects.count() == 1


def test_a_paused_pipeline_skips_its_due_times(make_pipeline):
    schedule = interval_schedule(make_pipeline, enabled=False)
    assert fire_due(T0 + timedelta(seconds=1)) == []
    schedule.refresh_from_db()
    assert schedule.next_fire_at == T0 + timedelta(seconds=60)  # moved on, nothing queued
    assert not PipelineRun.objects.exists()
    (skip,) = schedule.skips.all()
    assert (skip.due_at, skip.reason) == (T0, ScheduleSkip.Reason.PAUSED)


def test_a_due_time_is_skipped_while_the_previous_run_still_waits_in_the_queue(
    make_pipeline, client, admin_user
):
    schedule = interval_schedule(make_pipeline)
    (first,) = fire_due(T0)  # MAX_CONCURRENT_RUNS is 0 here: it stays queued
    assert fire_due(T0 + timedelta(seconds=60)) == []
    assert fire_due(T0 + timedelta(seconds=120)) == []
    assert list(PipelineRun.objects.all()) == [first]  # no backlog of identical runs
    skips = list(schedule.skips.order_by("due_at"))
    assert [(s.due_at, s.reason, s.waiting_run) for s in skips] == [
        (T0 + timedelta(seconds=60), ScheduleSkip.Reason.STILL_QUEUED, first),
        (T0 + timedelta(seconds=120), ScheduleSkip.Reason.STILL_QUEUED, first),
    ]
    # Visible where people look: the pipeline page lists the skipped due times.
    client.force_login(admin_user)
    page = client.get(schedule.pipeline.get_absolute_url()).content.decode()
    assert "skipped" in page and "the previous run was still queued" in page
    # Once the run has left the queue, the schedule fires again.
    PipelineRun.objects.filter(pk=first.pk).update(status=PipelineRun.Status.CLAIMED)
    assert len(fire_due(T0 + timedelta(seconds=180))) == 1


def test_a_run_due_while_the_previous_is_going_waits_in_the_queue(make_pipeline, settings):
    interval_schedule(make_pipeline, max_instances=1)
    (first,) = fire_due(T0)
    PipelineRun.objects.filter(pk=first.pk).update(status=PipelineRun.Status.RUNNING)
    settings.MAX_CONCURRENT_RUNS = 5
    (second,) = fire_due(T0 + timedelta(seconds=60))
    second.refresh_from_db()
    assert second.status == PipelineRun.Status.QUEUED  # queued, not dropped


def test_a_run_once_schedule_fires_once(make_pipeline):
    make_pipeline("once", config={"run_once_at": "2099-01-01T10:00:00+00:00"})
    discover()
    moment = datetime(2099, 1, 1, 10, tzinfo=UTC)
    (run,) = fire_due(moment + timedelta(seconds=1))
    assert run.scheduled_for == moment
    assert schedule_of("once", "run_once").next_fire_at is None
    assert fire_due(moment + timedelta(days=1)) == []


def test_a_schedules_overrides_apply_to_its_runs(make_pipeline):
    make_pipeline(
        "ovr",
        config={
            "timeout": 600,
            "schedules": [{"id": "quick", "schedule_interval_seconds": 60, "timeout": 30}],
        },
    )
    discover()
    Schedule.objects.update(next_fire_at=T0)
    (run,) = fire_due(T0)
    assert run.run_settings.timeout_seconds == 30
