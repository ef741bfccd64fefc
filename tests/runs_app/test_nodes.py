"""Worker nodes: labels and placement (which node takes which run, and why a run waits),
draining from the Workers page, the admin and the command, and a pool that follows demand."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.urls import reverse

from fastflow_site.models import AuditEntry
from fastflow_site.node_keys import (
    KeysOfItsOwn,
    refuse_keys_of_its_own,
    refuse_new_keys_beside_nodes,
)
from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.executors import startable_executors
from runs_app.executors.pool import DEMAND
from runs_app.executors.sandbox import SandboxExecutor
from runs_app.models import NodeWarmth, PipelineRun, WorkerNode, WorkerProcess
from runs_app.placement import fits, why_waiting
from runs_app.worker import supervisor as supervisor_module
from runs_app.worker.pool_keeper import POOL_IDLE_SECONDS, PoolKeeper
from runs_app.worker.supervisor import RunSupervisor
from secrets_app.models import Variable
from tests.runs_app.conftest import every_executor, execute, log_text, output_lines, run_now

Status = PipelineRun.Status


@dataclass
class Node:
    name: str
    labels: dict = field(default_factory=dict)
    draining: bool = False
    placed_by_cluster: bool = False
    executors: list = field(default_factory=list)


def test_a_node_fits_when_it_has_every_label_asked_for():
    assert fits({"gpu": "yes", "zone": "a"}, [("gpu", "yes")])
    assert fits({}, [])
    assert not fits({"gpu": "no"}, [("gpu", "yes")])
    assert not fits({"zone": "a"}, [("gpu", "yes"), ("zone", "a")])


def test_why_a_run_waits_in_plain_words():
    a, b = Node("a", {"zone": "a"}), Node("b", {"gpu": "yes"}, draining=True)
    assert why_waiting([a, b], [("zone", "a")]) == ""
    assert why_waiting([], [("gpu", "yes")]) == ""  # no worker at all: it waits as ever
    assert why_waiting([a, b], [("zone", "b")]) == (
        "no live worker has the labels zone=b (live: a, b)"
    )
    assert why_waiting([a, b], [("gpu", "yes")]) == (
        "every worker that could take it is draining (b)"
    )


def test_why_a_run_of_a_pipeline_choosing_its_executor_waits():
    docker_only = Node("a", {"zone": "a"}, executors=["docker"])
    both = Node("b", {"zone": "b"}, executors=["docker", "sandbox"])
    assert why_waiting([docker_only, both], [], "sandbox") == ""
    assert why_waiting([docker_only], [], "sandbox") == (
        "no live worker can start sandbox runs (live: a)"
    )
    assert why_waiting([docker_only, both], [("zone", "a")], "sandbox") == (
        "no live worker with the labels zone=a can start sandbox runs (live: a, b)"
    )
    assert why_waiting([Node("old", {})], [], "sandbox") == ""  # not told: an older worker
    assert why_waiting([Node("swarm", placed_by_cluster=True)], [], "sandbox") == ""
    both.draining = True
    assert why_waiting([docker_only, both], [], "sandbox") == (
        "every worker that could take it is draining (b)"
    )


@pytest.fixture
def catalogue(make_pipeline, settings, tmp_path):
    settings.LOGS_DIR = tmp_path / "logs"
    make_pipeline("anywhere")
    make_pipeline("on-gpu", config={"placement": {"gpu": "yes"}})
    discover()
    return {p.name: p for p in Pipeline.objects.all()}


def node(name: str, executors: list[str] | None = None, **labels) -> WorkerNode:
    WorkerNode.report(
        name, labels=labels, capacity=4, engine="local processes", pool={}, executors=executors
    )
    return WorkerNode.objects.get(name=name)


@pytest.mark.django_db
def test_runs_of_a_pipeline_choosing_the_sandbox_wait_for_a_node_that_can_start_it(
    make_pipeline, settings, client, viewer
):
    settings.FASTFLOW_EXECUTOR, settings.PIPELINE_EXECUTORS = "docker", ["sandbox"]
    make_pipeline("boxed", config={"executor": "sandbox"})
    make_pipeline("plain")
    discover()
    boxed = PipelineRun.enqueue(Pipeline.objects.get(name="boxed"), trigger="manual")
    plain = PipelineRun.enqueue(Pipeline.objects.get(name="plain"), trigger="manual")
    node("docker-box", executors=["docker"])
    assert PipelineRun.claim_runs() == [plain.pk]
    boxed = PipelineRun.objects.get(pk=boxed.pk)
    assert boxed.waiting_reason == "no live worker can start sandbox runs (live: docker-box)"
    client.force_login(viewer)
    assert "It waits: no live worker can start sandbox runs" in (
        client.get(boxed.get_absolute_url()).content.decode()
    )
    workers = client.get(reverse("workers")).content.decode()
    assert '<dd class="executors"><code>docker</code> </dd>' in workers

    node("sandbox-box", executors=["docker", "sandbox"])
    assert PipelineRun.claim_runs() == [boxed.pk]

    # A choice the instance refuses waits for nobody: any worker fails the run, unstarted.
    settings.PIPELINE_EXECUTORS = []
    WorkerNode.objects.filter(name="sandbox-box").delete()
    refused = PipelineRun.enqueue(Pipeline.objects.get(name="boxed"), trigger="manual")
    assert PipelineRun.claim_runs() == [refused.pk]


def test_a_node_offers_the_executors_pipelines_may_choose_that_it_can_start(settings, monkeypatch):
    settings.FASTFLOW_EXECUTOR, settings.PIPELINE_EXECUTORS = "docker", ["docker", "sandbox"]
    monkeypatch.setattr(SandboxExecutor, "unavailable", staticmethod(lambda: ""))
    assert startable_executors() == ["docker", "sandbox"]
    monkeypatch.setattr(
        SandboxExecutor, "unavailable", staticmethod(lambda: "bubblewrap is not installed")
    )
    assert startable_executors() == ["docker"]
    settings.FASTFLOW_EXECUTOR, settings.PIPELINE_EXECUTORS = "sandbox", ["docker"]
    assert startable_executors() == ["sandbox", "docker"]  # its own: an outage passes


@pytest.mark.django_db
def test_runs_are_claimed_only_for_a_live_node_that_fits(catalogue, client, viewer):
    gpu_run = PipelineRun.enqueue(catalogue["on-gpu"], trigger="manual")
    other = PipelineRun.enqueue(catalogue["anywhere"], trigger="manual")
    assert set(PipelineRun.claim_runs()) == {gpu_run.pk, other.pk}  # no node yet: as ever

    PipelineRun.objects.update(status=Status.QUEUED, claimed_at=None)
    node("cpu-box", zone="a")
    assert PipelineRun.claim_runs() == [other.pk]
    gpu_run.refresh_from_db()
    assert gpu_run.status == Status.QUEUED
    assert gpu_run.waiting_reason == "no live worker has the labels gpu=yes (live: cpu-box)"
    client.force_login(viewer)
    page = client.get(gpu_run.get_absolute_url()).content.decode()
    assert "It waits: no live worker has the labels gpu=yes" in page

    gpu_box = node("gpu-box", gpu="yes")
    gpu_box.drain(by="ada")
    assert PipelineRun.claim_runs() == []
    assert (
        "every worker that could take it is draining (gpu-box)"
        in PipelineRun.objects.get(pk=gpu_run.pk).waiting_reason
    )
    gpu_box.resume()
    assert PipelineRun.claim_runs() == [gpu_run.pk]


@pytest.mark.django_db(transaction=True)
def test_a_worker_takes_only_runs_its_labels_fit_and_none_while_drained(
    catalogue, settings, monkeypatch
):
    followed = []
    monkeypatch.setattr(supervisor_module, "follow_run", lambda run, lets_go: followed.append(run))
    settings.WORKER_NAME, settings.WORKER_LABELS = "cpu-box", {"zone": "a"}
    runs = [
        PipelineRun.enqueue(catalogue[name], trigger="manual") for name in ("on-gpu", "anywhere")
    ]
    PipelineRun.objects.update(status=Status.CLAIMED)  # (claimed while a gpu node was live)
    drained = node("cpu-box", zone="a")
    drained.drain()
    supervisor = RunSupervisor(capacity=4)
    supervisor.listener = type("Quiet", (), {"wake": lambda self: None})()
    supervisor.take_claimed()
    assert followed == []
    drained.resume()
    supervisor.take_claimed()
    for follower in supervisor.followers.values():
        follower.join(timeout=10)
    assert [run.pk for run in followed] == [runs[1].pk]
    assert PipelineRun.objects.get(pk=runs[0].pk).status == Status.CLAIMED  # a gpu node's


@pytest.mark.django_db(transaction=True)
def test_a_worker_leaves_runs_of_an_executor_its_machine_cannot_start(
    make_pipeline, settings, monkeypatch
):
    followed = []
    monkeypatch.setattr(supervisor_module, "follow_run", lambda run, lets_go: followed.append(run))
    monkeypatch.setattr(
        SandboxExecutor, "unavailable", staticmethod(lambda: "bubblewrap is not installed")
    )
    settings.FASTFLOW_EXECUTOR, settings.PIPELINE_EXECUTORS = "docker", ["sandbox"]
    make_pipeline("boxed", config={"executor": "sandbox"})
    make_pipeline("plain")
    discover()
    runs = [
        PipelineRun.enqueue(Pipeline.objects.get(name=name), trigger="manual")
        for name in ("boxed", "plain")
    ]
    PipelineRun.objects.update(status=Status.CLAIMED)  # (claimed while a sandbox node was live)
    supervisor = RunSupervisor(capacity=4)
    supervisor.listener = type("Quiet", (), {"wake": lambda self: None})()
    supervisor.take_claimed()
    for follower in supervisor.followers.values():
        follower.join(timeout=10)
    assert [run.pk for run in followed] == [runs[1].pk]
    assert PipelineRun.objects.get(pk=runs[0].pk).status == Status.CLAIMED  # a sandbox node's


@pytest.mark.django_db
def test_the_workers_page_shows_nodes_and_drains_them(catalogue, client, viewer, operator):
    gpu_box = node("gpu-box", gpu="yes")
    WorkerNode.objects.filter(pk=gpu_box.pk).update(pool={"ready": 2, "target": 4, "max": 8})
    WorkerProcess.report("gpu-box:42:t", engine_ok=True, node="gpu-box")
    run = PipelineRun.enqueue(catalogue["on-gpu"], trigger="manual")
    PipelineRun.objects.filter(pk=run.pk).update(status=Status.RUNNING, worker_id="gpu-box:42:t")
    client.force_login(viewer)
    page = client.get(reverse("workers")).content.decode()
    assert 'data-node="gpu-box"' in page and "<code>gpu=yes</code>" in page
    assert "1 of 4" in page and f"#{run.short_id}" in page
    assert "2 ready (target 4, at most 8)" in page
    assert "Drain" not in page  # a viewer may look, not drain
    assert (
        client.post(reverse("worker_drain", args=["gpu-box"]), {"drain": "yes"}).status_code == 403
    )

    client.force_login(operator)
    client.post(reverse("worker_drain", args=["gpu-box"]), {"drain": "yes"})
    gpu_box.refresh_from_db()
    assert gpu_box.draining and gpu_box.drained_by == operator.get_username()
    assert 'data-state="draining"' in client.get(reverse("workers")).content.decode()
    assert AuditEntry.objects.filter(action=AuditEntry.Action.NODE_DRAINED).exists()
    client.post(reverse("worker_drain", args=["gpu-box"]), {"drain": "no"})
    gpu_box.refresh_from_db()
    assert not gpu_box.draining


@pytest.mark.django_db
def test_the_drain_command(catalogue, capsys):
    node("gpu-box", gpu="yes")
    call_command("drain", "gpu-box")
    assert "gpu-box is drained: it takes no new runs; 0 run(s) it follows finish." in (
        capsys.readouterr().out
    )
    assert WorkerNode.objects.get(name="gpu-box").draining
    call_command("drain", "gpu-box", "--resume")
    assert not WorkerNode.objects.get(name="gpu-box").draining
    with pytest.raises(CommandError, match=r"no worker node is called 'nope' \(known: gpu-box\)"):
        call_command("drain", "nope")


def test_the_pool_grows_while_runs_find_it_empty_and_shrinks_when_idle(settings):
    keeper = PoolKeeper("test:1:t", size=2, maximum=8)
    DEMAND.read()  # (what other tests left)
    for expected in (4, 8, 8):
        DEMAND.found_none()
        keeper.adapt()
        assert keeper.target == expected
    DEMAND.took()
    keeper.adapt()
    assert keeper.target == 8  # busy: it stays
    for expected in (4, 2, 2):
        keeper.last_take = time.monotonic() - POOL_IDLE_SECONDS - 1
        keeper.adapt()
        assert keeper.target == expected
    assert keeper.state() == {"ready": 0, "target": 2, "max": 8}


@pytest.mark.django_db
def test_a_second_node_refuses_keys_of_its_own(settings):
    settings.KEYS_FROM_ENVIRONMENT = False
    refuse_keys_of_its_own("second")  # alone: its own keys are fine
    node("first")
    with pytest.raises(CommandError, match="another worker node is alive \\(first\\): with more"):
        call_command("worker")
    settings.KEYS_FROM_ENVIRONMENT = True
    refuse_keys_of_its_own("second")
    Variable.objects.create(
        name="DB_PASSWORD",
        kind=Variable.Kind.SECRET,
        encrypted_value=Fernet(Fernet.generate_key()).encrypt(b"elsewhere").decode(),
    )
    with pytest.raises(KeysOfItsOwn, match="does not open the secrets the instance stored"):
        refuse_keys_of_its_own("second")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("runs_setup")
@every_executor
@pytest.mark.fresh  # each node here has a cache of its own: no pool made from another's
def test_a_cold_node_installs_the_lock_first_and_says_so(
    make_pipeline, settings, tmp_path, client, viewer
):
    main = "import six\nprint('six', six.__version__)\n"
    settings.WORKER_NAME = "node-a"
    first = run_now(make_pipeline, "deps", main, requirements="six==1.16.0\n")
    assert first.status == Status.SUCCEEDED, log_text(first)
    lock = first.environment_lock
    assert list(NodeWarmth.objects.values_list("node", flat=True)) == ["node-a"]

    settings.WORKER_NAME = "node-b"  # another machine: its own, empty cache
    settings.UV_CACHE_DIR = tmp_path / "node-b-cache"
    second = execute(PipelineRun.enqueue(first.pipeline, trigger="manual"))
    assert second.status == Status.SUCCEEDED, log_text(second)
    assert second.environment_lock == lock  # exactly the lock node-a made, not resolved again
    assert (
        f"this worker node (node-b) does not hold its packages yet: installing lock "
        f"{lock.short_hash} (1 packages) into its cache first" in log_text(second)
    )
    assert "six 1.16.0" in output_lines(second)
    third = execute(PipelineRun.enqueue(first.pipeline, trigger="manual"))
    assert "does not hold its packages" not in log_text(third)  # warm on node-b now

    client.force_login(viewer)
    page = client.get(first.pipeline.get_absolute_url()).content.decode()
    assert 'data-node="node-a"' in page and 'data-node="node-b"' in page


@pytest.mark.django_db
def test_a_web_node_that_made_its_own_keys_refuses_to_start(settings):
    settings.KEYS_MADE_NOW = True
    refuse_new_keys_beside_nodes()  # the first start of an instance: nobody else yet
    node("worker-1")
    with pytest.raises(KeysOfItsOwn, match=r"made new keys .* while worker nodes are alive"):
        refuse_new_keys_beside_nodes()
    settings.KEYS_MADE_NOW = False
    refuse_new_keys_beside_nodes()  # keys read, not made: the instance's own
