"""Hostile pipelines on every isolating executor — Docker (containers made for their run
and pooled ones) and the sandbox: each ends as its own run's failure (or is simply refused
what it tries), with a reason a person understands, and nothing of it reaches the worker,
the host or another run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.executors.sandbox import places
from runs_app.executors.sandbox.cgroups import RunCgroup
from runs_app.executors.sandbox.network import RunNetwork
from runs_app.follow import wait_for
from runs_app.models import PipelineRun
from tests.runs_app.conftest import (
    execute,
    log_text,
    on_a_host_port,
    output_lines,
    read_log,
    run_now,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("runs_setup")]

Status, Reason = PipelineRun.Status, PipelineRun.FailureReason
# Where each hostile pipeline runs: a container made for its run, a pooled one, a sandbox.
DOCKER = {"docker": ("docker", "fresh"), "pooled": ("docker", "pooled")}
ISOLATIONS = {**DOCKER, "sandbox": ("sandbox", "")}


def pytest_generate_tests(metafunc):
    if "container" in metafunc.fixturenames:
        only_docker = metafunc.definition.get_closest_marker("docker_only")
        chosen = DOCKER if only_docker else ISOLATIONS
        metafunc.parametrize(
            ("executor", "container"), list(chosen.values()), ids=list(chosen), indirect=True
        )


@pytest.fixture(autouse=True)
def container(request, executor):
    """The pooled case: runs of the test start in pooled containers."""
    if request.param == "pooled":
        request.getfixturevalue("pooled")
    return request.param


docker_only = pytest.mark.docker_only


def place_of(run: PipelineRun) -> int:
    """A sandboxed run's place (its handle: sandbox:<pid>:<place>)."""
    return int(run.container_id.rsplit(":", 1)[1])


ROUTE_TRICKS = {
    # The worker never opens the file: the launcher reads it inside the run, without
    # following links, a regular file of at most 256 bytes only.
    "symlink": "os.symlink('/etc/passwd', path)",
    "big": "open(path, 'w').write('r' * 300)",
    "fifo": "os.mkfifo(path)",
    "folder": "os.mkdir(path)",
    "lines": "open(path, 'w').write('one\\ntwo\\n')",
}
ROUTE_REASONS = {
    "symlink": "it is a symbolic link",
    "big": "it is larger than 256 bytes",
    "fifo": "it is not a regular file",
    "folder": "it is not a regular file",
    "lines": "it holds more than one line",
}


@pytest.mark.parametrize("trick", ROUTE_TRICKS)
def test_a_planted_route_file_is_ignored_with_the_reason(make_pipeline, trick):
    main = f"import os\npath = os.environ['FASTFLOW_ROUTE_FILE']\n{ROUTE_TRICKS[trick]}\n"
    run = run_now(make_pipeline, f"route_{trick}", main)
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert run.route == ""
    assert f"FASTFLOW_ROUTE_FILE ignored: {ROUTE_REASONS[trick]}" in log_text(run)
    assert "root:" not in log_text(run)


def test_only_known_marker_words_are_fast_flows(make_pipeline):
    main = (
        "import sys\n"
        "print('\\x1efastflow:finished: succeeded', file=sys.stderr)\n"
        "print('\\x1efastflow:note from the pipeline itself', file=sys.stderr)\n"
    )
    run = run_now(make_pipeline, "impostor", main)
    lines = [line.split(" ", 2)[1:] for line in log_text(run).split("\n") if line]
    # An unknown word is the pipeline's own stderr, never a Fast-Flow line.
    assert ["E", "\x1efastflow:finished: succeeded"] in lines
    assert ["S", "finished: succeeded"] in lines  # Fast-Flow's own, once
    assert sum(1 for stream, text in lines if text.endswith("finished: succeeded")) == 2


def test_output_without_newlines_is_cut_and_capped(make_pipeline, settings):
    settings.LOG_MAX_SIZE_MB = 1
    run = run_now(
        make_pipeline,
        "no_newline",
        "import sys\nfor _ in range(64):\n"
        "    sys.stdout.write('n' * 65536)\n    sys.stdout.flush()\n",
    )
    assert run.status == Status.FAILED
    assert run.failure_reason == Reason.LOG_LIMIT
    longest = max(len(line) for line in log_text(run).split("\n"))
    assert longest <= 64 * 1024 + 40  # cut into lines of 64 KiB (and a timestamp)


# Hostile pipelines that every executor meets (test_swarm_lab.py too).
FORK_BOMB = (
    "import os, time\n"
    "children = 0\n"
    "while True:\n"
    "    pid = os.fork()\n"
    "    if pid == 0:\n"
    "        time.sleep(30)\n"
    "        os._exit(0)\n"
    "    children += 1\n"
)
TMP_FILLER = (
    "block = b'f' * (1024 * 1024)\n"
    "with open('/tmp/fill', 'wb') as f:\n    while True:\n        f.write(block)\n"
)
MEMORY_HOG = "hog = []\nwhile True:\n    hog.append(bytearray(16 * 1024 * 1024))\n"


def connection_probe(address: str) -> str:
    """A run that tries to reach port 8765 at `address`: prints connected, or refused."""
    return (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('{address}', 8765), timeout=3)\n"
        "    print('connected')\n"
        "except OSError as exc:\n"
        "    print('refused', type(exc).__name__)\n"
    )


def test_a_fork_bomb_hits_the_process_limit_and_fails_alone(make_pipeline, settings):
    settings.RUN_PIDS_LIMIT = 32
    run = run_now(make_pipeline, "forker", FORK_BOMB, config={"timeout": 60})
    assert run.status == Status.FAILED, log_text(run)
    assert run.failure_reason == Reason.EXIT_CODE
    assert "limit of 32 processes and threads (RUN_PIDS_LIMIT)" in run.error_message


def test_filling_tmp_fails_the_run_saying_its_space_is_full(make_pipeline, settings):
    settings.RUN_TMPFS_SIZE_MB = 16
    run = run_now(make_pipeline, "filler", TMP_FILLER)
    assert run.status == Status.FAILED, log_text(run)
    assert "its writable space is full" in run.error_message
    assert "RUN_TMPFS_SIZE_MB" in run.error_message


def test_a_memory_hog_is_killed_as_out_of_memory(make_pipeline):
    run = run_now(make_pipeline, "hog", MEMORY_HOG, config={"mem_hard_limit": "96m"})
    assert run.status == Status.FAILED, log_text(run)
    assert run.failure_reason == Reason.OUT_OF_MEMORY
    assert "96 MiB" in run.error_message or "96.0 MiB" in run.error_message


def test_every_run_gets_the_instance_limits_and_no_more(make_pipeline, executor, settings):
    settings.RUN_MEMORY_LIMIT = 256 * 1024**2
    settings.RUN_CPU_LIMIT = 1.0
    make_pipeline(
        "greedy",
        main="import time\nprint('up', flush=True)\ntime.sleep(30)\n",
        config={"mem_hard_limit": "8g", "cpu_hard_limit": 4},
    )
    make_pipeline("plain", main="import time\nprint('up', flush=True)\ntime.sleep(30)\n")
    discover()
    for name, note in (("greedy", True), ("plain", False)):
        run = PipelineRun.enqueue(Pipeline.objects.get(name=name), trigger="manual")
        follower = threading.Thread(target=execute, args=(run,), daemon=True)
        follower.start()
        assert wait_for(lambda run=run: "O up\n" in read_log(run), timeout=60)
        run.refresh_from_db()
        assert applied_limits(run, executor) == (256 * 1024**2, 1.0)
        text = log_text(run)
        assert ("above this instance's RUN_MEMORY_LIMIT" in text) is note
        assert ("above this instance's RUN_CPU_LIMIT" in text) is note
        run.request_cancel()
        follower.join(timeout=60)


def applied_limits(run: PipelineRun, executor: str) -> tuple[int, float]:
    """(memory bytes, CPU cores) as the engine or the kernel holds them for the run."""
    if executor == "sandbox":
        cgroup = RunCgroup(places.cgroup_name(place_of(run)))
        memory = int(cgroup._read("memory", "memory.limit_in_bytes"))
        quota = int(cgroup._read("cpu", "cpu.cfs_quota_us")) / int(
            cgroup._read("cpu", "cpu.cfs_period_us")
        )
        return memory, quota
    import docker

    host = docker.from_env().api.inspect_container(run.container_id)["HostConfig"]
    return host["Memory"], host["NanoCpus"] / 1e9


def run_address(run: PipelineRun, executor: str) -> str:
    """The address another run would try to reach this one at."""
    if executor == "sandbox":
        return str(RunNetwork(place_of(run)).address)
    import docker

    networks = docker.from_env().api.inspect_container(run.container_id)["NetworkSettings"]
    return next(iter(networks["Networks"].values()))["IPAddress"]


LISTENER = (
    "import socket\n"
    "server = socket.create_server(('0.0.0.0', 8765))\n"
    "print('listening', flush=True)\n"
    "server.settimeout(20)\n"
    "try:\n"
    "    server.accept()\n"
    "    print('reached')\n"
    "except OSError:\n"
    "    print('nobody came')\n"
)


def test_runs_cannot_reach_each_other(make_pipeline, executor):
    make_pipeline("listener", main=LISTENER)
    discover()
    server = PipelineRun.enqueue(Pipeline.objects.get(name="listener"), trigger="manual")
    follower = threading.Thread(target=execute, args=(server,), daemon=True)
    follower.start()
    assert wait_for(lambda: "O listening\n" in read_log(server), timeout=60)
    server.refresh_from_db()
    caller = run_now(make_pipeline, "caller", connection_probe(run_address(server, executor)))
    assert caller.status == Status.SUCCEEDED, log_text(caller)
    assert output_lines(caller)[0].startswith("refused")
    server.request_cancel()
    follower.join(timeout=60)


@docker_only
def test_a_run_network_that_lets_containers_meet_is_refused(make_pipeline, docker_engine, settings):
    name = f"fastflow-test-open-{os.getpid()}"
    docker_engine.api.create_network(name, driver="bridge")  # ICC on: made by someone else
    try:
        settings.RUN_NETWORK = name
        run = run_now(make_pipeline, "open", "print('should not run')\n")
    finally:
        # A pool keeper that read the setting as it changed may have made a container on
        # it (no run is handed such a container: the run checks the network first).
        for endpoint in docker_engine.api.inspect_network(name).get("Containers") or {}:
            docker_engine.api.remove_container(endpoint, force=True)
        docker_engine.api.remove_network(name)
    assert run.status == Status.FAILED
    assert "lets its containers reach each other" in run.error_message
    assert "should not run" not in log_text(run)


def test_the_shared_cache_is_read_only_and_the_next_run_is_unaffected(make_pipeline, settings):
    """A run links its packages from the shared cache: it can change neither the cache
    nor the package files another pipeline's run will execute."""
    tamper = (
        "import os, pathlib, six\n"
        "print('six from', os.path.realpath(six.__file__))\n"
        "for target in (os.path.realpath(six.__file__), '/uv-cache/archive-v0/planted.py'):\n"
        "    try:\n"
        "        with open(target, 'a') as handle:\n"
        "            handle.write('raise SystemExit(99)\\n')\n"
        "        print('wrote', target)\n"
        "    except OSError as exc:\n"
        "        print('refused', exc.errno)\n"
    )
    cache = Path(settings.UV_CACHE_DIR)
    first = run_now(make_pipeline, "tamper", tamper, requirements="six==1.16.0\n")
    assert first.status == Status.SUCCEEDED, log_text(first)
    assert [line for line in output_lines(first) if line.startswith(("wrote", "refused"))] == [
        "refused 30",  # EROFS: the shared cache is mounted read-only
        "refused 30",
    ]
    assert not list(cache.rglob("planted.py"))
    second = run_now(
        make_pipeline,
        "victim",
        "import six\nprint('six', six.__version__)\n",
        requirements="six==1.16.0\n",
    )
    assert second.status == Status.SUCCEEDED, log_text(second)
    assert output_lines(second, streams="O")[-1] == "six 1.16.0"
    assert os.stat(cache).st_uid == 10001  # warm-ups write it as the run user, never root


HOST_PROBE = """
import socket
gateway = next(
    socket.inet_ntoa(bytes.fromhex(fields[2])[::-1])
    for fields in (line.split() for line in open('/proc/net/route').readlines()[1:])
    if fields[1] == '00000000'
)
for address, port in [*((a, CLOSED) for a in [*ADDRESSES, gateway, '127.0.0.1']),
                      (gateway, ALLOWED)]:
    try:
        socket.create_connection((address, port), timeout=3)
        print('reached', port == ALLOWED and 'allowed' or address)
    except OSError as exc:
        print('refused', type(exc).__name__)
"""


def host_addresses() -> list[str]:
    """This machine's own IPv4 addresses but loopback (the default route's, Docker's bridges)."""
    shown = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    found = [line.split()[3].split("/")[0] for line in shown.splitlines()]
    return [address for address in found if not address.startswith("127.")]


def test_a_run_reaches_of_the_host_only_the_ports_allowed(make_pipeline):
    """Not the orchestrator on the host's loopback, nor a service listening on all the host's
    addresses (the run's own gateway included) — but a port RUN_HOST_PORTS names."""
    with (
        socket.create_server(("0.0.0.0", 0)) as closed,  # noqa: S104 - the point of the test
        on_a_host_port(socket.create_server, "0.0.0.0") as allowed,  # noqa: S104
    ):
        addresses = host_addresses()
        main = (
            HOST_PROBE.replace("ADDRESSES", json.dumps(addresses))
            .replace("CLOSED", str(closed.getsockname()[1]))
            .replace("ALLOWED", str(allowed.getsockname()[1]))
        )
        run = run_now(make_pipeline, "host_prober", main)
    assert run.status == Status.SUCCEEDED, log_text(run)
    refused = ["refused ConnectionRefusedError"] * (len(addresses) + 2)
    assert output_lines(run) == [*refused, "reached allowed"]
