"""The container pool on the real engine: a run starts in a container made before it, that
container serves no other run, only one of the current image, layout and limits is handed
out, a pooled container that dies is replaced, and a stopping worker leaves nothing."""

from __future__ import annotations

import io
import uuid

import pytest

from pipelines_app.models import Pipeline
from runs_app.executors import pool as pool_module
from runs_app.executors.layout import RUN_NAME_PREFIX, container_layout, slot_dir
from runs_app.executors.pool import (
    POOL_NAME_PREFIX,
    HandOverFailed,
    PooledDockerExecutor,
    hand_over,
    pool_root,
)
from runs_app.follow import wait_for
from runs_app.models import PipelineRun
from runs_app.worker.execution import worker_id
from runs_app.worker.pool_keeper import PoolKeeper, make_slot
from secrets_app.models import Variable
from tests.runs_app.conftest import (
    ACTIVE_POOLS,
    POOLS_LOCK,
    execute,
    in_thread,
    log_text,
    output_lines,
    queued,
    read_log,
    run_now,
)
from tests.runs_app.test_executors import LOCKDOWN_PROBE

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("runs_setup", "docker_engine"),
]

Status = PipelineRun.Status


def ready_ids(keeper: PoolKeeper) -> set[str]:
    return {
        c["Id"]
        for c in keeper.idle(mine=True)
        if c["State"] == "running"
        and c["Labels"]["fastflow.pool"] == pool_module.current_profile(keeper.executor).digest
    }


@pytest.fixture
def keeper(settings):
    """A pool of two for this test's instance (its own DATA_DIR: its own profile)."""
    settings.RUN_POOL_SIZE = 2
    keeper = PoolKeeper(worker_id(), size=2)
    keeper.start()
    assert wait_for(lambda: len(ready_ids(keeper)) == 2, timeout=60), keeper.problem
    with POOLS_LOCK:
        ACTIVE_POOLS.append(keeper)  # the test's pool: `execute` makes no other
    yield keeper
    with POOLS_LOCK:
        ACTIVE_POOLS.remove(keeper)
    keeper.stop()


def made_by(keeper: PoolKeeper) -> set[str]:
    """Every container the keeper has made so far (its ids are in the engine's events)."""
    return {c["Id"] for c in keeper.idle(mine=True)}


def test_a_run_starts_in_a_pooled_container_which_serves_it_alone(make_pipeline, keeper):
    ready = ready_ids(keeper)
    first = run_now(make_pipeline, "fib", "print(55)\n")
    assert first.status == Status.SUCCEEDED, log_text(first)
    assert output_lines(first) == ["55"]
    assert first.container_id in ready
    assert first.setup_duration is not None  # counted from the hand-over, not the pre-start
    # Removed after its run like any run container; its slot (its code) with it.
    engine = keeper.executor.api
    assert not engine.containers(all=True, filters={"id": first.container_id})
    # The next run gets another container: never one that served a run.
    assert wait_for(lambda: len(ready_ids(keeper)) == 2, timeout=60)
    assert sorted(slot.name for slot in pool_root().iterdir()) == sorted(
        c["Labels"]["fastflow.pool.slot"] for c in keeper.idle(mine=True)
    )  # the first run's slot went with its container
    again = ready_ids(keeper)
    assert first.container_id not in again
    second = execute(PipelineRun.enqueue(Pipeline.objects.get(name="fib"), trigger="manual"))
    assert second.status == Status.SUCCEEDED, log_text(second)
    assert second.container_id in again


def test_lock_down_holds_in_a_pooled_container(make_pipeline, keeper):
    ready = ready_ids(keeper)
    run = run_now(make_pipeline, "probe", LOCKDOWN_PROBE)
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert run.container_id in ready
    lines = output_lines(run)
    assert "uid 10001 gid 10001" in lines
    assert "caps 0000000000000000 no_new_privs 1" in lines
    assert {"refused main.py 13", "refused main.py 30"} & set(lines)
    assert "refused new_file.txt 30" in lines
    assert "refused /etc/fastflow-test 30" in lines
    assert "wrote /tmp/scratch" in lines
    assert "cwd /pipeline" in lines
    assert "pid1 /sbin/docker-init" in lines


def test_secrets_reach_the_run_but_never_the_containers_configuration(
    make_pipeline, keeper, docker_engine
):
    secret = Variable(name="API_TOKEN", kind=Variable.Kind.SECRET)
    secret.set_value("s3cr3t-value")
    secret.save()
    run = queued(
        make_pipeline,
        "secretive",
        "import os, time\nprint(len(os.environ['API_TOKEN']), flush=True)\ntime.sleep(30)\n",
    )
    follower = in_thread(run)
    assert wait_for(lambda: "O 12\n" in read_log(run), timeout=60)
    run.refresh_from_db()
    attrs = docker_engine.api.inspect_container(run.container_id)
    assert "s3cr3t-value" not in str(attrs)  # handed over through the pipe, never stored
    assert attrs["Name"] == f"/{RUN_NAME_PREFIX}{run.public_id}"
    run.request_cancel()
    follower.join(timeout=60)


def test_the_runs_own_limits_are_applied_at_hand_over(make_pipeline, keeper, docker_engine):
    ready = ready_ids(keeper)
    run = queued(
        make_pipeline,
        "limited",
        "import time\nprint('up', flush=True)\ntime.sleep(30)\n",
        {"cpu_hard_limit": 0.5, "mem_hard_limit": "128m"},
    )
    follower = in_thread(run)
    assert wait_for(lambda: "O up\n" in read_log(run), timeout=60)
    run.refresh_from_db()
    assert run.container_id in ready
    host = docker_engine.api.inspect_container(run.container_id)["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == host["MemorySwap"] == 128 * 1024**2
    run.request_cancel()
    follower.join(timeout=60)


def test_a_memory_hog_in_a_pooled_container_is_out_of_memory(make_pipeline, keeper):
    ready = ready_ids(keeper)
    hog = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))\n"
    run = run_now(make_pipeline, "hog", hog, config={"mem_hard_limit": "64m"})
    assert run.container_id in ready
    assert run.status == Status.FAILED, log_text(run)
    assert run.failure_reason == PipelineRun.FailureReason.OUT_OF_MEMORY


def test_only_a_container_of_the_current_image_is_handed_out(
    make_pipeline, keeper, docker_engine, settings
):
    old = ready_ids(keeper)
    tag = f"fastflow-worker-pool-test:{uuid.uuid4().hex[:8]}"
    dockerfile = f"FROM {settings.WORKER_IMAGE}\nLABEL fastflow.test-rebuild={tag}\n"
    image, _ = docker_engine.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, forcerm=True
    )
    try:
        settings.WORKER_IMAGE = tag  # as if the image was rebuilt
        run = run_now(make_pipeline, "fib", "print(55)\n")
        assert run.status == Status.SUCCEEDED, log_text(run)
        assert run.container_id not in old
        # The keeper replaces what it made for the old image.
        assert wait_for(lambda: made_by(keeper).isdisjoint(old), timeout=60)
        assert wait_for(lambda: len(ready_ids(keeper)) == 2, timeout=60)
        for container in keeper.idle(mine=True):
            assert container["ImageID"] == image.id
    finally:
        keeper.stop()
        docker_engine.images.remove(tag, force=True)


def test_a_changed_layout_is_never_handed_a_run(make_pipeline, keeper, settings):
    old = ready_ids(keeper)
    settings.RUN_PIDS_LIMIT = 64  # made for 512: this run must not get one of them
    run = run_now(make_pipeline, "fib", "print(55)\n")
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert run.container_id not in old


def test_a_pooled_container_that_dies_is_replaced(make_pipeline, keeper, docker_engine):
    victim, survivor = sorted(ready_ids(keeper))
    docker_engine.api.kill(victim)
    assert wait_for(
        lambda: victim not in made_by(keeper) and len(ready_ids(keeper)) == 2, timeout=60
    )
    assert survivor in ready_ids(keeper)
    run = run_now(make_pipeline, "fib", "print(55)\n")
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert run.container_id != victim


def test_a_container_that_does_not_listen_is_not_handed_the_run(settings, monkeypatch):
    monkeypatch.setattr(pool_module, "LISTEN_WAIT_SECONDS", 0.05)
    token = uuid.uuid4().hex
    make_slot(slot_dir(token))
    executor = PooledDockerExecutor()
    spec = pool_module.RunSpec(
        run_id="r", pipeline="p", folder=pool_root(), entry_point="main.py",
        requirements_file="", python_version=None, env={"SECRET": "x"},
    )  # fmt: skip
    with pytest.raises(HandOverFailed, match="does not listen"):
        hand_over(token, spec, container_layout(executor.api, warm=False))


def test_a_stopping_worker_leaves_no_pooled_container(keeper, docker_engine):
    ready = ready_ids(keeper)
    keeper.stop()
    assert not keeper.kept.alive
    left = docker_engine.api.containers(all=True, filters={"name": POOL_NAME_PREFIX})
    assert ready.isdisjoint({c["Id"] for c in left})
    assert list(pool_root().iterdir()) == []


def test_what_a_dead_worker_left_in_the_pool_is_removed(keeper, docker_engine, settings):
    orphan = PoolKeeper(f"{worker_id().split(':')[0]}:999999:gone", size=1)
    orphan.make(pool_module.current_profile(orphan.executor))
    left = made_by(orphan)
    assert len(left) == 1
    keeper.sweep()
    assert not made_by(orphan)
    assert not docker_engine.api.containers(all=True, filters={"id": left.pop()})
