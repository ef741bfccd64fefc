"""Workers are woken the moment runs wait for them: at once within a process, and from
another process through PostgreSQL's NOTIFY or Redis's publish/subscribe."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.db import connection

from runs_app import wakeup
from runs_app.follow import wait_for
from runs_app.worker.listener import Listener
from tests.runs_app.conftest import redis_database
from tests.runs_app.test_worker import database_url

pytestmark = pytest.mark.django_db(transaction=True)


def announce_elsewhere(**env: str) -> None:
    """`wakeup.announce()` in a process of its own, as the web server's "Run now" does."""
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from runs_app import wakeup; wakeup.announce()",
        ],
        cwd=django_settings.BASE_DIR,
        env={**os.environ, "DATABASE_URL": database_url(), **env},
        check=True,
        capture_output=True,
    )


@pytest.fixture
def listener(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    found = Listener()
    yield found
    found.close()


def test_in_one_process_an_announcement_wakes_at_once(listener):
    assert not listener.event.is_set()
    wakeup.announce()
    assert listener.event.is_set()


def listening() -> bool:
    """The listener's own connection has said LISTEN (its last statement, now idle)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query = %s",
            [f"LISTEN {wakeup.CHANNEL}"],
        )
        return cursor.fetchone()[0] >= 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's own channel")
def test_postgresql_notify_wakes_a_worker_of_another_process(listener):
    assert listener.kind == "postgresql"
    assert wait_for(listening, timeout=10)
    listener.event.clear()
    announce_elsewhere()
    assert wait_for(listener.event.is_set, timeout=10)


def test_redis_wakes_a_worker_of_another_process(settings):
    if connection.vendor == "postgresql":
        pytest.skip("with PostgreSQL, its NOTIFY is the channel (tested above)")
    settings.REDIS_URL = redis_database(8)
    listener = Listener()
    try:
        assert listener.kind == "redis"
        import redis

        subscribed = redis.Redis.from_url(settings.REDIS_URL)
        assert wait_for(lambda: subscribed.pubsub_numsub(wakeup.CHANNEL)[0][1] >= 1, timeout=10)
        listener.event.clear()
        announce_elsewhere(REDIS_URL=settings.REDIS_URL)
        assert wait_for(listener.event.is_set, timeout=10)
    finally:
        listener.close()


def test_on_one_machine_a_socket_wakes_a_worker_of_another_process(settings, tmp_path):
    if connection.vendor == "postgresql":
        pytest.skip("with PostgreSQL, its NOTIFY is the channel (tested above)")
    settings.REDIS_URL = ""
    settings.DATA_DIR = tmp_path / "data"
    listener = Listener()
    try:
        assert listener.kind == "socket"
        listener.event.clear()
        announce_elsewhere(DATA_DIR=str(settings.DATA_DIR), REDIS_URL="")
        assert wait_for(listener.event.is_set, timeout=10)
    finally:
        listener.close()
    # A worker gone: its socket goes with it, and a knock on a dead one removes it.
    assert list(wakeup.socket_dir().glob("*.sock")) == []
    path = wakeup.socket_dir() / "deadbeef.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dead:
        dead.bind(str(path))  # closed without removing its file: as a killed worker leaves it
    wakeup.announce()
    assert not path.exists()


def test_where_no_socket_fits_workers_look_every_poll_interval(settings, tmp_path):
    if connection.vendor == "postgresql":
        pytest.skip("PostgreSQL always has its channel")
    settings.REDIS_URL = ""
    settings.DATA_DIR = tmp_path / ("deep" * 30)
    listener = Listener()
    try:
        assert listener.kind == ""
        assert listener.fallback_seconds == settings.Q_CLUSTER["poll"]
    finally:
        listener.close()
