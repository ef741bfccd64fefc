"""The swarm executor on a real Docker Swarm: three engines, each in a network namespace of
its own (tests/lab.py), joined in one Swarm — s1 its manager, s2 and s3 workers — each
started as docs/swarm.md asks (no new privileges, no traffic between containers) and with
the worker image loaded. Fast-Flow talks to the manager only.

The Docker executor's lock-down and hostile-pipeline tests hold here too; and placement by
label, cancel, timeout, re-attach after the worker restarts, a node lost mid-run, and
nothing left behind after many runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from docker.errors import APIError

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.executors.layout import LABEL_RUN
from runs_app.follow import wait_for
from runs_app.models import PipelineRun
from tests import lab as lab_module
from tests.runs_app.conftest import execute, in_thread, queued, run_now
from tests.runs_app.test_executors import LOCKDOWN_PROBE, log_text, output_lines
from tests.runs_app.test_hostile import FORK_BOMB, MEMORY_HOG, TMP_FILLER, connection_probe
from tests.runs_app.test_swarm import SERVICE_FORBIDDEN, good_service

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.docker,
    pytest.mark.lab,
    pytest.mark.parametrize("executor", ["swarm"], indirect=True),
    pytest.mark.usefixtures("runs_setup", "on_swarm"),
]
Status, Reason = PipelineRun.Status, PipelineRun.FailureReason
ON_POSTGRES = django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


@pytest.fixture(scope="module")
def swarm():
    if not ON_POSTGRES:
        pytest.skip("the labs run in the PostgreSQL pass (one pass is enough for an engine)")
    if why := lab_module.available():
        pytest.skip(why)
    lab = lab_module.Lab(
        ["s1", "s2", "s3"],
        engine_options=("--no-new-privileges", "--icc=false"),
        bridge="ffswarm0",
        subnet="10.232.0",
    )
    if os.environ.get("FASTFLOW_SWARM_LAB") == "up":  # one a developer keeps up between runs
        for engine in lab.engines:
            engine.node_id = engine.docker(
                "info", "--format", "{{.Swarm.NodeID}}", capture_output=True, text=True
            ).stdout.strip()
        yield lab
        return
    lab.up([django_settings.WORKER_IMAGE])
    lab.swarm()
    yield lab
    lab.down()


@pytest.fixture
def on_swarm(swarm, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", swarm.engines[0].socket)
    yield
    assert_nothing_left(swarm)


def manager(swarm, *args: str) -> str:
    return swarm.engines[0].docker(*args, capture_output=True, text=True, check=True).stdout


def assert_nothing_left(swarm) -> None:
    """No service, secret or config of a run outlives it, nor a container on any node."""
    for kind in ("service", "secret", "config"):
        left = manager(swarm, kind, "ls", "-q", "--filter", f"label={LABEL_RUN}").split()
        assert left == [], f"{kind}s left: {left}"

    def no_containers() -> bool:
        return all(not task_containers(engine) for engine in swarm.engines)

    assert wait_for(no_containers, timeout=90), "a run's container outlived its service"


def task_containers(engine) -> list[str]:
    """The Swarm task containers on one node (none from an engine that is stopped)."""
    listed = engine.docker(
        "ps", "-aq", "--filter", "label=com.docker.swarm.service.name",
        capture_output=True, text=True,
    )  # fmt: skip
    return listed.stdout.split() if listed.returncode == 0 else []


def node_state(swarm, engine) -> str:
    state = manager(swarm, "node", "inspect", "--format", "{{.Status.State}}", engine.node_id)
    return state.strip()


def read_log(run: PipelineRun) -> str:
    return log_text(run) if PipelineRun.objects.filter(pk=run.pk).exists() else ""


def started(make_pipeline, name: str, main: str, config: dict | None = None):
    """A run of a new pipeline, followed in a thread of its own: (run, thread)."""
    run = queued(make_pipeline, name, main, config)
    return run, in_thread(run)


SLEEPER = "import time\nprint('up', flush=True)\ntime.sleep(120)\nprint('woke')\n"


def test_a_run_is_placed_by_the_swarm_and_locked_down(make_pipeline):
    run = run_now(make_pipeline, "probe", LOCKDOWN_PROBE)
    assert run.status == Status.SUCCEEDED, log_text(run)
    lines = output_lines(run)
    assert "uid 10001 gid 10001" in lines
    assert "caps 0000000000000000 no_new_privs 1" in lines
    assert "refused /etc/fastflow-test 30" in lines  # read-only root
    assert "refused /usr/local/bin/x 30" in lines
    assert "wrote /tmp/scratch" in lines
    assert "pid1 /sbin/docker-init" in lines
    assert "with the swarm executor" in log_text(run)


def test_a_pipeline_placed_by_label_runs_on_that_node(make_pipeline, swarm):
    run = run_now(make_pipeline, "pinned", "print('here')\n", config={"placement": {"node": "s2"}})
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert f"placed on Swarm node vm ({swarm.engines[1].node_id[:10]})" in log_text(run)


def test_secrets_reach_the_run_and_never_the_service_spec(make_pipeline, swarm, settings):
    """…and its limits, reservations and constraints are the Swarm's to keep."""
    from secrets_app.models import Variable

    settings.SWARM_CONSTRAINTS = ["node.role==worker"]
    settings.RUN_PIDS_LIMIT = 300
    stored = Variable(name="API_TOKEN", kind=Variable.Kind.SECRET)
    stored.set_value("s3cr3t-value-for-swarm")
    stored.save()
    run, thread = started(
        make_pipeline,
        "secretive",
        "import os, time\nprint('len', len(os.environ['API_TOKEN']), flush=True)\n"
        "time.sleep(120)\n",
        {
            "mem_hard_limit": "256m",
            "cpu_hard_limit": 1,
            "mem_soft_limit": "64m",
            "cpu_soft_limit": 0.25,
            "placement": {"node": "s3"},
        },
    )
    assert wait_for(lambda: "O len 22" in read_log(run), timeout=60), read_log(run)
    run.refresh_from_db()
    inspected = manager(swarm, "service", "inspect", run.container_id)
    assert "s3cr3t" not in inspected and "API_TOKEN" not in inspected
    task = json.loads(inspected)[0]["Spec"]["TaskTemplate"]
    assert task["Resources"]["Limits"] == {
        "MemoryBytes": 256 * 1024**2,
        "NanoCPUs": 1_000_000_000,
        "Pids": 300,
    }
    assert task["Resources"]["Reservations"] == {
        "MemoryBytes": 64 * 1024**2,
        "NanoCPUs": 250_000_000,
    }
    assert task["Placement"]["Constraints"] == ["node.role==worker", "node.labels.node==s3"]
    secrets = json.loads(manager(swarm, "secret", "ls", "--format", "{{json .}}") or "null")
    assert secrets  # the run's own, while it runs
    run.request_cancel()
    thread.join(timeout=60)
    run.refresh_from_db()
    assert run.status == Status.CANCELLED, log_text(run)
    assert "s3cr3t" not in log_text(run)


def test_cancel_removes_the_service(make_pipeline):
    run, thread = started(make_pipeline, "sleepy", SLEEPER)
    assert wait_for(lambda: "O up" in read_log(run), timeout=60), read_log(run)
    run.request_cancel()
    thread.join(timeout=60)
    run.refresh_from_db()
    assert run.status == Status.CANCELLED, log_text(run)
    assert "woke" not in log_text(run)


def test_timeout_removes_the_service(make_pipeline):
    run = run_now(make_pipeline, "late", SLEEPER, config={"timeout": 3})
    assert run.status == Status.TIMED_OUT, log_text(run)
    assert "O up" in log_text(run)


def test_a_memory_hog_is_killed_as_out_of_memory(make_pipeline):
    run = run_now(make_pipeline, "hog", MEMORY_HOG, config={"mem_hard_limit": "96m"})
    assert run.status == Status.FAILED, log_text(run)
    assert run.failure_reason == Reason.OUT_OF_MEMORY, log_text(run)


def test_a_fork_bomb_hits_the_process_limit(make_pipeline, settings):
    settings.RUN_PIDS_LIMIT = 32
    run = run_now(make_pipeline, "forker", FORK_BOMB, config={"timeout": 60})
    assert run.status == Status.FAILED, log_text(run)
    assert "limit of 32 processes and threads (RUN_PIDS_LIMIT)" in run.error_message


def test_filling_tmp_fails_the_run_saying_its_space_is_full(make_pipeline, settings):
    settings.RUN_TMPFS_SIZE_MB = 16
    run = run_now(make_pipeline, "filler", TMP_FILLER)
    assert run.status == Status.FAILED, log_text(run)
    assert "its writable space is full" in run.error_message


def test_samples_come_from_inside_the_run(make_pipeline):
    main = (
        "import time\nx = bytearray(64 * 1024 * 1024)\n"
        "end = time.time() + 3\nwhile time.time() < end:\n    pass\n"
    )
    run = run_now(make_pipeline, "busy", main)
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert run.peak_memory_bytes and run.peak_memory_bytes >= 64 * 1024**2
    assert run.peak_cpu_percent and run.peak_cpu_percent > 20


def test_runs_cannot_reach_each_other(make_pipeline, swarm):
    listener = (
        "import socket, subprocess\n"
        "server = socket.create_server(('0.0.0.0', 8765))\n"
        "address = socket.gethostbyname(socket.gethostname())\n"
        "print('listening', address, flush=True)\n"
        "server.settimeout(30)\n"
        "try:\n"
        "    server.accept()\n"
        "    print('reached')\n"
        "except OSError:\n"
        "    print('nobody came')\n"
    )
    on_s2 = {"placement": {"node": "s2"}}
    server, thread = started(make_pipeline, "listener", listener, on_s2)
    assert wait_for(lambda: "O listening" in read_log(server), timeout=60), read_log(server)
    address = read_log(server).split("O listening ", 1)[1].split()[0]
    caller = run_now(make_pipeline, "caller", connection_probe(address), config=on_s2)
    assert caller.status == Status.SUCCEEDED, log_text(caller)
    assert output_lines(caller)[0].startswith("refused"), log_text(caller)
    server.request_cancel()
    thread.join(timeout=60)


def test_requirements_are_warmed_on_every_node_then_linked_read_only(make_pipeline, swarm):
    tamper = (
        "import os, six\n"
        "print('six', six.__version__)\n"
        "try:\n"
        "    open(os.path.realpath(six.__file__), 'a').write('x')\n"
        "    print('wrote the cache')\n"
        "except OSError as exc:\n"
        "    print('refused', exc.errno)\n"
    )
    for node in ("s2", "s3"):
        run = run_now(
            make_pipeline,
            f"six-{node}",
            tamper,
            config={"placement": {"node": node}},
            requirements="six==1.16.0\n",
        )
        assert run.status == Status.SUCCEEDED, log_text(run)
        assert output_lines(run)[-2:] == ["six 1.16.0", "refused 30"], log_text(run)


TICKS = "import time\nfor i in range({n}):\n    print('tick', i, flush=True)\n    time.sleep(0.5)\n"


def test_a_worker_killed_mid_run_is_replaced_and_the_log_stays_whole(
    make_pipeline, swarm, settings, tmp_path
):
    """The task goes on without its worker; the next worker re-attaches and reads on after
    the last stored line: every line once."""
    from tests.runs_app.test_worker import Worker

    run = queued(make_pipeline, "ticker", TICKS.format(n=16))
    worker = Worker(settings, tmp_path)
    worker.env = {"FASTFLOW_EXECUTOR": "swarm", "DOCKER_HOST": swarm.engines[0].socket}
    worker.start()
    try:
        assert wait_for(lambda: "O tick 3" in read_log(run), timeout=60), read_log(run)
        worker.kill()
        run.refresh_from_db()
        assert manager(swarm, "service", "ls", "-q", "--filter", f"name={run.container_id}")
        worker.start()
        assert wait_for(
            lambda: PipelineRun.objects.get(pk=run.pk).status in PipelineRun.FINAL_STATUSES,
            timeout=120,
        )
    finally:
        worker.stop()
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert output_lines(run) == [f"tick {i}" for i in range(16)]
    assert "re-attached to the run" in log_text(run)


def test_a_node_lost_mid_run_loses_the_run_which_is_retried_once(make_pipeline, swarm):
    """s3's engine stops: Swarm gives its task up, Fast-Flow removes the service (no second
    task, ever) and retries the run by its policy; pinned to s3, the retry waits — saying
    why — until s3 is back."""
    s3 = swarm.engines[2]
    config = {
        "placement": {"node": "s3"},
        "retry_attempts": 1,
        "retry_strategy": {"type": "fixed_delay", "delay": 0},
    }
    run, thread = started(make_pipeline, "fragile", SLEEPER, config)
    assert wait_for(lambda: "O up" in read_log(run), timeout=60), read_log(run)
    try:
        swarm.stop(s3)
        thread.join(timeout=120)
        run.refresh_from_db()
        assert run.status == Status.FAILED and run.failure_reason == Reason.LOST, log_text(run)
        assert "left (or its engine stopped)" in run.error_message
        assert manager(swarm, "service", "ls", "-q", "--filter", f"label={LABEL_RUN}") == ""
        retry = PipelineRun.objects.get(retry_of=run)
        retry_thread = in_thread(retry)
        assert wait_for(lambda: "cannot place it yet" in read_log(retry), timeout=60)
        retry = PipelineRun.objects.get(pk=retry.pk)
        assert "no suitable node" in retry.waiting_reason  # on its page: "It waits: …"
    finally:
        swarm.start(s3)
    assert wait_for(lambda: "O up" in read_log(retry), timeout=120), read_log(retry)
    retry.request_cancel()
    retry_thread.join(timeout=120)
    retry.refresh_from_db()
    assert retry.status == Status.CANCELLED, log_text(retry)
    assert "no suitable node" in log_text(retry)
    assert PipelineRun.objects.filter(pipeline__name="fragile").count() == 2


def test_fifty_runs_leave_no_service_secret_config_or_container(
    make_pipeline, swarm, settings, tmp_path
):
    from tests.runs_app.test_worker import Worker

    make_pipeline("quick", main="print('done')\n")
    discover()
    pipeline = Pipeline.objects.get(name="quick")
    runs = [PipelineRun.enqueue(pipeline, trigger="api") for _ in range(50)]
    worker = Worker(settings, tmp_path)
    worker.env = {
        "FASTFLOW_EXECUTOR": "swarm",
        "DOCKER_HOST": swarm.engines[0].socket,
        "MAX_CONCURRENT_RUNS": "8",
    }
    worker.start()
    try:
        assert wait_for(
            lambda: (
                PipelineRun.objects.filter(
                    pk__in=[run.pk for run in runs], status__in=PipelineRun.FINAL_STATUSES
                ).count()
                == 50
            ),
            timeout=300,
        )
    finally:
        worker.stop()
    failed = PipelineRun.objects.filter(pk__in=[run.pk for run in runs]).exclude(
        status=Status.SUCCEEDED
    )
    assert not failed.exists(), "\n".join(log_text(run) for run in failed)
    # (on_swarm's teardown: no service, secret, config or container is left)


# --- the engine guard in front of the manager ----------------------------------------------


@pytest.fixture
def swarm_guard(swarm, tmp_path):
    """The engine guard in front of the manager, as docs/swarm.md deploys it: a client of
    the guard (docker-py's low-level API) and its port."""
    import docker

    from tests.runs_app.conftest import free_port
    from tests.runs_app.test_engine_guard import _listening
    from tests.runs_app.test_worker import kill_group

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "engine_guard"],
        cwd=django_settings.BASE_DIR,
        env={**os.environ, "GUARD_LISTEN": f"127.0.0.1:{port}",
             "GUARD_UPSTREAM": swarm.engines[0].socket.removeprefix("unix://"),
             "GUARD_IMAGES": django_settings.WORKER_IMAGE},
        stdout=open(tmp_path / "guard.log", "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True,
    )  # fmt: skip
    assert wait_for(lambda: _listening(port), timeout=20), (tmp_path / "guard.log").read_text()
    yield docker.APIClient(base_url=f"tcp://127.0.0.1:{port}", timeout=30), port
    kill_group(process)


def test_a_whole_swarm_run_passes_through_the_guard(make_pipeline, swarm_guard, monkeypatch):
    """Its warm-up (a global service writing every node's cache), then the run."""
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{swarm_guard[1]}")
    run = run_now(
        make_pipeline,
        "guarded",
        "import six\nprint('through the guard with six', six.__version__)\n",
        requirements="six==1.16.0\n",
    )
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert output_lines(run, streams="O")[-1] == "through the guard with six 1.16.0"


@pytest.mark.parametrize("case", SERVICE_FORBIDDEN)
def test_a_forbidden_service_is_refused_with_its_reason(swarm_guard, case):
    client, _ = swarm_guard
    change, reason = SERVICE_FORBIDDEN[case]
    service = good_service(client.inspect_image(django_settings.WORKER_IMAGE)["Id"])
    change(service)
    with pytest.raises(APIError) as refused:
        client._result(client._post_json(client._url("/services/create"), data=service), True)
    assert refused.value.status_code == 403
    assert reason in str(refused.value)


def test_swarm_objects_fastflow_did_not_make_are_off_limits(swarm, swarm_guard):
    client, _ = swarm_guard
    image = client.inspect_image(django_settings.WORKER_IMAGE)["Id"]
    manager(swarm, "service", "create", "-d", "--name", "someone-elses", image, "sleep", "600")
    manager(swarm, "secret", "create", "someone-elses-secret", "/etc/hostname")
    try:
        for call in (
            lambda: client.inspect_service("someone-elses"),
            lambda: client.remove_service("someone-elses"),
            lambda: client.tasks(filters={"service": "someone-elses"}),
            lambda: client.services(),
            lambda: client.tasks(),
            lambda: client.inspect_secret("someone-elses-secret"),
            lambda: client.remove_secret("someone-elses-secret"),
            lambda: client.create_secret("plain", b"x"),
            lambda: client.update_node("x", 1, {}),
        ):
            with pytest.raises(APIError) as refused:
                call()
            assert refused.value.status_code == 403, call
    finally:
        manager(swarm, "service", "rm", "someone-elses")
        manager(swarm, "secret", "rm", "someone-elses-secret")


def test_a_node_whose_cache_lacks_the_packages_downloads_exactly_the_lock(make_pipeline, swarm):
    """A node that joined after the warm-up (here: s3's cache volume removed) still runs
    the pipeline, with the lock's exact versions, and says why it downloads."""
    main = "import six\nprint('six', six.__version__)\n"
    first = run_now(
        make_pipeline, "six-warm", main, config={"placement": {"node": "s2"}},
        requirements="six==1.16.0\n",
    )  # fmt: skip
    assert first.status == Status.SUCCEEDED, log_text(first)
    s3 = swarm.engines[2]
    assert wait_for(  # once no container of an earlier run uses it
        lambda: (
            s3.docker("volume", "rm", "-f", "fastflow-uv-cache", capture_output=True).returncode
            == 0
            and not task_containers(s3)
        ),
        timeout=90,
    )
    folder = Path(Pipeline.objects.get(name="six-warm").folder_path)
    (folder / "pipeline.json").write_text(json.dumps({"placement": {"node": "s3"}}))
    discover()
    cold = execute(PipelineRun.enqueue(Pipeline.objects.get(name="six-warm"), trigger="manual"))
    assert cold.status == Status.SUCCEEDED, log_text(cold)
    assert output_lines(cold, streams="O")[-1] == "six 1.16.0"
    assert "uv cache lacks some of its packages" in log_text(cold)


def test_a_node_without_the_worker_image_fails_the_run_naming_it(make_pipeline, swarm):
    s3 = swarm.engines[2]
    image = manager(swarm, "image", "inspect", "--format", "{{.Id}}", django_settings.WORKER_IMAGE)
    assert wait_for(
        lambda: s3.docker("image", "rm", image.strip(), capture_output=True).returncode == 0,
        timeout=90,
    )  # (once no container of an earlier run uses it)
    try:
        run = run_now(make_pipeline, "imageless", "print('hi')\n", {"placement": {"node": "s3"}})
    finally:
        swarm._load(s3, django_settings.WORKER_IMAGE)
    assert run.status == Status.FAILED, log_text(run)
    assert run.failure_reason == Reason.IMAGE_MISSING
    assert f"Swarm node {s3.node_id[:10]} does not have the worker image" in run.error_message


def test_a_node_that_lets_runs_gain_privileges_gets_none_to_run(make_pipeline, swarm):
    """A service cannot ask for no-new-privileges: a run refuses to start on an engine that
    does not set it for every container."""
    s3 = swarm.engines[2]
    swarm.stop(s3)
    swarm.start(s3, options=("--icc=false",))
    try:
        assert wait_for(lambda: node_state(swarm, s3) == "ready", timeout=120), (
            manager(swarm, "node", "ls") + (lab_module.RUN_DIR / "s3.log").read_text()[-3000:]
        )
        run = run_now(make_pipeline, "escalating", "print('ran')\n", {"placement": {"node": "s3"}})
    finally:
        swarm.stop(s3)
        swarm.start(s3)
    assert run.status == Status.FAILED, log_text(run)
    assert "ran" not in output_lines(run)
    assert "refused to start the run" in run.error_message
    assert "--no-new-privileges" in run.error_message


def test_a_pipeline_with_a_data_folder_is_told_it_has_no_place_on_a_swarm(make_pipeline):
    run = run_now(make_pipeline, "keeper", "print('kept')\n", config={"data_folder": True})
    assert run.status == Status.FAILED, log_text(run)
    assert "asks for a data_folder" in run.error_message
    assert "kept" not in output_lines(run)


def test_a_pipeline_without_network_is_told_the_swarm_cannot_give_it_none(make_pipeline):
    run = run_now(make_pipeline, "hermit", "print('alone')\n", config={"network": False})
    assert run.status == Status.FAILED, log_text(run)
    assert '"network": false, which the swarm executor cannot give' in run.error_message
    assert "alone" not in output_lines(run)
