"""Upgrades: the previous release's schema, with its data, migrates to this one (people get
roles, ended runs their totals, nothing is lost); a database a newer Fast-Flow migrated is
refused with what to do."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from fastflow_site.roles import role_of
from runs_app.models import RunTally
from secrets_app import crypto
from secrets_app.models import Variable

pytestmark = pytest.mark.django_db(transaction=True)

# The release before people, operations and the guard (its newest migration per app);
# apps it did not have are taken back to nothing.
PREVIOUS_RELEASE = [
    ("secrets_app", "0002_encrypted_fields"),
    ("pipelines_app", "0005_encrypted_fields"),
    ("runs_app", "0007_daemons"),
    ("fastflow_site", None),
    ("account", None),
    ("socialaccount", None),
    ("mfa", None),
    ("usersessions", None),
]


@pytest.fixture
def previous_release():
    """The database as the previous release left it; this one's schema again after."""
    executor = MigrationExecutor(connection)
    executor.migrate(PREVIOUS_RELEASE)
    yield executor.loader.project_state(
        [target for target in PREVIOUS_RELEASE if target[1] is not None]
    ).apps
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_the_previous_release_with_data_migrates_to_this_one(previous_release):
    old = previous_release
    User, Permission = old.get_model("auth", "User"), old.get_model("auth", "Permission")
    User.objects.create(username="boss", is_superuser=True, is_staff=True)
    runner = User.objects.create(username="runner")
    runner.user_permissions.add(*Permission.objects.filter(codename="add_pipelinerun"))
    User.objects.create(username="reader")
    Pipeline = old.get_model("pipelines_app", "Pipeline")
    PipelineRun = old.get_model("runs_app", "PipelineRun")
    now = timezone.now()
    etl = Pipeline.objects.create(name="etl", folder_path="/p", discovered_at=now, last_seen_at=now)
    PipelineRun.objects.create(
        pipeline=etl, status="succeeded", started_at=now - timedelta(seconds=30), finished_at=now
    )
    token = crypto.encrypt("kept-through-the-upgrade")
    old.get_model("secrets_app", "Variable").objects.create(
        name="DB_PASSWORD", kind="secret", encrypted_value=token
    )

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    call_command("migrate", verbosity=0)  # what `up` does: post_migrate gives roles their rights
    roles = {u.username: role_of(u) for u in get_user_model().objects.all()}
    assert roles == {"boss": "admin", "runner": "operator", "reader": "viewer"}
    assert get_user_model().objects.get(username="runner").has_perm("runs_app.add_pipelinerun")
    assert RunTally.objects.get(pipeline_name="etl", status="succeeded").count == 1
    assert Variable.objects.get(name="DB_PASSWORD").plain_value() == "kept-through-the-upgrade"


def test_a_database_from_a_newer_fastflow_is_refused(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    settings.PIPELINES_DIR = tmp_path / "pipelines"
    MigrationRecorder(connection).record_applied("runs_app", "9999_from_the_future")
    try:
        with pytest.raises(CommandError, match="migrated by a newer Fast-Flow") as refused:
            call_command("up", "--prepare-only", stdout=StringIO())
        assert "runs_app.9999_from_the_future" in str(refused.value)
        assert "restore a backup made with this version" in str(refused.value)
        with pytest.raises(CommandError, match="migrated by a newer Fast-Flow"):
            call_command("worker")
    finally:
        MigrationRecorder(connection).record_unapplied("runs_app", "9999_from_the_future")
