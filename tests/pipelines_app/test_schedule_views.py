"""The schedules of a pipeline on its page (next five fire times, origin), and the form
that adds, edits and deletes UI schedules — with reasons for what it refuses."""

from __future__ import annotations

import pytest
from django.urls import reverse

from pipelines_app.discovery import discover
from pipelines_app.models import Schedule

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _pipelines(make_pipeline):
    make_pipeline("cronned", config={"schedule_cron": "0 * * * *"})
    make_pipeline("plain")
    discover()


def test_the_page_lists_schedules_with_their_next_five_fire_times(admin_client):
    html = admin_client.get(reverse("pipelines_app:detail", args=["cronned"])).content.decode()
    row = html.split('id="schedule-default"')[1].split("</tr>")[0]
    assert "cron 0 * * * * (UTC)" in row
    assert row.count("<time") == 5
    assert "pipeline.json (read-only)" in row and "Edit" not in row


def test_a_pipeline_without_schedules_says_so(admin_client):
    html = admin_client.get(reverse("pipelines_app:detail", args=["plain"])).content.decode()
    assert "No schedules" in html


def test_add_edit_and_delete_a_ui_schedule(admin_client):
    add_url = reverse("pipelines_app:schedule_add", args=["plain"])
    assert admin_client.get(add_url).status_code == 200
    response = admin_client.post(
        add_url, {"config_id": "hourly", "cron": "0 * * * 7", "enabled": "on"}
    )
    assert response.status_code == 302, response.content.decode()
    schedule = Schedule.objects.get(config_id="hourly")
    assert schedule.origin == Schedule.Origin.UI and schedule.next_fire_at.weekday() == 6
    edit_url = reverse("pipelines_app:schedule_edit", args=["plain", "hourly"])
    admin_client.post(edit_url, {"config_id": "hourly", "interval_seconds": 90, "enabled": "on"})
    schedule.refresh_from_db()
    assert schedule.interval_seconds == 90 and schedule.cron == ""
    admin_client.post(reverse("pipelines_app:schedule_delete", args=["plain", "hourly"]))
    assert not Schedule.objects.filter(config_id="hourly").exists()


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"cron": "0 * * *"}, "has 4 fields, cron needs 5"),
        ({"cron": "99 * * * *"}, "is not a valid cron expression"),
        ({"interval_seconds": 0}, "1 or more"),
        ({"interval_seconds": -5}, "1 or more"),
        ({}, "exactly one of"),
        ({"cron": "0 * * * *", "interval_seconds": 60}, "exactly one of"),
        ({"cron": "0 * * * *", "timezone": "Mars/Olympus"}, "is not a time zone name"),
        ({"config_id": "no spaces please", "cron": "0 * * * *"}, "letters, digits"),
        ({"config_id": "default", "cron": "0 * * * *"}, "already exists"),
    ],
)
def test_the_form_says_why_it_refuses(admin_client, data, why):
    target = "cronned" if data.get("config_id") == "default" else "plain"
    response = admin_client.post(
        reverse("pipelines_app:schedule_add", args=[target]), {"config_id": "s1", **data}
    )
    assert response.status_code == 200
    assert why in response.content.decode()
    assert not Schedule.objects.filter(origin=Schedule.Origin.UI).exists()


def test_schedules_from_pipeline_json_cannot_be_edited_here(admin_client):
    url = reverse("pipelines_app:schedule_edit", args=["cronned", "default"])
    assert admin_client.get(url).status_code == 403
    delete = reverse("pipelines_app:schedule_delete", args=["cronned", "default"])
    assert admin_client.post(delete).status_code == 403
    assert Schedule.objects.filter(config_id="default").exists()


def test_unknown_pipelines_and_schedules_are_404(admin_client):
    assert admin_client.get(reverse("pipelines_app:schedule_add", args=["nope"])).status_code == 404
    edit = reverse("pipelines_app:schedule_edit", args=["plain", "nope"])
    assert admin_client.get(edit).status_code == 404


def test_viewers_may_not_change_schedules(viewer_client):
    url = reverse("pipelines_app:schedule_add", args=["plain"])
    assert viewer_client.post(url, {"config_id": "x", "cron": "0 * * * *"}).status_code == 403


def test_the_admin_shows_file_schedules_read_only(admin_client):
    schedule = Schedule.objects.get(config_id="default")
    page = admin_client.get(reverse("admin:pipelines_app_schedule_change", args=[schedule.pk]))
    assert page.status_code == 200
    assert b'name="_save"' not in page.content  # read-only: git is law
    assert admin_client.get(reverse("admin:pipelines_app_schedule_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:pipelines_app_schedule_add")).status_code == 200
