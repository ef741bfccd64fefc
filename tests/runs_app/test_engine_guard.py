"""The engine guard, on the real engine: every forbidden container-create and call is
refused with its reason, containers Fast-Flow did not make are off limits, and a whole
run — create, start, logs, stats, wait, remove — passes through it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest
from django.conf import settings as django_settings
from docker.errors import APIError

from engine_guard.policy import Allowance, check_create
from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.follow import wait_for
from runs_app.models import PipelineRun
from runs_app.worker.execution import worker_id
from runs_app.worker.pool_keeper import PoolKeeper
from tests.runs_app.conftest import execute, free_port, log_text
from tests.runs_app.test_worker import kill_group

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("runs_setup")]
CA = "/etc/ssl/certs"


@pytest.fixture
def guard(settings, tmp_path, docker_engine):
    """The guard as a process of its own, allowing what this test's runs need."""
    port = free_port()
    allowed = [
        f"{settings.PIPELINES_DIR}:ro",
        f"{settings.DATA_DIR}:ro",
        f"{settings.UV_CACHE_DIR}:rw",
        f"{CA}:ro",
    ]
    if settings.RUN_CA_BUNDLE:
        allowed.append(f"{os.path.realpath(settings.RUN_CA_BUNDLE)}:ro")
    process = subprocess.Popen(
        [sys.executable, "-m", "engine_guard"],
        cwd=django_settings.BASE_DIR,
        env={**os.environ, "GUARD_LISTEN": f"127.0.0.1:{port}",
             "GUARD_ALLOWED_MOUNTS": ",".join(allowed),
             "GUARD_IMAGES": django_settings.WORKER_IMAGE},
        stdout=open(tmp_path / "guard.log", "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True,
    )  # fmt: skip
    assert wait_for(lambda: _listening(port), timeout=20), (tmp_path / "guard.log").read_text()
    client = docker.APIClient(base_url=f"tcp://127.0.0.1:{port}", timeout=30)
    assert client.ping()
    yield client
    kill_group(process)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def create(client, tmp_path, **host) -> str:
    """A container-create through the guard, as Fast-Flow makes them, changed by `host`."""
    user = host.pop("user", "10001")
    defaults = {"cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"], "read_only": True}
    config = client.create_host_config(**{**defaults, **host})
    made = client.create_container(
        django_settings.WORKER_IMAGE, command=["true"], user=user, host_config=config,
        labels={"fastflow.run_id": "guard-test"},
    )  # fmt: skip
    return made["Id"]


FORBIDDEN = {
    "privileged": ({"privileged": True}, "privileged mode"),
    "capability": ({"cap_add": ["SYS_ADMIN"]}, "added capabilities"),
    "no cap drop": ({"cap_drop": []}, "drop all capabilities"),
    "device": ({"devices": ["/dev/kmsg:/dev/kmsg:r"]}, "devices are not allowed"),
    "host network": ({"network_mode": "host"}, "NetworkMode 'host'"),
    "host pid": ({"pid_mode": "host"}, "PidMode 'host'"),
    "host ipc": ({"ipc_mode": "host"}, "IpcMode 'host'"),
    "seccomp off": (
        {"security_opt": ["no-new-privileges:true", "seccomp=unconfined"]},
        "security options",
    ),
    "apparmor off": ({"security_opt": ["apparmor=unconfined"]}, "security options"),
    "root": ({"user": "0"}, "non-root user"),
    "host root": ({"binds": ["/:/host:ro"]}, "outside the allowed paths"),
    "docker socket": ({"binds": ["/var/run/docker.sock:/s"]}, "outside the allowed paths"),
    "sysctl": ({"sysctls": {"net.ipv4.ip_forward": "1"}}, "Sysctls"),
    "published port": ({"port_bindings": {80: 8080}}, "PortBindings"),
}


@pytest.mark.parametrize("case", FORBIDDEN)
def test_a_forbidden_container_is_refused_with_its_reason(guard, tmp_path, case):
    host, reason = FORBIDDEN[case]
    with pytest.raises(APIError) as refused:
        create(guard, tmp_path, **host)
    assert refused.value.status_code == 403
    assert "refused by the engine guard" in str(refused.value) and reason in str(refused.value)


def test_writable_binds_only_where_allowed_and_links_are_followed(guard, settings, tmp_path):
    checkout = settings.PIPELINES_DIR / "p"
    checkout.mkdir(parents=True)
    with pytest.raises(APIError, match="must be read-only"):
        create(guard, tmp_path, binds=[f"{checkout}:/code:rw"])
    (settings.PIPELINES_DIR / "escape").symlink_to("/")
    with pytest.raises(APIError, match="outside the allowed paths"):
        create(guard, tmp_path, binds=[f"{settings.PIPELINES_DIR / 'escape'}:/code:ro"])
    allowed = create(guard, tmp_path, binds=[f"{checkout}:/code:ro"])
    guard.remove_container(allowed, force=True)


def test_calls_runs_do_not_need_are_refused(guard, docker_engine):
    refused = {
        "pull": lambda: guard.pull("busybox", tag="latest"),
        "volume": lambda: guard.create_volume("fastflow-guard-test"),
        "list everything": lambda: guard.containers(all=True),
        "a name that looks like the label": lambda: guard.containers(
            all=True, filters={"name": "fastflow.run_id"}
        ),
        "swarm": lambda: guard.inspect_swarm(),
        "every event": lambda: guard._raise_for_status(
            guard._get(guard._url("/events"), params={"until": int(time.time()) + 1})
        ),
        "another image": lambda: guard.create_container("debian:bookworm", command=["true"]),
    }
    for name, call in refused.items():
        with pytest.raises(APIError) as error:
            call()
        assert error.value.status_code == 403, name


def test_containers_fastflow_did_not_make_are_off_limits(guard, docker_engine):
    foreign = docker_engine.api.create_container(django_settings.WORKER_IMAGE, command=["true"])
    try:
        for call in (guard.inspect_container, guard.start, guard.remove_container):
            with pytest.raises(APIError, match="not made by Fast-Flow"):
                call(foreign["Id"])
        with pytest.raises(APIError, match="is not a call runs need"):
            guard.exec_create(foreign["Id"], ["true"])  # exec: never, on any container
    finally:
        docker_engine.api.remove_container(foreign["Id"], force=True)


def test_a_whole_run_passes_through_the_guard(guard, make_pipeline, monkeypatch, tmp_path):
    make_pipeline("guarded", main="import sys\nprint('through the guard')\nsys.exit(0)\n")
    discover()
    run = PipelineRun.enqueue(Pipeline.objects.get(name="guarded"), trigger="manual")
    with monkeypatch.context() as patch:  # (the clean-up after the test asks the engine)
        patch.setenv("DOCKER_HOST", guard.base_url.replace("http://", "tcp://"))
        run = execute(run)
    assert run.status == PipelineRun.Status.SUCCEEDED, log_text(run)
    assert "through the guard" in log_text(run)
    calls = (tmp_path / "guard.log").read_text()
    for call in ("POST /containers/create", "/start", "GET /containers/", "/logs", "/stats",
                 "DELETE /containers/"):  # fmt: skip
        assert call in calls, calls
    assert "refused" not in calls


def test_a_run_in_a_pooled_container_passes_through_the_guard(
    guard, make_pipeline, monkeypatch, settings, tmp_path
):
    make_pipeline("pooled", main="print('pooled, through the guard')\n")
    discover()
    run = PipelineRun.enqueue(Pipeline.objects.get(name="pooled"), trigger="manual")
    settings.RUN_POOL_SIZE = 1
    with monkeypatch.context() as patch:
        patch.setenv("DOCKER_HOST", guard.base_url.replace("http://", "tcp://"))
        keeper = PoolKeeper(worker_id(), size=1)
        keeper.start()
        try:
            ready = set()
            assert wait_for(lambda: ready.update(running(keeper)) or ready, timeout=60)
            run = execute(run)
        finally:
            keeper.stop()
    assert run.status == PipelineRun.Status.SUCCEEDED, log_text(run)
    assert run.container_id in ready
    calls = (tmp_path / "guard.log").read_text()
    for call in ("GET /events", "/rename", "POST /containers/create", "DELETE /containers/"):
        assert call in calls, calls
    assert "refused" not in calls


def running(keeper: PoolKeeper) -> set[str]:
    return {c["Id"] for c in keeper.idle(mine=True) if c["State"] == "running"}


def test_the_policy_reads_both_ways_of_binding(tmp_path):
    allowances = Allowance.parse(f"{tmp_path}:ro")
    body = b'{"User": "10001", "HostConfig": {"CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges"], "Mounts": [{"Type": "volume", "Source": "x", "Target": "/x"}]}}'  # noqa: E501
    assert "volume mounts are not allowed" in check_create(body, allowances)
    body = b'{"User": "10001", "HostConfig": {"CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges"], "Binds": ["named:/x"]}}'  # noqa: E501
    assert "not volumes" in check_create(body, allowances)
    assert check_create(b"not json", allowances) == "the body is not JSON"
    assert Path(tmp_path).is_dir()


def test_the_most_specific_allowance_decides(tmp_path):
    """DATA_DIR read-only, its uv cache and the pipelines' data folders writable: a writable
    mount of a data folder passes, one of DATA_DIR itself does not."""
    data = tmp_path / "data"
    (data / "pipeline-data" / "shop").mkdir(parents=True)
    allowances = Allowance.parse(f"{data}:ro,{data}/pipeline-data:rw")

    def create(source: Path, read_only: bool) -> bytes:
        mount = {"Type": "bind", "Source": str(source), "Target": "/data", "ReadOnly": read_only}
        host = {"CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges"], "Mounts": [mount]}
        return json.dumps({"User": "10001", "HostConfig": host}).encode()

    assert check_create(create(data / "pipeline-data" / "shop", False), allowances) == ""
    assert "must be read-only" in check_create(create(data, False), allowances)
    assert check_create(create(data, True), allowances) == ""
