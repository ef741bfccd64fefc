"""The worker process for real: run supervisor, django-q2 cluster and ticker, limits, and
surviving a SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.executors.engine import docker_timestamp
from runs_app.executors.local import process_alive
from runs_app.follow import wait_for
from runs_app.models import PipelineRun
from tests.runs_app.conftest import free_port, log_text, output_lines, read_log

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("runs_setup")]

Status = PipelineRun.Status


def database_url() -> str:
    """The test database, for the worker process."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


class Worker:
    """`manage.py worker` as a separate process group, started and killed by the test."""

    def __init__(self, settings, tmp_path) -> None:
        self.settings = settings
        self.log = tmp_path / "worker.log"
        self.process: subprocess.Popen | None = None
        self.env: dict[str, str] = {}  # more settings for the process
        # Python run before the worker's command, in its process (tests inject faults).
        self.prelude = ""

    def environment(self) -> dict[str, str]:
        """Read when the process starts, so a test's settings changes reach the worker."""
        settings = self.settings
        return {
            **os.environ,
            "DATABASE_URL": database_url(),
            "DATA_DIR": str(settings.DATA_DIR),
            "LOGS_DIR": str(settings.LOGS_DIR),
            "PIPELINES_DIR": str(settings.PIPELINES_DIR),
            "UV_CACHE_DIR": str(settings.UV_CACHE_DIR),
            "SANDBOX_ROOTS_DIR": str(settings.SANDBOX_ROOTS_DIR),
            "MAX_CONCURRENT_RUNS": str(settings.MAX_CONCURRENT_RUNS),
            # Pooled containers, as in production (runs_setup; 0 for a `fresh` test).
            "RUN_POOL_SIZE": str(settings.RUN_POOL_SIZE),
            "RUN_STOP_GRACE_SECONDS": "2",
            **self.env,
        }

    def start(self) -> None:
        command = ["manage.py", "worker", "--tick", "0.2", "--reconcile-every", "2"]
        if self.prelude:
            command = ["-c", WITH_PRELUDE.format(prelude=self.prelude), *command]
        self.process = subprocess.Popen(
            [sys.executable, *command],
            cwd=django_settings.BASE_DIR,
            env=self.environment(),
            stdout=open(self.log, "a"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL to the whole process group: no clean-up code runs."""
        if self.process and self.process.poll() is None:
            kill_group(self.process)

    def stop(self) -> None:
        """SIGTERM to the worker, as Ctrl-C or `docker stop` would send."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


# `python -c` running a test's prelude (after Django is set up), then manage.py's command.
WITH_PRELUDE = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fastflow_site.settings")
import django
django.setup()
{prelude}
from django.core.management import execute_from_command_line
execute_from_command_line(sys.argv[1:])  # argv[0] is "-c"
"""


def start_web_server(environment: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """daphne serving the site as a process of its own, answering; and its base URL."""
    port = free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
         "fastflow_site.asgi:application"],
        cwd=django_settings.BASE_DIR,
        env=environment,
        stdout=open(log, "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip

    def answers() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    assert wait_for(answers, timeout=30), log.read_text()
    return web, f"http://127.0.0.1:{port}"


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a process group and wait until every member is gone (and its database
    connections with it)."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    def gone() -> bool:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, timeout=10)


@pytest.fixture
def worker(settings, tmp_path):
    running = Worker(settings, tmp_path)
    yield running
    running.kill()


def queue_runs(name: str, count: int) -> list[PipelineRun]:
    pipeline = Pipeline.objects.get(name=name)
    return [PipelineRun.enqueue(pipeline, trigger=PipelineRun.Trigger.API) for _ in range(count)]


def all_final(runs: list[PipelineRun]) -> bool:
    ids = [r.pk for r in runs]
    return not PipelineRun.objects.filter(
        pk__in=ids, status__in=PipelineRun.ACTIVE_STATUSES
    ).exists()


def test_at_most_the_limit_runs_at_once_and_all_finish_in_order(
    make_pipeline, worker, settings, docker_engine
):
    settings.MAX_CONCURRENT_RUNS = 2
    make_pipeline("nap", main="import time\nprint('napping', flush=True)\ntime.sleep(1.5)\n")
    discover()
    worker.start()
    runs = queue_runs("nap", 5)
    most = 0
    deadline = time.monotonic() + 120
    while not all_final(runs) and time.monotonic() < deadline:
        live = docker_engine.api.containers(filters={"label": "fastflow.pipeline=nap"})
        most = max(most, len(live))
        time.sleep(0.1)
    assert all_final(runs), worker.log.read_text()[-3000:]
    assert most <= 2
    assert most == 2  # the limit was used, not just respected
    finished = PipelineRun.objects.filter(pk__in=[r.pk for r in runs])
    assert {r.status for r in finished} == {Status.SUCCEEDED}
    by_start = [r.pk for r in finished.order_by("claimed_at", "id")]
    assert by_start == [r.pk for r in runs]  # FIFO


def test_one_worker_process_follows_its_runs_in_threads(make_pipeline, worker, settings):
    settings.MAX_CONCURRENT_RUNS = 3
    make_pipeline("naps", main="import time\nprint('napping', flush=True)\ntime.sleep(30)\n")
    discover()
    worker.start()
    runs = queue_runs("naps", 3)
    assert wait_for(lambda: all("O napping\n" in read_log(r) for r in runs), timeout=90), (
        worker.log.read_text()[-3000:]
    )
    followers = {PipelineRun.objects.get(pk=r.pk).worker_id for r in runs}
    (follower,) = followers  # one process follows all three, no process per run
    assert follower.split(":")[1] == str(worker.process.pid)
    for run in runs:
        run.request_cancel()
    assert wait_for(lambda: all_final(runs), timeout=60)


def test_max_instances_with_the_real_worker(make_pipeline, worker, settings, docker_engine):
    settings.MAX_CONCURRENT_RUNS = 3
    make_pipeline("single", main="import time\ntime.sleep(1)\n", config={"max_instances": 1})
    discover()
    worker.start()
    runs = queue_runs("single", 3)
    most = 0
    deadline = time.monotonic() + 120
    while not all_final(runs) and time.monotonic() < deadline:
        most = max(
            most, len(docker_engine.api.containers(filters={"label": "fastflow.pipeline=single"}))
        )
        time.sleep(0.1)
    assert all_final(runs)
    assert most == 1


def test_a_killed_worker_is_replaced_and_the_run_continues_with_its_full_log(
    make_pipeline, worker, settings, docker_engine
):
    settings.MAX_CONCURRENT_RUNS = 2
    make_pipeline(
        "ticker",
        main="import time\nfor i in range(25):\n"
        "    print('tick', i, flush=True)\n    time.sleep(0.25)\n",
    )
    discover()
    worker.start()
    (run,) = queue_runs("ticker", 1)
    assert wait_for(lambda: "O tick 3\n" in read_log(run), timeout=60), worker.log.read_text()
    worker.kill()  # the container goes on without anybody following it
    run.refresh_from_db()
    # Lines printed while nobody follows: they must reach the log after the restart.
    assert wait_for(
        lambda: (
            b"tick 10" in docker_engine.api.logs(run.container_id)
            and "tick 10" not in read_log(run)
        ),
        timeout=30,
    )
    worker.start()
    assert wait_for(lambda: all_final([run]), timeout=90), worker.log.read_text()[-3000:]
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert output_lines(run) == [f"tick {i}" for i in range(25)]  # no gap, no duplicate
    assert "re-attached to the run" in log_text(run)


def test_a_stopped_worker_hands_its_runs_over_at_once(
    make_pipeline, worker, settings, docker_engine
):
    settings.RUN_HEARTBEAT_TIMEOUT = 300  # a lapsed lease would take five minutes
    make_pipeline(
        "longer",
        # Long enough to outlast a slow stop (the worker's threads, its pool) on a busy machine.
        main="import time\nfor i in range(60):\n    print('tick', i, flush=True)\n"
        "    time.sleep(0.25)\n",
    )
    discover()
    worker.start()
    (run,) = queue_runs("longer", 1)
    assert wait_for(lambda: "O tick 2\n" in read_log(run), timeout=60)
    worker.stop()
    run.refresh_from_db()
    assert run.status == Status.CLAIMED  # released on the way out, not left to lapse
    assert docker_engine.api.inspect_container(run.container_id)["State"]["Running"]
    worker.start()
    assert wait_for(lambda: all_final([run]), timeout=60), worker.log.read_text()[-3000:]
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED
    assert output_lines(run) == [f"tick {i}" for i in range(60)]


def test_a_run_whose_container_vanished_is_marked_lost(
    make_pipeline, worker, settings, docker_engine
):
    make_pipeline("victim", main="import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    discover()
    worker.start()
    (run,) = queue_runs("victim", 1)
    assert wait_for(lambda: "O up\n" in read_log(run), timeout=60)
    worker.kill()
    run.refresh_from_db()
    docker_engine.api.remove_container(run.container_id, force=True)
    worker.start()
    assert wait_for(lambda: all_final([run]), timeout=60), worker.log.read_text()[-3000:]
    run.refresh_from_db()
    assert run.status == Status.FAILED
    assert run.failure_reason == PipelineRun.FailureReason.LOST


def test_a_run_that_ended_while_no_worker_watched_is_finalised_from_its_exit_code(
    make_pipeline, worker, docker_engine
):
    make_pipeline(
        "short",
        main="import sys, time\nprint('start', flush=True)\ntime.sleep(1)\n"
        "print('end while nobody watched', flush=True)\nsys.exit(4)\n",
    )
    discover()
    worker.start()
    (run,) = queue_runs("short", 1)
    assert wait_for(lambda: "O start\n" in read_log(run), timeout=60)
    worker.kill()
    run.refresh_from_db()
    assert wait_for(
        lambda: (
            docker_engine.api.inspect_container(run.container_id)["State"]["Status"] == "exited"
        ),
        timeout=30,
    )
    ended = docker_engine.api.inspect_container(run.container_id)["State"]["FinishedAt"]
    worker.start()
    assert wait_for(lambda: all_final([run]), timeout=60), worker.log.read_text()[-3000:]
    run.refresh_from_db()
    assert run.status == Status.FAILED
    assert run.exit_code == 4
    # Its end is when the container ended, not when a worker came to notice.
    assert run.finished_at == docker_timestamp(ended)[1]
    assert output_lines(run) == ["start", "end while nobody watched"]
    assert "re-attached to the run (exited)" in log_text(run)


def test_two_worker_clusters_never_execute_a_run_twice(make_pipeline, settings, tmp_path):
    """Nor start a chained run twice: each upstream's end starts its downstream once."""
    settings.MAX_CONCURRENT_RUNS = 4
    make_pipeline(
        "once",
        main="import time\nprint('ran', flush=True)\ntime.sleep(0.5)\n",
        config={"downstream_triggers": [{"pipeline": "after"}]},
    )
    make_pipeline("after", main="print('followed')\n")
    discover()
    first, second = Worker(settings, tmp_path / "a"), Worker(settings, tmp_path / "b")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first.start()
    second.start()
    try:
        runs = queue_runs("once", 8)
        assert wait_for(lambda: all_final(runs), timeout=120), first.log.read_text()[-2000:]
        chained = PipelineRun.objects.filter(pipeline__name="after")
        assert wait_for(lambda: chained.count() == 8 and all_final(list(chained)), timeout=120)
    finally:
        first.kill()
        second.kill()
    for run in PipelineRun.objects.filter(pk__in=[r.pk for r in runs]):
        assert run.status == Status.SUCCEEDED
        assert output_lines(run) == ["ran"]  # executed exactly once
        assert log_text(run).count(" S starting once") == 1
        (link,) = run.chain_links.all()  # started its downstream exactly once
        assert link.downstream.status == Status.SUCCEEDED
        assert output_lines(link.downstream) == ["followed"]


def test_a_due_retry_is_started_by_the_worker(make_pipeline, worker):
    make_pipeline(
        "again",
        main="import os, sys\nprint('attempt', os.environ['FASTFLOW_ATTEMPT'])\n"
        "sys.exit(0 if os.environ['FASTFLOW_ATTEMPT'] == '2' else 1)\n",
        config={"retry_attempts": 1, "retry_strategy": {"type": "fixed_delay", "delay": 1}},
    )
    discover()
    worker.start()
    (run,) = queue_runs("again", 1)

    def retry_succeeded() -> bool:
        retry = PipelineRun.objects.filter(retry_of=run).first()
        return retry is not None and retry.status == Status.SUCCEEDED

    assert wait_for(retry_succeeded, timeout=90), worker.log.read_text()[-2000:]
    run.refresh_from_db()
    assert run.status == Status.FAILED


def test_a_dead_process_not_yet_reaped_counts_as_dead():
    """A killed worker's processes may linger as zombies (nobody reaps them in some
    containers): its runs are still handed over at once, not after the lease lapses."""
    child = subprocess.Popen(["true"])
    try:
        assert wait_for(lambda: not process_alive(child.pid), timeout=10)  # a zombie now
        assert process_alive(os.getpid())
    finally:
        child.wait()
