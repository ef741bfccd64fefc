"""The sandbox executor on this machine's kernel: what a sandboxed run is given, what it is
refused, and that nothing of it outlives it (the hostile pipelines and the follower contract
every executor keeps are in test_hostile.py and test_executors.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.executors.sandbox import SandboxExecutor, cgroups, network, places
from runs_app.follow import wait_for
from runs_app.models import PipelineRun
from runs_app.worker.execution import reconcile
from tests.runs_app.conftest import (
    execute,
    in_thread,
    log_text,
    output_lines,
    read_log,
    require,
    run_now,
)
from tests.runs_app.test_worker import Worker, all_final

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("runs_setup")]
sandbox = pytest.mark.parametrize("executor", ["sandbox"], indirect=True)
isolating = pytest.mark.parametrize("executor", ["docker", "sandbox"], indirect=True)
Status, Reason = PipelineRun.Status, PipelineRun.FailureReason

LOCK_DOWN_PROBE = """
import ctypes, errno, os, socket
status = dict(line.split(':', 1) for line in open('/proc/self/status'))
for key in ('Uid', 'Gid', 'Groups', 'CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb',
            'NoNewPrivs', 'Seccomp'):
    print(key, ' '.join(status[key].split()))
print('hostname', socket.gethostname())
print('processes', len([p for p in os.listdir('/proc') if p.isdigit()]))
for path in ('/', '/pipeline', '/opt/fastflow', '/etc', '/usr/lib', '/tmp', os.environ['HOME'],
             '/fastflow', '/dev/shm'):
    try:
        with open(os.path.join(path, 'probe'), 'w') as f:
            f.write('x')
        print('writes', path, os.stat(path).st_uid)
    except OSError as exc:
        print('refused', path, errno.errorcode[exc.errno])
mounts = {line.split()[4]: line.split()[5] for line in open('/proc/self/mountinfo')}
try:
    keys = 'shows %d bytes' % len(open('/proc/keys').read())
except OSError as exc:
    keys = errno.errorcode[exc.errno]
print('/proc/sys', mounts['/proc/sys'].split(',')[0], '/proc/keys', keys)
libc = ctypes.CDLL(None, use_errno=True)
for name, call in (
    ('mount', lambda: libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)),
    ('unshare', lambda: libc.unshare(0x10000000)),  # CLONE_NEWUSER
    ('keyctl', lambda: libc.syscall(250, 0, 0, 0, 0)),
    ('setuid', lambda: libc.setuid(0)),
):
    result = call()
    print(name, result, errno.errorcode.get(ctypes.get_errno(), 0) if result else 'ok')
"""


@sandbox
def test_a_sandboxed_run_is_locked_down(make_pipeline):
    run = run_now(make_pipeline, "probe", LOCK_DOWN_PROBE)
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert output_lines(run) == [
        "Uid 10001 10001 10001 10001",
        "Gid 10001 10001 10001 10001",
        "Groups ",
        *(f"{caps} 0000000000000000" for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd")),
        "CapAmb 0000000000000000",
        "NoNewPrivs 1",
        "Seccomp 2",  # a filter: Docker's default profile
        "hostname fastflow-run",
        "processes 2",  # its own pid namespace: bubblewrap's init and itself
        "refused / EROFS",
        "refused /pipeline EROFS",
        "refused /opt/fastflow EROFS",
        "refused /etc EROFS",
        "refused /usr/lib EROFS",
        "writes /tmp 0",  # its own tmpfs, sticky and open to all as in Docker
        "writes /home/fastflow 10001",
        "writes /fastflow 10001",
        "writes /dev/shm 0",
        "/proc/sys ro /proc/keys EACCES",  # as Docker leaves /proc: masked, read-only
        "mount -1 EPERM",
        "unshare -1 EPERM",
        "keyctl -1 EPERM",
        "setuid -1 EPERM",
    ]
    assert run.executor == "sandbox"


OUTBOUND_PROBE = """
import socket
try:
    address = socket.gethostbyname('pypi.org')
    socket.create_connection((address, 443), timeout=10).close()
    print('out')
except OSError as exc:
    print('no network', type(exc).__name__)
print('interfaces', sorted(name for _, name in socket.if_nameindex()))
"""


@sandbox
def test_a_sandboxed_run_resolves_names_and_gets_out(make_pipeline):
    run = run_now(make_pipeline, "outbound", OUTBOUND_PROBE)
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert output_lines(run)[0] == "out"


@isolating
def test_network_false_gives_a_run_no_network_at_all(make_pipeline, executor):
    run = run_now(make_pipeline, "offline", OUTBOUND_PROBE, config={"network": False})
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert output_lines(run)[0].startswith("no network")
    assert output_lines(run)[1] == "interfaces ['lo']"


def place_of(run: PipelineRun) -> int:
    return int(run.container_id.rsplit(":", 1)[1])  # sandbox:<pid>:<place>


def left_of(place: int) -> list[str]:
    """What of a run's place is still on this machine (tests in parallel have their own)."""
    cgroup = cgroups.RunCgroup(places.cgroup_name(place))
    run_network = network.RunNetwork(place)
    found = {
        "place": (places.STATE_DIR / str(place)).exists(),
        "cgroup": any(folder.exists() for folder in cgroup.folders),
        "namespace": run_network.path.exists(),
        "link": Path(f"/sys/class/net/{run_network.host_side}").exists(),
    }
    return [name for name, there in found.items() if there]


@sandbox
def test_nothing_of_a_run_is_left_when_it_ends(make_pipeline, settings):
    ok = run_now(make_pipeline, "quick", "print('done')\n")
    assert ok.status == Status.SUCCEEDED, log_text(ok)
    killed = run_now(
        make_pipeline, "sleeper", "import time\nprint('up', flush=True)\ntime.sleep(60)\n",
        config={"timeout": 2},
    )  # fmt: skip
    assert killed.status == Status.TIMED_OUT, log_text(killed)
    for run in (ok, killed):  # released by a thread of its own, once the run ended
        assert wait_for(lambda run=run: left_of(place_of(run)) == [], timeout=10)


@sandbox
def test_a_run_cannot_read_another_runs_files(make_pipeline):
    writer = (
        "import os, time\n"
        "for folder in ('/tmp', os.environ['HOME'], '/fastflow', '/dev/shm'):\n"
        "    open(os.path.join(folder, 'secret'), 'w').write('s3cr3t')\n"
        "print('written', flush=True)\n"
        "time.sleep(30)\n"
    )
    make_pipeline("writer", main=writer)
    discover()
    first = PipelineRun.enqueue(Pipeline.objects.get(name="writer"), trigger="manual")
    follower = in_thread(first)
    assert wait_for(lambda: "O written\n" in read_log(first), timeout=60)
    first.refresh_from_db()
    host_folder = str(first.pipeline.folder_path)
    reader = (
        "import glob, os\n"
        "found = [path for folder in ('/tmp', os.environ['HOME'], '/fastflow', '/dev/shm')\n"
        "         for path in glob.glob(os.path.join(folder, '**', 'secret'), recursive=True)]\n"
        f"found += glob.glob({host_folder!r} + '/*')\n"
        "for path in glob.glob('/proc/[0-9]*/environ'):\n"
        "    try:\n"
        "        found += [path] if 's3cr3t' in open(path).read() else []\n"
        "    except OSError:\n"
        "        pass\n"
        "print('found', found)\n"
    )
    second = run_now(make_pipeline, "reader", reader)
    assert output_lines(second) == ["found []"], log_text(second)
    first.request_cancel()
    follower.join(timeout=60)
    assert first.status != Status.SUCCEEDED


@sandbox
def test_secrets_never_reach_a_command_line(make_pipeline):
    """Variables travel in the environment (readable by root only), never in argv."""
    main = "import os, time\nprint('up', flush=True)\ntime.sleep(30)\n"
    make_pipeline("secretive", main=main, config={"default_env": {"TOKEN": "tok-5678-abcd"}})
    discover()
    run = PipelineRun.enqueue(Pipeline.objects.get(name="secretive"), trigger="manual")
    follower = in_thread(run)
    assert wait_for(lambda: "O up\n" in read_log(run), timeout=60)
    command_lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command_lines.append((entry / "cmdline").read_bytes())
            except OSError:
                continue
    assert any(b"bwrap" in line for line in command_lines)
    assert not any(b"tok-5678-abcd" in line for line in command_lines)
    run.request_cancel()
    follower.join(timeout=60)


@sandbox
def test_a_sandbox_dies_with_its_worker_and_the_run_is_retried(make_pipeline, settings, tmp_path):
    """A sandbox never outlives its worker: the run is lost, its policy retries it, and
    what the dead worker's sandbox held on this machine is swept."""
    main = (
        "import os, time\n"
        "if not os.path.exists('/data/started'):\n"
        "    open('/data/started', 'w').close()\n"
        "    print('first', flush=True)\n"
        "    time.sleep(60)\n"
        "print('second')\n"
    )
    make_pipeline(
        "fragile",
        main=main,
        config={
            "retry_attempts": 1,
            "retry_strategy": {"type": "fixed_delay", "delay": 1},
            "data_folder": True,
        },
    )
    discover()
    worker = Worker(settings, tmp_path)
    worker.env["FASTFLOW_EXECUTOR"] = "sandbox"
    worker.start()
    try:
        run = PipelineRun.enqueue(Pipeline.objects.get(name="fragile"), trigger="manual")
        assert wait_for(lambda: "O first\n" in read_log(run), timeout=60), worker.log.read_text()
        run.refresh_from_db()
        place = place_of(run)
        cgroup = cgroups.RunCgroup(places.cgroup_name(place))
        assert cgroup.pids()
        worker.kill()
        assert wait_for(lambda: not cgroup.pids(), timeout=30)  # --die-with-parent
        worker.start()
        assert wait_for(lambda: all_final([run]), timeout=60), worker.log.read_text()[-3000:]
        run.refresh_from_db()
        assert run.failure_reason == Reason.LOST, log_text(run)
        assert "cannot re-attach" in run.error_message
        retry = PipelineRun.objects.get(retry_of=run)
        assert wait_for(lambda: all_final([retry]), timeout=90), worker.log.read_text()[-3000:]
        retry.refresh_from_db()
        assert retry.status == Status.SUCCEEDED, log_text(retry)
        assert wait_for(lambda: left_of(place) == [], timeout=30), left_of(place)
    finally:
        worker.kill()


def test_a_pipeline_chooses_the_sandbox_where_the_instance_allows_it(
    make_pipeline, settings, client, admin_user
):
    """On a Docker instance: a pipeline asking for the sandbox gets it when
    PIPELINE_EXECUTORS lists it, and its page and run say so; else its run fails, unstarted."""
    problem = SandboxExecutor.unavailable()
    require(not problem, f"the sandbox executor ({problem})")
    main = "import os\nprint('uid', os.getuid())\n"
    settings.PIPELINE_EXECUTORS = []
    refused = run_now(make_pipeline, "chooser", main, config={"executor": "sandbox"})
    assert refused.status == Status.FAILED
    assert refused.failure_reason == Reason.NOT_ALLOWED
    assert "asks for the sandbox executor" in refused.error_message
    assert (refused.executor, refused.container_id, output_lines(refused)) == ("", "", [])

    settings.PIPELINE_EXECUTORS = ["sandbox"]
    chosen = execute(PipelineRun.enqueue(refused.pipeline, trigger="manual"))
    assert chosen.status == Status.SUCCEEDED, log_text(chosen)
    assert chosen.executor == "sandbox" and chosen.container_id.startswith("sandbox:")
    assert "with the sandbox executor" in log_text(chosen)
    client.force_login(admin_user)
    page = client.get(chosen.get_absolute_url()).content.decode()
    assert 'id="run-executor">sandbox</dd>' in page


def test_what_a_dead_worker_left_is_swept_by_reconcile_on_a_docker_instance(settings):
    """A docker instance whose pipelines may choose the sandbox sweeps its leftovers too."""
    settings.FASTFLOW_EXECUTOR, settings.PIPELINE_EXECUTORS = "docker", ["sandbox"]
    problem = SandboxExecutor.unavailable()
    require(not problem, f"the sandbox executor ({problem})")
    gone = subprocess.Popen(["true"])
    gone.wait()
    place, _ = places.take("left-behind", with_network=False)
    (places.STATE_DIR / str(place) / "holder").write_text(f"{gone.pid} 12345")
    cgroups.RunCgroup(places.cgroup_name(place)).create(64 * 1024**2, None, 16)
    network.RunNetwork(place).create()
    assert sorted(left_of(place)) == ["cgroup", "link", "namespace", "place"]
    reconcile()
    assert left_of(place) == []
