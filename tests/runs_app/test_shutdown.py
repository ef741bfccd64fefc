"""With REDIS_URL set, processes that published live events still stop within seconds of
SIGTERM (Ctrl-C, `docker stop`), and a process has exactly one publisher however many of
its threads publish at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests
from django.conf import settings as django_settings

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline, Schedule
from runs_app import live
from runs_app.follow import wait_for
from runs_app.models import PipelineRun
from tests.runs_app.conftest import free_port, redis_database
from tests.runs_app.test_worker import Worker, kill_group

STOP_WITHIN_SECONDS = 10
KEY = "a-webhook-key-long-enough"
ASGI_APP = "fastflow_site.asgi:application"


def redis_layer(number: int) -> dict:
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_database(number)], "prefix": f"test-{uuid.uuid4()}:"},
        }
    }


def test_one_publisher_per_process_however_many_threads_publish(settings):
    settings.CHANNEL_LAYERS = redis_layer(9)
    barrier = threading.Barrier(30)

    def publish(n: int) -> None:
        barrier.wait()
        live.status_changed(f"run-{n}")

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert live.flush()
    publishers = [t for t in threading.enumerate() if t.name == "fastflow-live"]
    assert len(publishers) == 1


def stops_promptly(process: subprocess.Popen) -> float:
    """SIGTERM the process; how long it took to exit (fails the test past the limit)."""
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    stopped = wait_for(lambda: process.poll() is not None, timeout=STOP_WITHIN_SECONDS)
    took = time.monotonic() - began
    if not stopped:
        kill_group(process)
    assert stopped, f"still running {STOP_WITHIN_SECONDS} s after SIGTERM"
    return took


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("runs_setup")
def test_a_worker_that_published_stops_on_sigterm(make_pipeline, settings, tmp_path):
    make_pipeline("often", main="print('once more')\n")
    discover()
    worker = Worker(settings, tmp_path)
    environment = {**worker.environment(), "REDIS_URL": redis_database(7)}
    worker.environment = lambda: environment
    worker.start()
    # The worker's own ticker fires the schedule, so its main process publishes (the claim).
    schedule = Schedule(
        pipeline=Pipeline.objects.get(name="often"), config_id="every", interval_seconds=1
    )
    schedule.plan()
    schedule.save()
    try:
        assert wait_for(
            lambda: PipelineRun.objects.filter(status=PipelineRun.Status.SUCCEEDED).exists(),
            timeout=90,
        ), worker.log.read_text()[-2000:]
        stops_promptly(worker.process)
    finally:
        worker.kill()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("runs_setup")
def test_a_web_process_that_published_stops_on_sigterm(make_pipeline, settings, tmp_path):
    make_pipeline("hooked", config={"webhook_key": KEY})
    discover()
    worker = Worker(settings, tmp_path)
    port = free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), ASGI_APP],
        cwd=django_settings.BASE_DIR,
        env={**worker.environment(), "REDIS_URL": redis_database(7)},
        stdout=open(tmp_path / "web.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/hooks/hooked/"

        def accepted() -> bool:
            try:
                return requests.post(url, headers={"X-Fastflow-Key": KEY}, timeout=5).ok
            except requests.ConnectionError:
                return False

        # The call queues and claims a run in the web process: it publishes the claim.
        assert wait_for(accepted, timeout=30), (tmp_path / "web.log").read_text()
        stops_promptly(web)
    finally:
        if web.poll() is None:
            kill_group(web)
