"""Fixtures for running pipelines for real: a Docker engine, the worker image, a uv cache."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from functools import partial
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import TypeVar

import pytest
from django.conf import settings as django_settings
from django.db import connection

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.executors import ExecutorError
from runs_app.executors.pool import current_profile, ready_containers
from runs_app.follow import wait_for
from runs_app.logs import LogWriter, spool_path
from runs_app.models import PipelineRun
from runs_app.stored_logs import log_text as stored_log_text
from runs_app.warmup import needs_warming
from runs_app.worker.execution import execute_run, worker_id
from runs_app.worker.pool_keeper import PoolKeeper
from runs_app.worker.warming import warm


def require(available: bool, what: str) -> None:
    """Skip where a real part is missing on a developer's machine; never in CI."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI (.ci/run installs it)")
    pytest.skip(f"{what} is not available on this machine")


def redis_database(number: int) -> str:
    """The URL of a Redis database on the local server (tests side by side share it: each
    keeps to its own keys)."""
    import redis

    url = f"redis://127.0.0.1:6379/{number}"
    try:
        redis.Redis.from_url(url).ping()
    except redis.RedisError:
        require(False, "a Redis server on 127.0.0.1:6379")
    return url


class Hooks(BaseHTTPRequestHandler):
    """A local HTTP server's handler that keeps what was posted to it: (path, JSON body)."""

    received: list[tuple[str, dict]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Hooks.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hooks():
    Hooks.received = []
    server = HTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


class PrivateRedis:
    """A Redis server of the test's own (restarting the shared one would disturb the tests
    running beside it), on a free loopback port, keeping nothing on disk."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        assert wait_for(answers, timeout=10), "the test's Redis did not start"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """As `systemctl restart redis`: every connection ends, every key is gone."""
        self.stop()
        self.start()


@pytest.fixture
def private_redis(tmp_path):
    require(shutil.which("redis-server") is not None, "redis-server")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def docker_engine():
    import docker
    from docker.errors import DockerException, ImageNotFound

    try:
        client = docker.from_env()
        client.ping()
    except DockerException:
        require(False, "a Docker engine")
    try:
        client.images.get(django_settings.WORKER_IMAGE)
    except ImageNotFound:
        require(False, f"the worker image {django_settings.WORKER_IMAGE}")
    return client


@pytest.fixture(scope="session")
def shared_uv_cache(tmp_path_factory):
    """One uv cache for the whole session, as on a real instance."""
    return tmp_path_factory.mktemp("uv_cache")


@pytest.fixture(scope="session")
def sandbox_roots(tmp_path_factory):
    """Worker images unpacked for the sandbox once per session, as once per instance."""
    return tmp_path_factory.mktemp("sandbox_roots")


@pytest.fixture
def executor(request, settings) -> str:
    """The executor under test: docker unless a test is parametrized with "local" too."""
    name = getattr(request, "param", "docker")
    settings.FASTFLOW_EXECUTOR = name
    if name in ("docker", "sandbox"):
        request.getfixturevalue("docker_engine")  # the sandbox unpacks the worker image
    if name == "sandbox":
        from runs_app.executors.sandbox import SandboxExecutor

        problem = SandboxExecutor.unavailable()
        require(not problem, f"the sandbox executor ({problem})")
    return name


# Tests marked with this run once per executor: the follower contract all of them keep.
every_executor = pytest.mark.parametrize("executor", ["docker", "sandbox", "local"], indirect=True)


@pytest.fixture
def runs_setup(
    request, settings, tmp_path, pipelines_dir, shared_uv_cache, sandbox_roots, executor
):
    """Runs of this test start as in production: in pooled containers (a pool of this test's
    own, made when its first run is followed here), or — a test marked `fresh`, or a run no
    pooled container fits — in fresh ones."""
    settings.LOGS_DIR = tmp_path / "logs"
    settings.DATA_DIR = tmp_path / "data"
    settings.UV_CACHE_DIR = shared_uv_cache
    settings.SANDBOX_ROOTS_DIR = sandbox_roots
    settings.RUN_STOP_GRACE_SECONDS = 2
    fresh = executor != "docker" or request.node.get_closest_marker("fresh") is not None
    settings.RUN_POOL_SIZE = 0 if fresh else DEFAULT_POOL_SIZE
    yield
    with POOLS_LOCK:
        while DEFAULT_POOLS:
            keeper = DEFAULT_POOLS.pop()
            ACTIVE_POOLS.remove(keeper)
            keeper.stop()
    if executor != "docker":
        return
    # No container outlives its test.
    import docker
    from docker.errors import APIError

    # Only this test's: tests may run in parallel, and each has its own pipelines folder
    # (and DATA_DIR, where pooled containers get their code).
    client = docker.from_env()
    own = (str(pipelines_dir), str(tmp_path))
    for summary in client.api.containers(all=True, filters={"label": "fastflow.run_id"}):
        sources = [m.get("Source", "") for m in summary.get("Mounts", [])]
        if any(source.startswith(own) for source in sources):
            with contextlib.suppress(APIError):  # already being removed by the executor
                client.api.remove_container(summary["Id"], force=True)


def run_now(
    make_pipeline, name: str, main: str, config: dict | None = None, **files
) -> PipelineRun:
    """Write a pipeline, discover it, queue a run, and execute it in this thread to its end."""
    folder = make_pipeline(name, main=main, config=config, requirements=files.get("requirements"))
    for file_name, content in files.get("extra", {}).items():
        (folder / file_name).write_text(content)
    discover()
    run = PipelineRun.enqueue(Pipeline.objects.get(name=name), trigger=PipelineRun.Trigger.CLI)
    return execute(run)


def queued(make_pipeline, name: str, main: str, config: dict | None = None) -> PipelineRun:
    """Write a pipeline, discover it and queue a run of it (not followed yet)."""
    make_pipeline(name, main=main, config=config)
    discover()
    return PipelineRun.enqueue(Pipeline.objects.get(name=name), trigger="manual")


def in_thread(run: PipelineRun) -> threading.Thread:
    """Follow the run in a thread of its own (`execute`), started."""
    thread = threading.Thread(target=execute, args=(run,), daemon=True)
    thread.start()
    return thread


# The pools of tests running on pooled containers: the default pool of a test's runs
# (made by its first `execute`), and the `pooled` fixture's.
DEFAULT_POOL_SIZE = 2
ACTIVE_POOLS: list[PoolKeeper] = []
DEFAULT_POOLS: list[PoolKeeper] = []
POOLS_LOCK = threading.Lock()


def default_pool() -> None:
    """The test's pool, as a worker keeps one, when its runs take pooled containers."""
    with POOLS_LOCK:
        if ACTIVE_POOLS or not django_settings.RUN_POOL_SIZE:
            return
        if django_settings.FASTFLOW_EXECUTOR != "docker":
            return
        keeper = PoolKeeper(worker_id(), size=django_settings.RUN_POOL_SIZE)
        keeper.start()
        ACTIVE_POOLS.append(keeper)
        DEFAULT_POOLS.append(keeper)


def execute(run: PipelineRun) -> PipelineRun:
    """Claim (unless enqueue's dispatch already did) and follow the run in this thread; with
    a pool, once its requirements are warmed and a container of the current settings is
    ready for it."""
    default_pool()
    for keeper in ACTIVE_POOLS:
        if needs_warming(run.pipeline):
            warm(run.pipeline.pk)  # the cache's folders are part of a pooled container's make
        try:
            profile = current_profile(keeper.executor)
        except ExecutorError:
            break  # no container can be made now: the run says why
        assert wait_for(partial(ready_containers, keeper.executor.api, profile), timeout=60)
    PipelineRun.claim_runs()
    assert PipelineRun.objects.get(pk=run.pk).status == PipelineRun.Status.CLAIMED
    try:
        execute_run(run.pk)
        run.refresh_from_db()
    finally:
        if threading.current_thread() is not threading.main_thread():
            connection.close()  # a test's follower thread: its own connection goes with it
    return run


@pytest.fixture
def pooled(settings, runs_setup):
    """Runs of this test start in pooled containers (and the test fails if one did not)."""
    settings.RUN_POOL_SIZE = 2
    keeper = PoolKeeper(worker_id(), size=2)
    keeper.start()
    with POOLS_LOCK:
        ACTIVE_POOLS.append(keeper)
    yield keeper
    with POOLS_LOCK:
        ACTIVE_POOLS.remove(keeper)
    keeper.stop()
    started = PipelineRun.objects.exclude(container_id="").values_list("container_id", flat=True)
    assert set(started) <= keeper.made, "a run of this test did not start in a pooled container"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_log(run: PipelineRun) -> str:
    """A run's stored log as it is now (records `timestamp stream text\n`); empty before its
    first line. From a test's own thread: its connection is closed after each look."""
    try:
        return stored_log_text(run.pk)
    finally:
        if threading.current_thread() is not threading.main_thread():
            connection.close()


def run_log(run: PipelineRun, **options) -> LogWriter:
    """A writer of `run`'s log that stores its lines when told (`ship()`, `close()`), from
    the test's own thread and transaction."""
    return LogWriter(spool_path(run.public_id), run_id=run.pk, background=False, **options)


def log_text(run: PipelineRun) -> str:
    return stored_log_text(run.pk)


def output_lines(run: PipelineRun, streams: str = "OE") -> list[str]:
    """The pipeline's own output lines (stdout and stderr, or `streams` of them: O, E),
    without timestamps. A stdout line and a stderr line written close together may be
    logged in either order (the engine reads the two pipes apart, as a terminal would not)."""
    return [
        line.split(" ", 2)[2]
        for line in log_text(run).split("\n")[:-1]
        if line.split(" ", 2)[1] in streams
    ]


# The ports of this machine that runs may reach during the tests (RUN_HOST_PORTS, set for the
# whole session by tests/conftest.py): servers the tests start for runs take one of them.
HOST_PORTS = range(47200, 47240)
T = TypeVar("T")


def on_a_host_port(make_server: Callable[[tuple[str, int]], T], host: str) -> T:
    """`make_server((host, port))` at the first port of HOST_PORTS that is free."""
    for port in HOST_PORTS:
        try:
            return make_server((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    raise RuntimeError(f"every port of {HOST_PORTS} is taken")
