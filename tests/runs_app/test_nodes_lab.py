"""Nodes that share nothing but the database, for real: a web process and two worker nodes,
each with a Docker engine of its own in a network namespace of its own (tests/lab.py), its
own DATA_DIR, LOGS_DIR and uv cache, and no pipelines folder; PostgreSQL and Redis shared.
This process plays the node that discovers and syncs (the only one with the pipelines).

Runs of a git-synced pipeline and of a folder pipeline spread over the nodes; placement by
label is honoured; a cold node installs the lock and says so; the web serves every line
from the database — the API's cursor while runs go, the page, the download after — also
once the nodes' folders are gone; a node killed mid-run loses its run, which is retried by
its policy on the other node, never doubled. The PostgreSQL pass runs it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request

import pytest
from django.conf import settings as django_settings
from django.test import Client

from pipelines_app import gitsync
from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline, Sync
from runs_app.follow import wait_for
from runs_app.models import NodeWarmth, PipelineRun, WorkerNode
from runs_app.stored_logs import all_lines, log_text
from tests import lab as lab_module
from tests.pipelines_app.test_gitsync import Remote
from tests.runs_app.conftest import redis_database
from tests.runs_app.test_worker import Worker, kill_group, start_web_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker, pytest.mark.lab]
Status = PipelineRun.Status
ON_POSTGRES = django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql")

TICKS = (
    "import time\nfor i in range({n}):\n    print('tick', i, flush=True)\n    time.sleep({pause})\n"
)


@pytest.fixture(scope="module")
def lab():
    if not ON_POSTGRES:
        pytest.skip("several nodes share a PostgreSQL database: the PostgreSQL pass runs this")
    if why := lab_module.available():
        pytest.skip(why)
    engines = lab_module.Lab(["n1", "n2"])
    engines.up([django_settings.WORKER_IMAGE])
    yield engines
    engines.down()


class Node:
    """A worker node: `manage.py worker` with folders of its own and its own engine."""

    def __init__(self, name: str, engine: lab_module.Engine, settings, root, **env) -> None:
        self.name = name
        self.root = root / name
        for folder in ("data", "logs", "cache", "no-pipelines"):
            (self.root / folder).mkdir(parents=True)
        self.worker = Worker(settings, self.root)
        self.worker.env = {
            "WORKER_NAME": name,
            "DOCKER_HOST": engine.socket,
            "DATA_DIR": str(self.root / "data"),
            "LOGS_DIR": str(self.root / "logs"),
            "UV_CACHE_DIR": str(self.root / "cache"),
            "PIPELINES_DIR": str(self.root / "no-pipelines"),
            "REDIS_URL": env.pop("REDIS_URL"),
            "WORKER_CAPACITY": "1",
            "MAX_CONCURRENT_RUNS": "4",
            "RUN_POOL_SIZE": "0",
            "RUN_HEARTBEAT_TIMEOUT": "6",
            **env,
        }

    def start(self) -> None:
        self.worker.start()

    def kill(self) -> None:
        kill_group(self.worker.process)

    def forget_folders(self) -> None:
        shutil.rmtree(self.root / "data", ignore_errors=True)
        shutil.rmtree(self.root / "logs", ignore_errors=True)


def ran_on(run: PipelineRun) -> str:
    found = re.search(r" S starting .* on worker node (\S+) with", log_text(run.pk))
    return found.group(1) if found else ""


def final(runs, timeout: float) -> bool:
    ids = [run.pk for run in runs]
    return wait_for(
        lambda: (
            not PipelineRun.objects.filter(
                pk__in=ids, status__in=PipelineRun.ACTIVE_STATUSES
            ).exists()
        ),
        timeout=timeout,
        poll=0.5,
    )


def test_nodes_that_share_nothing_but_the_database(
    lab, make_pipeline, settings, tmp_path, admin_user
):
    redis_url = redis_database(11)
    subprocess.run(["redis-cli", "-u", redis_url, "flushdb"], check=True, capture_output=True)
    settings.REDIS_URL = redis_url
    settings.WORKER_NAME = "syncing-node"
    settings.DATA_DIR = tmp_path / "syncing-node"
    settings.RUN_HEARTBEAT_TIMEOUT = 6
    settings.UV_PRE_HEAT = False  # each node warms when a run needs it (and says so)
    # The pipelines: a folder one, one only a gpu node may run, one with requirements; and
    # one from git. Only this process has them.
    make_pipeline("spread", main=TICKS.format(n=6, pause=0.3))
    make_pipeline("on-gpu", main="print('on a gpu node')\n", config={"placement": {"gpu": "yes"}})
    deps_folder = make_pipeline(
        "deps",
        main="import six\nprint('six', six.__version__)\n",
        requirements="six==1.16.0\n",
        config={"placement": {"zone": "a"}},
    )
    make_pipeline("long", main=TICKS.format(n=200, pause=0.2), config={"retry_attempts": 1})
    discover()

    nodes = [
        Node("lab-n1", lab.engines[0], settings, tmp_path, REDIS_URL=redis_url,
             WORKER_LABELS="zone=a"),
        Node("lab-n2", lab.engines[1], settings, tmp_path, REDIS_URL=redis_url,
             WORKER_LABELS="gpu=yes,zone=b"),
    ]  # fmt: skip
    web_env = {
        **nodes[0].worker.environment(),
        "DATA_DIR": str(tmp_path / "web-data"),
        "LOGS_DIR": str(tmp_path / "web-logs"),
        "WORKER_NAME": "web",
    }
    web, base = start_web_server(web_env, tmp_path / "web.log")
    web_get = signed_in(base, admin_user)
    try:
        for node in nodes:
            node.start()
        assert wait_for(lambda: WorkerNode.alive().count() == 2, timeout=60)
        assert [node.executors for node in WorkerNode.alive()] == [["docker"], ["docker"]]

        # Runs spread over the nodes; placement is honoured; each line reaches the web live.
        spread = [PipelineRun.enqueue(Pipeline.objects.get(name=name), trigger="api")
                  for name in ("spread", "spread", "spread", "on-gpu")]  # fmt: skip
        seen_live = False
        deadline = time.monotonic() + 180
        while not seen_live and time.monotonic() < deadline:
            first = PipelineRun.objects.get(pk=spread[0].pk)
            page = json.loads(web_get(f"/api/v1/runs/{first.public_id}/log"))
            seen_live = first.status == Status.RUNNING and any(
                "tick" in line[3] for line in page["lines"]
            )
            time.sleep(0.2)
        assert seen_live, "no line of a running run reached the API"
        assert final(spread, timeout=240)
        for run in spread:
            run.refresh_from_db()
            assert run.status == Status.SUCCEEDED, log_text(run.pk)
        assert {ran_on(run) for run in spread[:3]} == {"lab-n1", "lab-n2"}
        assert ran_on(spread[3]) == "lab-n2"  # placement: gpu=yes

        # A cold node warms and says so: deps runs first on lab-n1 (zone=a), then — the same
        # requirements, so the same lock — on lab-n2 (zone=b), whose cache does not have it.
        first_deps = PipelineRun.enqueue(Pipeline.objects.get(name="deps"), trigger="api")
        assert final([first_deps], timeout=300)
        (deps_folder / "pipeline.json").write_text(json.dumps({"placement": {"zone": "b"}}))
        discover()
        second_deps = PipelineRun.enqueue(Pipeline.objects.get(name="deps"), trigger="api")
        assert final([second_deps], timeout=300)
        deps = [first_deps, second_deps]
        for run in deps:
            run.refresh_from_db()
            assert run.status == Status.SUCCEEDED, log_text(run.pk)
            assert "six 1.16.0" in log_text(run.pk)
        assert [ran_on(run) for run in deps] == ["lab-n1", "lab-n2"]
        assert second_deps.environment_lock == first_deps.environment_lock
        assert "worker node (lab-n2) does not hold its packages yet" in log_text(second_deps.pk)
        assert set(NodeWarmth.objects.values_list("node", flat=True)) == {"lab-n1", "lab-n2"}

        # A node killed mid-run: its engine is out of the other's reach, so the run is lost
        # and retried by its policy on the other node — one success, never two runs at once.
        long = PipelineRun.enqueue(Pipeline.objects.get(name="long"), trigger="api")
        assert wait_for(lambda: "tick 3" in log_text(long.pk), timeout=120)
        victim = next(node for node in nodes if node.name == ran_on(long))
        victim.kill()
        assert wait_for(
            lambda: PipelineRun.objects.get(pk=long.pk).status in PipelineRun.FINAL_STATUSES,
            timeout=120,
        )
        long.refresh_from_db()
        assert long.status == Status.FAILED and long.failure_reason == "lost", long.error_message
        retry = PipelineRun.objects.get(retry_of=long)
        assert final([retry], timeout=180)
        retry.refresh_from_db()
        assert retry.status == Status.SUCCEEDED, log_text(retry.pk)
        assert ran_on(retry) != victim.name
        assert PipelineRun.objects.filter(pipeline__name="long").count() == 2
        # A pipeline from git: synced here only (the credentials stay here); the nodes run
        # its bundle.
        (tmp_path / "git").mkdir()
        remote = Remote(tmp_path / "git")
        remote.commit({"from-git/main.py": "print('from git')\n"}, "a pipeline in git")
        settings.GIT_REPO_URL, settings.GIT_BRANCH = str(remote.bare), "main"
        record = gitsync.sync(Sync.Trigger.CLI)
        assert record is not None and record.status == Sync.Status.SUCCEEDED, record.error
        from_git = [PipelineRun.enqueue(Pipeline.objects.get(name="from-git"), trigger="api")
                    for _ in range(2)]  # fmt: skip
        assert final(from_git, timeout=120)
        for run in from_git:
            run.refresh_from_db()
            assert run.status == Status.SUCCEEDED, log_text(run.pk)
            assert "from git" in log_text(run.pk) and run.git_commit == record.commit

        # Every page complete from the database, with the nodes' folders gone.
        for node in nodes:
            node.forget_folders()
        for run in [*spread, *deps, long, retry, *from_git]:
            stored = list(all_lines(run.pk))
            download = web_get(f"/runs/{run.public_id}/log/")
            assert download.splitlines() == [
                ("[fast-flow] " if stream == "S" else "") + text for _, _, stream, text in stored
            ]
            cursor, after = [], 0
            while page := json.loads(
                web_get(f"/api/v1/runs/{run.public_id}/log?after={after}&limit=3")
            )["lines"]:
                cursor += [line[3] for line in page]
                after = page[-1][0]
            assert cursor == [text for *_, text in stored]
            assert run.short_id in web_get(f"/runs/{run.public_id}/")

    finally:
        for node in nodes:
            node.worker.kill()
        kill_group(web)


def signed_in(base: str, user):
    """GET pages of the web process (another process, reading only the database) as `user`."""
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"

    def get(path: str) -> str:
        request = urllib.request.Request(base + path, headers={"Cookie": cookie})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()

    return get
