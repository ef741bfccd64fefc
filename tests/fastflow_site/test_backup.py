"""backup and restore round-trip a populated instance — on the database of this test pass
(SQLite, or PostgreSQL in CI's second pass) — each in its own process, as an operator runs
them: a fresh instance brought back from the archive holds the same facts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)
KEY = "Zm9yLXRlc3RzLW9ubHktMzItYnl0ZXMtbG9uZy1rZXk="
OTHER_KEY = "b3RoZXItdGVzdC1rZXktb2YtMzItYnl0ZXMtbG9uZyE="
ON_POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")

POPULATE = """
from pathlib import Path
from django.utils import timezone
from django.contrib.auth import get_user_model
from fastflow_site.audit import record
from fastflow_site.models import AuditEntry
from fastflow_site.roles import set_role
from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.logs import LogWriter, spool_path
from runs_app.models import PipelineRun
from secrets_app.models import Variable

discover()
etl = Pipeline.objects.get(name="etl")
ada = get_user_model().objects.create_user("ada", "ada@example.com", "pw")
set_role(ada, "admin")
for number, status in enumerate(["succeeded", "failed"]):
    run = PipelineRun.enqueue(etl, trigger="manual", user=ada)
    PipelineRun.objects.filter(pk=run.pk).update(
        status="running", worker_id="w", started_at=timezone.now())
    run.refresh_from_db()
    writer = LogWriter(spool_path(run.public_id), run_id=run.pk)
    writer.write("O", f"line {number} of {run.public_id}")
    writer.close()
    run.finish(status, exit_code=number)
secret = Variable(name="DB_PASSWORD", kind="secret")
secret.set_value("s3cret-in-backup")
secret.save()
record(AuditEntry.Action.ROLE_CHANGED, ada, actor=ada, after="admin")
"""

FACTS = """
import json
from pathlib import Path
from django.contrib.auth import get_user_model
from fastflow_site.models import AuditEntry
from fastflow_site.roles import role_of
from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun, RunTally
from runs_app.stored_logs import log_text
from secrets_app.models import Variable

runs = PipelineRun.objects.order_by("queued_at", "id")
print(json.dumps({
    "pipelines": sorted(Pipeline.objects.values_list("name", flat=True)),
    "runs": [[str(r.public_id), r.status, r.exit_code, log_text(r.pk)]
             for r in runs],
    "people": sorted((u.username, role_of(u)) for u in get_user_model().objects.all()),
    "secret": Variable.objects.get(name="DB_PASSWORD").plain_value(),
    "audit": sorted(AuditEntry.objects.values_list("action", flat=True)),
    "tallies": sorted((t.pipeline_name, t.status, t.count) for t in RunTally.objects.all()),
}, sort_keys=True))
"""


@pytest.fixture
def databases():
    """Two empty databases on PostgreSQL (made and dropped here); None, None on SQLite."""
    if not ON_POSTGRES:
        yield None, None
        return
    db = settings.DATABASES["default"]
    names = [f"ff_backup_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("src", "dst")]
    admin = psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"],
        dbname="postgres", autocommit=True,
    )  # fmt: skip
    for name in names:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/"
    yield base + names[0], base + names[1]
    for name in names:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def instance(folder: Path, database_url: str | None, key: str = KEY) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DATA_DIR=str(folder / "data"), LOGS_DIR=str(folder / "logs"),
        PIPELINES_DIR=str(folder / "pipelines"), ENCRYPTION_KEY=key,
        FASTFLOW_ENV_FILE=str(folder / "no.env"), DJANGO_SETTINGS_MODULE="fastflow_site.settings",
    )  # fmt: skip
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    return done


def facts(env) -> dict:
    done = manage(env, "shell", "-c", FACTS)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def populated(tmp_path, database_url) -> dict[str, str]:
    source = instance(tmp_path / "source", database_url)
    (tmp_path / "source" / "pipelines" / "etl").mkdir(parents=True)
    (tmp_path / "source" / "pipelines" / "etl" / "main.py").write_text("print('hi')\n")
    assert manage(source, "migrate", "-v0").returncode == 0
    done = manage(source, "shell", "-c", POPULATE)
    assert done.returncode == 0, done.stderr
    return source


@pytest.mark.slow
def test_a_populated_instance_round_trips(tmp_path, databases):
    source = populated(tmp_path, databases[0])
    before = facts(source)
    assert before["secret"] == "s3cret-in-backup" and len(before["runs"]) == 2
    archive = tmp_path / "backup.tar.gz"
    done = manage(source, "backup", str(archive))
    assert done.returncode == 0, done.stderr
    assert "backup written to" in done.stdout
    assert archive.stat().st_mode & 0o777 == 0o600
    with tarfile.open(archive) as opened:
        names = opened.getnames()
        manifest = json.load(opened.extractfile("manifest.json"))
    assert ("database.pgdump" if ON_POSTGRES else "database.sqlite3") in names
    assert not any(name.startswith("logs/") for name in names)  # in the database now
    assert all("line " in run[3] for run in before["runs"])  # which the restore brings back
    assert KEY not in json.dumps(manifest) and manifest["counts"]["runs_app.PipelineRun"] == 2

    target = instance(tmp_path / "target", databases[1])
    done = manage(target, "restore", str(archive))
    assert done.returncode == 0, done.stderr
    assert "restored the backup" in done.stdout and done.stderr == ""
    assert facts(target) == before

    again = manage(target, "restore", str(archive))
    assert again.returncode != 0 and "this instance is not empty" in again.stderr


@pytest.mark.slow
def test_a_restore_with_another_key_says_secrets_will_not_decrypt(tmp_path, databases):
    source = populated(tmp_path, databases[0])
    archive = tmp_path / "backup.tar.gz"
    assert manage(source, "backup", str(archive)).returncode == 0
    target = instance(tmp_path / "target", databases[1], key=OTHER_KEY)
    done = manage(target, "restore", str(archive))
    assert done.returncode == 0, done.stderr
    assert "ENCRYPTION_KEY differs" in done.stderr


def test_restore_refuses_what_is_not_a_backup(tmp_path):
    bogus = tmp_path / "bogus.tar.gz"
    with tarfile.open(bogus, "w:gz") as archive:
        archive.add(__file__, "something.py")
    done = manage(instance(tmp_path / "target", None), "restore", str(bogus))
    assert done.returncode != 0 and "not a Fast-Flow backup" in done.stderr
