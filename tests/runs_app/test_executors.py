"""Runs for real — in containers on a real Docker engine, in sandboxes, and as local
processes.

Tests marked `every_executor` are the shared contract; the rest are Docker's own (lock-down,
container limits, labels).
"""

from __future__ import annotations

import json
import threading

import pytest

from runs_app.follow import wait_for
from runs_app.models import PipelineRun
from tests.runs_app.conftest import (
    every_executor,
    execute,
    log_text,
    output_lines,
    read_log,
    run_now,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("runs_setup")]

Status, Reason = PipelineRun.Status, PipelineRun.FailureReason


def test_a_successful_run(make_pipeline, docker_engine):
    run = run_now(
        make_pipeline,
        "hello",
        'import os\nprint("hello", os.environ["FASTFLOW_PIPELINE"], os.environ["GREETING"])\n',
        config={"default_env": {"GREETING": "hi"}},
    )
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert run.exit_code == 0 and run.failure_reason == ""
    assert output_lines(run) == ["hello hello hi"]
    assert run.started_at and run.finished_at and run.claimed_at
    assert run.setup_duration is not None and run.setup_duration.total_seconds() >= 0
    assert run.uv_version.startswith("uv ")
    assert run.environment["FASTFLOW_RUN_ID"] == str(run.public_id)
    assert run.environment["GREETING"] == "hi"
    assert len(run.container_id) == 64
    # removed only after the outcome was stored
    assert docker_engine.containers.list(all=True, filters={"id": run.container_id}) == []


def test_every_line_is_timestamped_and_marked_with_its_stream(make_pipeline):
    run = run_now(
        make_pipeline,
        "streams",
        "import sys\nprint('out')\nprint('err', file=sys.stderr)\nprint('x' * 40000)\n",
    )
    records = [line.split(" ", 2) for line in log_text(run).splitlines()]
    # Docker reads stdout and stderr through separate pipes: each stream keeps its order,
    # the interleaving of the two is as docker saw it.
    assert sorted((r[1], r[2][:5]) for r in records if r[1] != "S") == [
        ("E", "err"),
        ("O", "out"),
        ("O", "xxxxx"),
    ]
    assert all(len(r[0]) == len("2026-01-01T00:00:00.000000000Z") for r in records)
    assert "x" * 40000 in log_text(run)  # a line longer than docker's 16 KiB chunks, whole


@every_executor
def test_a_failing_run_reports_its_exit_code(make_pipeline):
    run = run_now(make_pipeline, "fails", "import sys\nprint('bad input')\nsys.exit(3)\n")
    assert run.status == Status.FAILED
    assert run.failure_reason == Reason.EXIT_CODE
    assert run.exit_code == 3
    assert run.error_message == "exited with code 3"
    assert "finished: failed — exited with code 3" in log_text(run)


@every_executor
def test_an_uncaught_exception_looks_like_python_main_py(make_pipeline):
    run = run_now(make_pipeline, "raises", "def boom():\n    raise ValueError('nope')\nboom()\n")
    assert run.status == Status.FAILED and run.exit_code == 1
    lines = output_lines(run)
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[1].startswith('  File "main.py", line 3')  # no launcher frames
    assert lines[-1] == "ValueError: nope"


@every_executor
def test_out_of_memory_is_named_as_such(make_pipeline):
    run = run_now(
        make_pipeline,
        "hog",
        "blocks = [bytearray(1024 * 1024) for _ in range(100)]\nprint('survived')\n",
        config={"mem_hard_limit": "50m"},
    )
    assert run.status == Status.FAILED
    assert run.failure_reason == Reason.OUT_OF_MEMORY
    assert run.exit_code == 137
    assert (
        run.error_message == "out of memory: killed for using more than its memory limit (50 MiB)"
    )
    assert "survived" not in output_lines(run)


@every_executor
def test_timeout_kills_the_run(make_pipeline):
    run = run_now(
        make_pipeline,
        "sleepy",
        "import time\nprint('going to sleep', flush=True)\ntime.sleep(60)\n",
        config={"timeout": 2},
    )
    assert run.status == Status.TIMED_OUT
    assert run.error_message == "killed after its timeout of 2 s"
    assert "timeout of 2 s reached: killing the run" in log_text(run)
    assert (run.finished_at - run.started_at).total_seconds() < 30


@every_executor
def test_instance_timeout_applies_when_the_pipeline_sets_none(make_pipeline, settings):
    settings.CONTAINER_TIMEOUT = 1
    run = run_now(make_pipeline, "sleepy", "import time\ntime.sleep(60)\n")
    assert run.status == Status.TIMED_OUT


@every_executor
def test_cancel_stops_a_running_run_and_it_stays_cancelled(make_pipeline):
    from pipelines_app.discovery import discover
    from pipelines_app.models import Pipeline

    make_pipeline(
        "counter",
        main="import time\nfor i in range(120):\n    print(i, flush=True)\n    time.sleep(0.5)\n",
        config={"retry_attempts": 3, "retry_strategy": {"type": "fixed_delay", "delay": 0}},
    )
    discover()
    run = PipelineRun.enqueue(Pipeline.objects.get(name="counter"), trigger="manual")
    worker = threading.Thread(target=execute, args=(run,))
    worker.start()
    assert wait_for(lambda: "O 1\n" in read_log(run), timeout=60)
    run.refresh_from_db()
    assert run.request_cancel() == "stopping"
    worker.join(timeout=60)
    run.refresh_from_db()
    assert run.status == Status.CANCELLED
    assert run.error_message == "cancelled on request"
    assert "cancel requested: stopping the run" in log_text(run)
    assert not run.retries.exists()  # a cancelled run is not retried


@every_executor
def test_the_route_file_is_read_back(make_pipeline):
    run = run_now(
        make_pipeline,
        "router",
        "import os\nopen(os.environ['FASTFLOW_ROUTE_FILE'], 'w').write('full\\n')\n",
    )
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert run.route == "full"


LOCKDOWN_PROBE = """
import os, pathlib
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines())
print("uid", os.getuid(), "gid", os.getgid())
print("caps", status["CapEff"].strip(), "no_new_privs", status["NoNewPrivs"].strip())
for target in ("main.py", "new_file.txt", "/etc/fastflow-test", "/usr/local/bin/x"):
    try:
        with open(target, "a") as handle:
            handle.write("x")
        print("wrote", target)
    except OSError as exc:
        print("refused", target, exc.errno)
for target in ("/tmp/scratch", os.path.expanduser("~/scratch")):
    pathlib.Path(target).write_text("ok")
    print("wrote", target)
print("cwd", os.getcwd())
print("pid1", open("/proc/1/cmdline").read().split("\\0")[0])
"""


def test_containers_are_locked_down(make_pipeline):
    run = run_now(make_pipeline, "probe", LOCKDOWN_PROBE)
    assert run.status == Status.SUCCEEDED, log_text(run)
    lines = output_lines(run)
    assert "uid 10001 gid 10001" in lines  # never the orchestrator's uid
    assert "caps 0000000000000000 no_new_privs 1" in lines
    # The code is not the run user's (EACCES) and is mounted read-only (EROFS) besides.
    assert {"refused main.py 13", "refused main.py 30"} & set(lines)
    assert "refused new_file.txt 30" in lines
    assert "refused /etc/fastflow-test 30" in lines  # read-only root filesystem
    assert "refused /usr/local/bin/x 30" in lines
    assert "wrote /tmp/scratch" in lines
    assert "wrote /home/fastflow/scratch" in lines
    assert "cwd /pipeline" in lines
    assert "pid1 /sbin/docker-init" in lines  # an init process reaps what the run forks


@pytest.mark.fresh  # what a fresh container is made with (test_pool: limits at hand-over)
def test_limits_and_labels_reach_the_container(make_pipeline, docker_engine, settings):
    from pipelines_app.discovery import discover
    from pipelines_app.models import Pipeline

    make_pipeline(
        "limited",
        main="import time\nprint('up', flush=True)\ntime.sleep(30)\n",
        config={"cpu_hard_limit": 0.5, "mem_hard_limit": "128m", "timeout": 20},
    )
    discover()
    run = PipelineRun.enqueue(Pipeline.objects.get(name="limited"), trigger="manual")
    worker = threading.Thread(target=execute, args=(run,))
    worker.start()
    assert wait_for(lambda: "O up\n" in read_log(run), timeout=60)
    run.refresh_from_db()
    attrs = docker_engine.api.inspect_container(run.container_id)
    host = attrs["HostConfig"]
    labels = attrs["Config"]["Labels"]
    assert labels["fastflow.run_id"] == str(run.public_id)
    assert labels["fastflow.pipeline"] == "limited"
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == host["MemorySwap"] == 128 * 1024**2
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["PidsLimit"] == settings.RUN_PIDS_LIMIT
    assert host["Init"] is True
    assert host["NetworkMode"] == settings.RUN_NETWORK
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/pipeline"]["RW"] is False
    # Everything the run may write is a tmpfs, bounded in size: the host's disk is not its.
    assert [m for m in mounts.values() if m["RW"]] == []
    assert set(host["Tmpfs"]) == {"/tmp", "/home/fastflow", "/fastflow", "/uv-cache"}
    run.request_cancel()
    worker.join(timeout=60)


@every_executor
@pytest.mark.fresh  # a cold run warms itself (a pool is made after a warm-up)
def test_requirements_are_installed_once_then_come_from_the_cache(make_pipeline):
    main = "import six\nprint('six', six.__version__)\n"
    first = run_now(make_pipeline, "deps", main, requirements="six==1.16.0\n")
    assert first.status == Status.SUCCEEDED, log_text(first)
    assert "six 1.16.0" in output_lines(first)
    # Not warmed yet: the first run warms its requirements into the shared cache itself.
    assert "installing its requirements into the shared cache first" in log_text(first)
    second = execute(PipelineRun.enqueue(first.pipeline, trigger="manual"))
    assert second.status == Status.SUCCEEDED, log_text(second)
    assert "warm-up" not in log_text(second)
    # Nothing downloaded or built the second time: the environment is linked from the cache.
    second_uv = [line for line in output_lines(second) if "package" in line]
    assert not any(word in line for line in second_uv for word in ("Prepared", "Downloaded"))


@every_executor
def test_a_requirement_that_cannot_be_resolved_fails_as_dependency_install(make_pipeline):
    run = run_now(
        make_pipeline,
        "badpin",
        "print('never')\n",
        requirements="six==0.0.0.404\n",
    )
    assert run.status == Status.FAILED
    assert run.failure_reason == Reason.DEPENDENCY_INSTALL
    assert run.error_message.startswith("its requirements could not be installed:")
    assert "six==0.0.0.404" in run.error_message
    assert "never" not in output_lines(run)


def test_a_missing_image_fails_the_run_with_the_command_that_builds_it(make_pipeline, settings):
    settings.WORKER_IMAGE = "fastflow-worker:not-built"
    run = run_now(make_pipeline, "noimage", "print('x')\n")
    assert run.status == Status.FAILED
    assert run.failure_reason == Reason.IMAGE_MISSING
    assert "fastflow-worker:not-built is not on this machine" in run.error_message
    assert "bash runs_app/worker_image/build-offline.sh" in run.error_message
    assert "build-offline.sh" in log_text(run)


@every_executor
def test_failed_runs_are_retried_with_backoff(make_pipeline):
    run = run_now(
        make_pipeline,
        "flaky",
        "import os, sys\nprint('attempt', os.environ['FASTFLOW_ATTEMPT'])\nsys.exit(1)\n",
        config={
            "retry_attempts": 2,
            "retry_strategy": {"type": "exponential_backoff", "initial_delay": 1, "multiplier": 3},
        },
    )
    retry = run.retries.get()
    assert retry.status == Status.QUEUED
    assert retry.attempt == 2 and retry.trigger == PipelineRun.Trigger.RETRY
    assert 0.5 < (retry.not_before - run.finished_at).total_seconds() < 3
    assert "retry 1 of 2 will be queued, due in 1 s" in log_text(run)
    assert wait_for(lambda: _due(retry), timeout=10)
    retry = execute(retry)
    third = retry.retries.get()
    assert 2 < (third.not_before - retry.finished_at).total_seconds() < 5  # 1 s times 3
    assert wait_for(lambda: _due(third), timeout=10)
    third = execute(third)
    assert third.attempt == 3 and "attempt 3" in output_lines(third)
    assert not third.retries.exists()  # attempts used up


def _due(run: PipelineRun) -> bool:
    from django.utils import timezone

    return run.not_before <= timezone.now()


@every_executor
def test_no_retry_after_a_timeout_unless_configured(make_pipeline, settings):
    config = {
        "timeout": 1,
        "retry_attempts": 1,
        "retry_strategy": {"type": "fixed_delay", "delay": 0},
    }
    run = run_now(make_pipeline, "slow1", "import time\ntime.sleep(30)\n", config=config)
    assert run.status == Status.TIMED_OUT and not run.retries.exists()
    settings.RETRY_ON_TIMEOUT = True
    run = run_now(make_pipeline, "slow2", "import time\ntime.sleep(30)\n", config=config)
    assert run.retries.get().attempt == 2


@every_executor
def test_soft_limits_are_watched_and_peaks_stored(make_pipeline):
    run = run_now(
        make_pipeline,
        "greedy",
        "import time\nblock = bytearray(80 * 1024 * 1024)\nfor i in range(40):\n"
        "    block[i * 4096] = 1\n    time.sleep(0.1)\n",
        config={"mem_soft_limit": "20m", "mem_hard_limit": "256m"},
    )
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert run.peak_memory_bytes > 60 * 1024**2
    assert run.peak_cpu_percent is not None
    assert len(run.limit_warnings) == 1
    assert run.limit_warnings[0].startswith("memory peaked at")
    assert "above the soft limit of 20 MiB" in run.limit_warnings[0]


@every_executor
def test_a_notebook_runs_cell_by_cell(make_pipeline):
    cells = [
        {"cell_type": "markdown", "source": ["# title"]},
        {"cell_type": "code", "source": ["x = 20\n", "%matplotlib inline\n"]},
        {"cell_type": "code", "source": "print('answer', x + 22)"},
    ]
    run = run_now(
        make_pipeline,
        "nb",
        None,
        config={"type": "notebook"},
        extra={"main.ipynb": json.dumps({"cells": cells, "nbformat": 4})},
    )
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert "answer 42" in output_lines(run)
    text = log_text(run)
    assert "S cell 1/2 starts" in text and "S cell 2/2 succeeded" in text
    assert "skip cell 1: %matplotlib inline" in text
    assert [c["status"] for c in run.cells] == ["succeeded", "succeeded"]


FLAKY_CELLS = [
    {"cell_type": "code", "source": "tries = 0"},
    {"cell_type": "code", "source": "tries += 1\nprint('try', tries)\nassert tries >= 2"},
    {"cell_type": "code", "source": "print('done after', tries)"},
]


@every_executor
def test_a_failing_cell_is_retried_in_the_same_namespace(make_pipeline):
    run = run_now(
        make_pipeline,
        "flaky_nb",
        None,
        config={
            "type": "notebook",
            "cells": [{}, {"retries": 2, "delay_seconds": 0.1}, {}],
        },
        extra={"main.ipynb": json.dumps({"cells": FLAKY_CELLS, "nbformat": 4})},
    )
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert output_lines(run)[-1] == "done after 2"  # the retry saw the first try's state
    assert "cell 2/3 failed (attempt 1 of 3); again in 0.1 s" in log_text(run)
    assert [(c["cell"], c["status"], c["attempts"]) for c in run.cells] == [
        (1, "succeeded", 1),
        (2, "succeeded", 2),
        (3, "succeeded", 1),
    ]


def test_a_cell_out_of_retries_fails_the_run_and_the_page_shows_each_cell(
    make_pipeline, admin_client
):
    cells = [*FLAKY_CELLS[:2]]
    cells[1] = {"cell_type": "code", "source": "raise RuntimeError('never works')"}
    run = run_now(
        make_pipeline,
        "hopeless_nb",
        None,
        config={"type": "notebook", "cells": [{}, {"retries": 1}]},
        extra={"main.ipynb": json.dumps({"cells": cells, "nbformat": 4})},
    )
    assert run.status == Status.FAILED
    assert run.cells[1] == {
        "cell": 2,
        "status": "failed",
        "attempts": 2,
        "seconds": run.cells[1]["seconds"],
    }
    page = admin_client.get(run.get_absolute_url()).content.decode()
    assert 'id="cell-2"' in page and "failed" in page


@every_executor
def test_a_run_that_prints_more_than_the_cap_is_stopped_and_fails(make_pipeline, settings):
    settings.LOG_MAX_SIZE_MB = 1
    run = run_now(
        make_pipeline,
        "chatty",
        "for i in range(30000):\n    print(f'{i:08} ' + 'x' * 60)\nprint('the end')\n",
    )
    assert run.status == Status.FAILED, log_text(run)[-500:]
    assert run.failure_reason == Reason.LOG_LIMIT
    assert "more than LOG_MAX_SIZE_MB (1 MB)" in run.error_message
    text = log_text(run)
    assert len(text.encode()) < 1024**2 + 64 * 1024
    assert "the log reached LOG_MAX_SIZE_MB=1" in text
    assert "line(s) were not kept" in text
    assert "the end" not in text
    assert "finished: failed" in text  # Fast-Flow's own lines are kept past the cap


@every_executor
def test_timeout_zero_means_no_limit_even_with_an_instance_timeout(make_pipeline, settings):
    settings.CONTAINER_TIMEOUT = 1
    run = run_now(
        make_pipeline,
        "daemonish",
        "import time\ntime.sleep(2.5)\nprint('still here')\n",
        config={"timeout": 0},
    )
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert "still here" in output_lines(run)


def test_a_container_created_but_never_started_is_replaced(make_pipeline, docker_engine):
    from pipelines_app.discovery import discover
    from pipelines_app.models import Pipeline
    from runs_app.executors.docker import DockerExecutor
    from runs_app.worker.execution import execute_run, run_spec

    make_pipeline("fresh", main="print('started properly')\n")
    discover()
    run = PipelineRun.enqueue(Pipeline.objects.get(name="fresh"), trigger="manual")
    PipelineRun.claim_runs()
    # A worker created the container and died before recording or starting it.
    container_id = DockerExecutor()._create(run_spec(run, {})[0])
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert output_lines(run) == ["started properly"]
    assert run.container_id != container_id
    assert docker_engine.containers.list(all=True, filters={"id": container_id}) == []
