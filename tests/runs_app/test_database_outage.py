"""The database away for a few seconds while a run goes on: SQLite locked by another
writer for longer than the busy timeout, PostgreSQL refusing every connection (as while it
restarts). The follower keeps the run, loses no line (they wait in its spool, and are
stored, numbered, once the database is back) and stores its end once it is back. Each
test runs in the pass of its database."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from django.db import close_old_connections, connection

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.follow import wait_for
from runs_app.logs import spool_path
from runs_app.models import PipelineRun
from runs_app.stored_logs import all_lines
from tests.runs_app.conftest import (
    execute,
    log_text,
    output_lines,
    read_log,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("runs_setup")]

Status = PipelineRun.Status
TICKS = "import time\nfor i in range(15):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n"
OUTAGE_SECONDS = 5


def start(make_pipeline) -> tuple[PipelineRun, threading.Thread]:
    make_pipeline("steady", main=TICKS)
    discover()
    run = PipelineRun.enqueue(Pipeline.objects.get(name="steady"), trigger="manual")
    follower = threading.Thread(target=execute, args=(run,), daemon=True)
    follower.start()
    assert wait_for(lambda: "O tick 1\n" in read_log(run), timeout=60)
    return run, follower


def spooled(run: PipelineRun) -> str:
    """What the worker's spool holds of the run now (its lines not stored yet)."""
    try:
        return spool_path(run.public_id).read_text()
    except FileNotFoundError:
        return ""


def check_the_run_ended_whole(run: PipelineRun, follower: threading.Thread, caplog) -> None:
    follower.join(timeout=120)
    # The outage was felt (writes failed and were tried again), and survived.
    assert any("the database is unavailable" in r.getMessage() for r in caplog.records)
    close_old_connections()
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert output_lines(run) == [f"tick {i}" for i in range(15)]
    assert log_text(run).count(" S finished: ") == 1
    numbers = [seq for seq, *_ in all_lines(run.pk)]
    assert numbers == list(range(1, len(numbers) + 1))  # none lost, none doubled
    assert not spool_path(run.public_id).exists()  # all stored, the spool gone


@pytest.fixture
def short_busy_timeout():
    """Writers give up after one second here (20 s in production), so a lock is felt as
    "database is locked" errors, not as a long wait."""
    if connection.vendor != "sqlite":
        pytest.skip("the SQLite pass runs this")
    options = connection.settings_dict["OPTIONS"]
    before = options["timeout"]
    options["timeout"] = 1
    yield
    options["timeout"] = before


@pytest.mark.usefixtures("short_busy_timeout")
def test_sqlite_locked_longer_than_the_busy_timeout(make_pipeline, docker_engine, caplog):
    run, follower = start(make_pipeline)
    blocker = sqlite3.connect(connection.settings_dict["NAME"], timeout=30)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        # The container ends and the follower tries to store that, while the lock holds.
        assert wait_for(lambda: " O tick 14\n" in spooled(run), timeout=60)
        follower.join(timeout=OUTAGE_SECONDS)
        assert follower.is_alive()  # still trying, not given up
    finally:
        blocker.rollback()
        blocker.close()
    check_the_run_ended_whole(run, follower, caplog)


def test_postgresql_refusing_connections_for_a_few_seconds(
    postgresql_outage, make_pipeline, docker_engine, caplog
):
    run, follower = start(make_pipeline)
    with postgresql_outage:
        assert wait_for(lambda: " O tick 14\n" in spooled(run), timeout=60)
        follower.join(timeout=OUTAGE_SECONDS)
        assert follower.is_alive()  # still trying, not given up
    check_the_run_ended_whole(run, follower, caplog)
