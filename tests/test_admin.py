"""The operator console: every admin page answers, history is read-only, nothing leaks."""

from __future__ import annotations

import pytest
from allauth.mfa.models import Authenticator
from allauth.socialaccount.models import SocialAccount
from allauth.usersessions.models import UserSession
from django.contrib import admin
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from fastflow_site.audit import record
from fastflow_site.models import ApiToken, AuditEntry, Invitation, JoinRequest, SignInProvider
from fastflow_site.roles import Role
from pipelines_app.discovery import discover
from pipelines_app.models import DiscoveryScan, GitSource, Pipeline, Schedule, Sync, WebhookKey
from runs_app.models import (
    ChainLink,
    Channel,
    Chore,
    Daemon,
    Delivery,
    DependencyCheck,
    EnvironmentLock,
    Incident,
    Notification,
    PipelineRun,
    Rule,
    RunTally,
    ScheduleSkip,
    Vulnerability,
    WorkerNode,
    WorkerProcess,
)
from secrets_app.models import Variable

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogue(example_pipelines, admin_user):
    discover()
    hello = Pipeline.objects.get(name="hello_world")
    first = PipelineRun.objects.create(
        pipeline=hello,
        status=PipelineRun.Status.FAILED,
        failure_reason=PipelineRun.FailureReason.EXIT_CODE,
        exit_code=3,
        triggered_by=admin_user,
        environment={"GREETING": "hello"},
        secret_env_names=["DB_PASSWORD"],
    )
    PipelineRun.objects.create(
        pipeline=hello, trigger=PipelineRun.Trigger.RETRY, attempt=2, retry_of=first
    )
    return hello


def _task_queue_rows() -> None:
    """One row for each of django-q2's admin pages (schedules, tasks, queued messages)."""
    from django.utils import timezone
    from django_q.models import OrmQ, Schedule, Task

    now = timezone.now()
    Schedule.objects.create(func="math.floor", args="1.5", name="floor")
    for success in (True, False):
        Task.objects.create(
            id=f"task{success}",
            name=f"t{success}",
            func="math.floor",
            started=now,
            stopped=now,
            success=success,
        )
    OrmQ.objects.create(key="fastflow", payload="x", lock=now)


def admin_pages(model_admin, obj) -> list[str]:
    info = (model_admin.model._meta.app_label, model_admin.model._meta.model_name)
    return [
        reverse("admin:{}_{}_changelist".format(*info)),
        reverse("admin:{}_{}_change".format(*info), args=[obj.pk]),
        reverse("admin:{}_{}_history".format(*info), args=[obj.pk]),
    ]


def _people_rows(admin_user) -> None:
    """One row for each admin page of people, sign-in and audit."""
    Invitation.make("new@example.com", Role.OPERATOR, created_by=admin_user)
    JoinRequest.objects.create(email="asking@example.com", provider="github")
    ApiToken.make(admin_user, "CI", ApiToken.Scope.READ)
    provider = SignInProvider(kind="github", name="GitHub", client_id="id")
    provider.set_secret("never-shown")
    provider.save()
    record(AuditEntry.Action.ROLE_CHANGED, admin_user, actor=admin_user)
    SocialAccount.objects.create(user=admin_user, provider="github", uid="1")
    Authenticator.objects.create(
        user=admin_user, type=Authenticator.Type.TOTP, data={"secret": "never-shown"}
    )
    UserSession.objects.create(
        user=admin_user, ip="127.0.0.1", session_key="never-shown", user_agent="test"
    )


def _notification_rows(pipeline) -> None:
    """A channel (its URL holding a password never shown), a rule, a message, an incident."""
    channel = Channel(name="ops")
    channel.set_url("json://user:never-shown@127.0.0.1:9/x")
    channel.save()
    Rule.objects.create(name="all", events=["failed"]).channels.add(channel)
    incident = Incident.objects.create(
        kind="failing", subject=pipeline.name, pipeline=pipeline, next_tell_at=timezone.now()
    )
    message = Notification.objects.create(event="failed", title="t", body="b", incident=incident)
    Delivery.objects.create(notification=message, channel=channel, channel_name="ops")
    Chore.objects.create(name="retention")
    RunTally.count_run(pipeline.name, "failed")
    DependencyCheck.objects.create(pipeline=pipeline, status="vulnerable", packages=1)
    Vulnerability.objects.create(
        pipeline=pipeline, package="requests", version="2.19.1", advisory_id="PYSEC-2018-28"
    )


def test_every_admin_page_answers(admin_client, admin_user, catalogue):
    Group.objects.create(name="operators")
    _task_queue_rows()
    schedule = Schedule.objects.create(pipeline=catalogue, config_id="from-ui", interval_seconds=60)
    ScheduleSkip.objects.create(
        schedule=schedule,
        due_at=timezone.now(),
        reason=ScheduleSkip.Reason.STILL_QUEUED,
        waiting_run=PipelineRun.objects.first(),
    )
    WorkerProcess.report("host:1:abc", engine_ok=False, engine_error="no engine", node="host")
    WorkerNode.report("host", labels={"gpu": "yes"}, capacity=4, engine="local", pool={})
    lock = EnvironmentLock.record(catalogue, catalogue.environment_key, ["iniconfig==2.0.0"])
    PipelineRun.objects.filter(pk=PipelineRun.objects.first().pk).update(environment_lock=lock)
    Daemon.objects.create(pipeline=catalogue, last_exit="failed (exit code 1)")
    ChainLink.objects.create(
        upstream=PipelineRun.objects.first(),
        trigger_index=0,
        target_name="gone",
        condition="success",
        skipped_reason="no such pipeline",
    )
    WebhookKey.make(catalogue, "CI")
    GitSource.objects.create(url="https://example.com/repo.git")
    Sync.objects.create(trigger=Sync.Trigger.CLI, status=Sync.Status.FAILED, error="boom")
    secret = Variable(name="API_TOKEN", kind=Variable.Kind.SECRET)
    secret.set_value("never-shown")
    secret.save()
    _people_rows(admin_user)
    _notification_rows(catalogue)
    objects = {
        Pipeline: catalogue,
        PipelineRun: PipelineRun.objects.first(),
        DiscoveryScan: DiscoveryScan.objects.first(),
    }
    pages = [reverse("admin:index")]
    for model, model_admin in admin.site._registry.items():
        pages += admin_pages(model_admin, objects.get(model) or model.objects.first())
        pages.append(reverse("admin:app_list", args=[model._meta.app_label]))
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        assert b"never-shown" not in response.content


@pytest.mark.parametrize(
    "query",
    [
        "?q=hello",
        "?state__exact=missing",
        "?validity=invalid",
        "?validity=valid",
        "?validity=warnings",
        "?enabled__exact=1",
        "?entry_type__exact=script",
        "?has_requirements__exact=1",
        "?o=6",
    ],
)
def test_pipeline_changelist_filters(admin_client, catalogue, query):
    response = admin_client.get(reverse("admin:pipelines_app_pipeline_changelist") + query)
    assert response.status_code == 200


def test_invalid_filter_lists_the_broken_pipeline(admin_client, catalogue):
    response = admin_client.get(
        reverse("admin:pipelines_app_pipeline_changelist") + "?validity=invalid"
    )
    html = response.content.decode()
    assert "broken_config" in html and "hello_world" not in html


def test_pipeline_page_shows_errors_and_links_to_runs(admin_client, catalogue):
    broken = Pipeline.objects.get(name="broken_config")
    html = admin_client.get(
        reverse("admin:pipelines_app_pipeline_change", args=[broken.pk])
    ).content.decode()
    assert "mem_hard_limit &#x27;1.5x&#x27; is not a size" in html
    html = admin_client.get(
        reverse("admin:pipelines_app_pipeline_change", args=[catalogue.pk])
    ).content.decode()
    assert f"/admin/runs_app/pipelinerun/?pipeline__id__exact={catalogue.pk}" in html
    assert "2 runs" in html


@pytest.mark.parametrize(
    "query",
    [
        "?status__exact=failed",
        "?failure_reason__exact=exit_code",
        "?trigger__exact=retry",
        "?q=hello_world",
        "?queued_at__year=2000",
        "?o=-8",
    ],
)
def test_run_changelist_filters(admin_client, catalogue, query):
    response = admin_client.get(reverse("admin:runs_app_pipelinerun_changelist") + query)
    assert response.status_code == 200


def test_run_history_is_read_only(admin_client, catalogue):
    run = PipelineRun.objects.get(attempt=2)
    assert admin_client.get(reverse("admin:runs_app_pipelinerun_add")).status_code == 403
    page = admin_client.get(reverse("admin:runs_app_pipelinerun_change", args=[run.pk]))
    html = page.content.decode()
    assert 'name="_save"' not in html
    assert reverse("admin:runs_app_pipelinerun_change", args=[run.retry_of_id]) in html
    assert reverse("admin:pipelines_app_pipeline_change", args=[catalogue.pk]) in html
    response = admin_client.post(
        reverse("admin:runs_app_pipelinerun_change", args=[run.pk]), {"status": "succeeded"}
    )
    assert response.status_code == 403
    run.refresh_from_db()
    assert run.status == PipelineRun.Status.QUEUED


def test_run_page_shows_secret_names_only(admin_client, catalogue):
    run = PipelineRun.objects.get(attempt=1)
    html = admin_client.get(
        reverse("admin:runs_app_pipelinerun_change", args=[run.pk])
    ).content.decode()
    assert "DB_PASSWORD" in html
    assert "GREETING" in html


def test_pipelines_cannot_be_added_and_only_missing_ones_deleted(admin_client, catalogue):
    assert admin_client.get(reverse("admin:pipelines_app_pipeline_add")).status_code == 403
    delete = reverse("admin:pipelines_app_pipeline_delete", args=[catalogue.pk])
    assert admin_client.get(delete).status_code == 403
    catalogue.state = Pipeline.State.MISSING
    catalogue.save()
    # Deleting a missing pipeline with runs is refused by PROTECT: the page says so.
    response = admin_client.get(delete)
    assert response.status_code == 200
    assert b"protected" in response.content.lower() or b"would require deleting" in response.content


def test_rediscover_action(admin_client, catalogue, example_pipelines):
    (example_pipelines / "new_one").mkdir()
    (example_pipelines / "new_one" / "main.py").write_text("print(1)")
    response = admin_client.post(
        reverse("admin:pipelines_app_pipeline_changelist"),
        {"action": "rediscover", "_selected_action": [catalogue.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Discovered 9 pipelines (1 new, 1 invalid, 0 now missing)." in response.content.decode()
    assert Pipeline.objects.filter(name="new_one").exists()


def test_changelists_query_count_does_not_grow_with_rows(
    admin_client, catalogue, django_assert_max_num_queries
):
    pipeline = catalogue
    PipelineRun.objects.bulk_create(PipelineRun(pipeline=pipeline) for _ in range(50))
    with django_assert_max_num_queries(12):
        admin_client.get(reverse("admin:runs_app_pipelinerun_changelist"))
    with django_assert_max_num_queries(12):
        admin_client.get(reverse("admin:pipelines_app_pipeline_changelist"))
