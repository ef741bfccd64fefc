"""Notifications with real parts: a real SMTP server on loopback receives the e-mail, a
local HTTP server the JSON-webhook and Slack-format (Mattermost) posts; grouping under a
flood of failures and retries with backoff against a controllable clock."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from django.urls import reverse
from django.utils import timezone

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline, Sync
from pipelines_app.signals import sync_finished
from runs_app import notify
from runs_app.models import Channel, Delivery, Incident, Notification, PipelineRun, Rule
from runs_app.worker import daemons, delivery
from tests.runs_app.conftest import Hooks
from tests.runs_app.test_daemons import T0, end

pytestmark = pytest.mark.django_db
Status = PipelineRun.Status


class Inbox:
    """A real SMTP server on a loopback port; what it received."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], str]] = []
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.content.decode()))
        return "250 OK"


@pytest.fixture
def inbox():
    box = Inbox()
    box.controller.start()
    yield box
    box.controller.stop()


@pytest.fixture
def etl(make_pipeline, settings, tmp_path):
    settings.LOGS_DIR = tmp_path / "logs"
    settings.MAX_CONCURRENT_RUNS = 0
    settings.BASE_URL = "https://fastflow.example.com"
    make_pipeline("etl", config={"tags": ["nightly"]})
    make_pipeline("other")
    discover()
    return Pipeline.objects.get(name="etl")


def channel(name: str, url: str, events=("failed", "timed_out", "recovered"), **rule) -> Channel:
    made = Channel(name=name)
    made.set_url(url)
    made.save()
    made_rule = Rule.objects.create(name=f"to {name}", events=list(events), **rule)
    made_rule.channels.add(made)
    return made


def ended(pipeline: Pipeline, status: str, *, error: str = "", code: int | None = 1) -> PipelineRun:
    """A run ended through the state machine, as a worker ends it."""
    now = timezone.now()
    run = PipelineRun.objects.create(
        pipeline=pipeline, status=Status.RUNNING, worker_id="host:1:t",
        started_at=now - timedelta(seconds=75),
    )  # fmt: skip
    assert run.finish(status, exit_code=code, error_message=error,
                      failure_reason="exit_code" if status == Status.FAILED else "")  # fmt: skip
    return run


def deliver_all() -> None:
    while delivery.deliver_due():
        pass


def test_a_failed_run_is_mailed_through_a_real_smtp_server(etl, inbox):
    channel("ops-mail", f"mailto://127.0.0.1:{inbox.port}?from=ff@example.com&to=ops@example.com")
    run = ended(etl, Status.FAILED, error="boom: the database said no")
    deliver_all()
    (sender, recipients, content) = inbox.messages[0]
    assert sender == "ff@example.com" and recipients == ["ops@example.com"]
    assert "Subject: [Fast-Flow] etl failed" in content
    assert "boom: the database said no" in content and "exit code 1" in content
    assert f"https://fastflow.example.com/runs/{run.public_id}/" in content
    assert "Duration 1 min" in content or "Duration 75 s" in content
    (sent,) = Delivery.objects.all()
    assert sent.status == Delivery.Status.SENT and sent.attempts == 1


def test_json_webhooks_and_slack_format_posts_reach_a_local_server(etl, hooks):
    channel("hook", f"json://127.0.0.1:{hooks}/fastflow")
    channel("chat", f"mmost://127.0.0.1:{hooks}/the-token")  # Mattermost: Slack's format
    ended(etl, Status.TIMED_OUT, code=None)
    deliver_all()
    by_path = dict(Hooks.received)
    assert by_path["/fastflow"]["title"] == "[Fast-Flow] etl timed out"
    assert "https://fastflow.example.com/runs/" in by_path["/fastflow"]["message"]
    assert "[Fast-Flow] etl timed out" in by_path["/hooks/the-token"]["text"]


def test_a_cancelled_run_notifies_nobody(etl, hooks):
    channel("hook", f"json://127.0.0.1:{hooks}/x", events=("failed", "timed_out", "recovered"))
    run = PipelineRun.enqueue(etl, trigger="manual")
    run.request_cancel()
    ended(etl, Status.CANCELLED, code=None)
    assert not Notification.objects.exists()


def test_a_flood_of_failures_sends_a_bounded_number_then_one_recovered(etl, hooks, monkeypatch):
    channel("hook", f"json://127.0.0.1:{hooks}/x")
    clock = [T0]
    monkeypatch.setattr(notify.timezone, "now", lambda: clock[0])
    for minute in range(50):  # 50 failures within the hour
        clock[0] = T0 + timedelta(minutes=minute, seconds=10)
        ended(etl, Status.FAILED)
    titles = list(Notification.objects.order_by("id").values_list("title", flat=True))
    # at once, after 10 minutes, after 20 more: three messages, not fifty
    assert len(titles) == 3
    assert titles[0] == "[Fast-Flow] etl failed"
    assert "(still, 11 times since" in titles[1] and "(still, 31 times since" in titles[2]
    incident = Incident.objects.get()
    assert incident.events_count == 50 and incident.told_count == 3
    clock[0] = T0 + timedelta(minutes=55)
    ended(etl, Status.SUCCEEDED, code=0)
    ended(etl, Status.SUCCEEDED, code=0)  # recovered once, not at every success
    recovered = Notification.objects.filter(event="recovered")
    assert recovered.count() == 1
    assert "After 50 failure(s)" in recovered.get().body
    assert Incident.objects.get().closed_at is not None
    ended(etl, Status.FAILED)  # a new incident: told at once again
    assert Notification.objects.filter(event="failed").count() == 4


def test_rules_route_by_pipeline_and_tag_and_pipeline_json_names_channels(
    etl, hooks, make_pipeline
):
    channel("nightly", f"json://127.0.0.1:{hooks}/nightly", tags=["nightly"])
    channel("others", f"json://127.0.0.1:{hooks}/others", pipelines=["other"])
    ended(etl, Status.FAILED)
    assert list(Delivery.objects.values_list("channel_name", flat=True)) == ["nightly"]
    make_pipeline("named", config={"notify": {"channels": ["others", "missing"],
                                              "events": ["failed"]}})  # fmt: skip
    discover()
    ended(Pipeline.objects.get(name="named"), Status.FAILED)
    deliveries = dict(
        Delivery.objects.filter(notification__pipeline__name="named").values_list(
            "channel_name", "error"
        )
    )
    assert deliveries == {
        "others": "",
        "missing": 'no channel named "missing" (pipeline.json "notify")',
    }


def test_a_failing_channel_is_retried_with_backoff_then_flagged(etl, monkeypatch, settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    broken = channel("broken", f"json://127.0.0.1:{closed_port}/x")
    settings.NOTIFY_MAX_ATTEMPTS = 4
    ended(etl, Status.FAILED)
    clock = [timezone.now()]
    monkeypatch.setattr(delivery.timezone, "now", lambda: clock[0])
    waits = []
    for _ in range(4):
        assert delivery.deliver_due() == 1
        sending = Delivery.objects.get()
        waits.append((sending.next_attempt_at - clock[0]).total_seconds())
        clock[0] = sending.next_attempt_at + timedelta(seconds=1)
    assert delivery.deliver_due() == 0
    failed = Delivery.objects.get()
    assert failed.status == Delivery.Status.FAILED and failed.attempts == 4
    assert [round(w) for w in waits[:3]] == [30, 60, 120]
    assert "connection" in failed.error.lower()
    broken.refresh_from_db()
    assert broken.is_failing and broken.failures_total == 4 and broken.last_error


def test_a_delivery_of_a_dead_sender_is_sent_by_another(etl, hooks):
    channel("hook", f"json://127.0.0.1:{hooks}/x")
    ended(etl, Status.FAILED)
    Delivery.objects.update(status=Delivery.Status.SENDING,
                            lease_until=timezone.now() - timedelta(seconds=1))  # fmt: skip
    deliver_all()
    assert Delivery.objects.get().status == Delivery.Status.SENT and len(Hooks.received) == 1


def test_sync_warm_up_and_crash_loop_are_told(etl, hooks, make_pipeline, settings):
    channel("ops", f"json://127.0.0.1:{hooks}/ops",
            events=("sync_failed", "warmup_failed", "crash_loop", "recovered"))  # fmt: skip
    failed_sync = Sync.objects.create(trigger="cli", status=Sync.Status.FAILED,
                                      error="could not read from remote\nmore")  # fmt: skip
    sync_finished.send(sender=Sync, sync=failed_sync)
    notify.warmup_failed(etl, "error: no matching distribution for nosuchpkg==9")
    make_pipeline("keeper", config={"restart_on_crash": True, "restart_cooldown": 30,
                                    "timeout": 0})  # fmt: skip
    discover()
    now = T0
    for _ in range(daemons.CRASH_LOOP + 1):
        (run,) = daemons.supervise_daemons(now) or [None]
        if run is None:
            now += timedelta(minutes=5)
            (run,) = daemons.supervise_daemons(now)
        end(run, Status.FAILED, now + timedelta(seconds=1))
        now += timedelta(seconds=40)
    daemons.supervise_daemons(now)
    titles = set(Notification.objects.values_list("title", flat=True))
    assert "[Fast-Flow] repository failed to sync" in titles
    assert "[Fast-Flow] etl could not install its requirements" in titles
    assert "[Fast-Flow] keeper is in a crash loop" in titles
    # a daemon's single crashes are its crash loop's business, not "failed" messages
    assert not Notification.objects.filter(event="failed").exists()
    deliver_all()
    assert len(Hooks.received) == 3


def test_the_admin_sends_a_test_message_through_the_worker(admin_client, etl, hooks):
    made = channel("hook", f"json://127.0.0.1:{hooks}/test")
    admin_client.post(
        reverse("admin:runs_app_channel_changelist"),
        {"action": "send_test_message", "_selected_action": [made.pk]},
    )
    assert Hooks.received == []  # not inside the request
    deliver_all()
    assert Hooks.received[0][1]["title"] == "Fast-Flow test message"


def test_a_channel_url_is_stored_encrypted_and_never_shown(admin_client, etl, hooks):
    url = "json://user:s3cret-pass@127.0.0.1:9/x"
    admin_client.post(reverse("admin:runs_app_channel_add"), {"name": "secretive", "url": url,
                                                              "enabled": "on"})  # fmt: skip
    made = Channel.objects.get(name="secretive")
    assert "s3cret-pass" not in made.url_encrypted and made.url() == url
    page = admin_client.get(reverse("admin:runs_app_channel_change", args=[made.pk]))
    assert b"s3cret-pass" not in page.content
    listing = admin_client.get(reverse("admin:runs_app_channel_changelist"))
    assert b"s3cret-pass" not in listing.content and b"json" in listing.content


def test_channels_from_settings(etl, settings, hooks):
    settings.NOTIFY_URLS = [f"json://127.0.0.1:{hooks}/from-settings"]
    settings.NOTIFY_EVENTS = ["failed"]
    notify.sync_settings_channels()
    ended(etl, Status.FAILED)
    deliver_all()
    assert Hooks.received[0][0] == "/from-settings"
    settings.NOTIFY_URLS = []
    notify.sync_settings_channels()
    assert not Channel.objects.exists() and not Rule.objects.exists()


def test_the_run_page_shows_its_notifications(admin_client, etl, hooks):
    channel("hook", f"json://127.0.0.1:{hooks}/x")
    run = ended(etl, Status.FAILED)
    deliver_all()
    page = admin_client.get(run.get_absolute_url()).content.decode()
    assert 'id="notifications"' in page and "hook" in page and "sent" in page
