"""What the models pipelines' tests share: copies of the real projects, and a PostgreSQL
database that run containers can reach.

Run containers sit on the run network, whose only way out to this machine is its gateway
address; the machine's PostgreSQL listens on loopback. A small TCP relay on the gateway
address carries a run's connections to it, as a database on another host would be reached.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import socketserver
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from django.conf import settings

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun
from secrets_app.models import Variable
from tests.runs_app.conftest import execute, on_a_host_port, require

EXAMPLES = Path(settings.BASE_DIR) / "examples" / "pipelines"
PROJECTS = Path(__file__).parent / "models_projects"
DBT_SHOP = EXAMPLES / "shop_models"
FFT_SHOP = PROJECTS / "fft_shop"
PG_ADDRESS = ("127.0.0.1", 5432)


def copy_project(
    pipelines_dir: Path,
    source: Path,
    name: str,
    *,
    config: dict | None = None,
    requirements: str | None = None,
    without: tuple[str, ...] = (),
) -> Path:
    """A models project copied into the test's pipelines folder, changed as asked."""
    folder = pipelines_dir / name
    shutil.copytree(source, folder)
    if config is not None:
        (folder / "pipeline.json").write_text(json.dumps(config))
    if requirements is not None:
        (folder / "requirements.txt").write_text(requirements)
    for relative in without:
        (folder / relative).unlink()
    return folder


def run_models(name: str, **parameters: str) -> PipelineRun:
    """Discover, queue a run of `name` with these run values, follow it to its end."""
    discover()
    pipeline = Pipeline.objects.get(name=name)
    assert pipeline.status == "ok", pipeline.error_messages
    run = PipelineRun.enqueue(pipeline, trigger=PipelineRun.Trigger.CLI, parameters=parameters)
    return execute(run)


def steps_by_name(run: PipelineRun) -> dict[str, object]:
    return {step.name: step for step in run.steps.all()}


class _Relay(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Pipe(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with socket.create_connection(PG_ADDRESS, timeout=10) as upstream:
            upstream.settimeout(None)
            forward = threading.Thread(target=_copy, args=(upstream, self.request), daemon=True)
            forward.start()
            _copy(self.request, upstream)
            forward.join(timeout=5)


def _copy(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


@dataclass
class RunDatabase:
    host: str  # as a run container reaches it
    port: int
    name: str

    def connect(self):
        import psycopg

        return psycopg.connect(
            host=PG_ADDRESS[0], port=PG_ADDRESS[1], user="postgres", dbname=self.name
        )


@pytest.fixture(name="run_database")
def run_database_fixture(docker_engine) -> Iterator[RunDatabase]:
    """A fresh PostgreSQL database, reachable from run containers through a relay."""
    import psycopg

    from runs_app.executors.layout import ensure_run_network

    try:
        admin = psycopg.connect(
            host=PG_ADDRESS[0], port=PG_ADDRESS[1], user="postgres", autocommit=True
        )
    except psycopg.OperationalError:
        require(False, "PostgreSQL on 127.0.0.1:5432")
    ensure_run_network(docker_engine.api)
    network = docker_engine.api.inspect_network(settings.RUN_NETWORK)
    gateway = network["IPAM"]["Config"][0]["Gateway"]
    relay = on_a_host_port(partial(_Relay, RequestHandlerClass=_Pipe), gateway)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    name = f"models_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield RunDatabase(gateway, relay.server_address[1], name)
    finally:
        relay.shutdown()
        relay.server_close()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def store_variable(pipeline_name: str, name: str, value: str, *, secret: bool) -> None:
    """A stored secret (encrypted) or parameter of one pipeline; its runs get it."""
    discover()
    kind = Variable.Kind.SECRET if secret else Variable.Kind.PARAMETER
    variable = Variable(name=name, kind=kind, pipeline=Pipeline.objects.get(name=pipeline_name))
    variable.set_value(value)
    variable.save()


@pytest.fixture(name="newer_python_image")
def newer_python_image_fixture(docker_engine) -> str:
    """The worker image PYTHON_IMAGES names for 3.13 (FastFlowTransform needs 3.12+)."""
    from docker.errors import ImageNotFound

    image = settings.PYTHON_IMAGES["3.13"]
    try:
        docker_engine.images.get(image)
    except ImageNotFound:
        require(False, f"the worker image {image} (SUITE=trixie build-offline.sh)")
    return image
