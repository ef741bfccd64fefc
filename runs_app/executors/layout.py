"""What a run container is given: its user, folders, mounts, tmpfs, variables, network and
the lock-down every one of them keeps (docs/execution.md has the full list).

A run container gets the least that works: an init process, its own uid (not the
orchestrator's), no capabilities, no new privileges, a read-only root file system, limits
on memory, CPU and processes, tmpfs for everything it may write (so it cannot fill the
host's disk), the pipeline code read-only, and a network of its own on which run
containers cannot reach each other. The shared uv cache is mounted read-only: packages are
linked from it into the run's own environment on a tmpfs, so no run can change what
another run executes. Only warm-ups (no secrets, no pipeline code but its requirements)
write to the cache. Fresh and pooled containers (runs_app/executors/pool.py) are made from
the same layout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import docker
from django.conf import settings
from docker.errors import APIError, NotFound
from docker.types import LogConfig, Mount

from runs_app.executors import host_firewall
from runs_app.executors.base import ExecutorError, RunSpec, prepare_environment
from runs_app.in_run import TOOLS

# The worker image's `fastflow` user; never the orchestrator's own uid (docker-compose runs
# the orchestrator as 1000).
RUN_UID = 10001
RUN_USER = f"{RUN_UID}:{RUN_UID}"
# build-offline.sh and the Dockerfile label the image with this; an older image (another
# run user, no prepare.sh conventions) is refused with the command that rebuilds it.
IMAGE_VERSION = "2"
IMAGE_VERSION_LABEL = "fastflow.worker-image-version"
HOME = "/home/fastflow"
CODE_DIR = "/pipeline"
CACHE_DIR = "/uv-cache"
WORK_DIR = "/fastflow"  # tmpfs: the run's environment and FASTFLOW_ROUTE_FILE
TOOLS_DIR = "/opt/fastflow"
DATA_MOUNT = "/data"  # pipeline.json data_folder
CA_PATH = "/etc/ssl/fastflow-ca.pem"
LABEL_RUN, LABEL_PIPELINE = "fastflow.run_id", "fastflow.pipeline"
RUN_NAME_PREFIX = "fastflow-run-"
# A pooled container: the profile it was made for, and its slot (runs_app/executors/pool.py).
LABEL_POOL, LABEL_SLOT = "fastflow.pool", "fastflow.pool.slot"
# uv writes these buckets of its cache during an install; a run gets its own, empty ones.
PER_RUN_CACHE_BUCKETS = ("builds-", "environments-", "interpreter-")
# Wheels a warm-up built from source, for runs (prepare.sh, environment_lock.py).
WHEELHOUSE_BUCKET = "fastflow-wheels-v1"
WORK_TMPFS_MB = 256
RUN_CACHE_TMPFS_MB = 256


@dataclass
class Layout:
    mounts: list[Mount]
    tmpfs: dict[str, str]
    env: dict[str, str]


def container_layout(api: docker.APIClient, *, warm: bool) -> Layout:
    """What every run container is given apart from its code, limits and own variables:
    tools, the uv cache (its own on a tmpfs, shared buckets read-only; warm-ups write the
    shared one), tmpfs for all it may write, the CA bundle. A pooled container is made
    from the same layout (runs_app/executors/pool.py)."""
    ensure_run_network(api)
    shared_cache = Path(settings.UV_CACHE_DIR)
    prepare_shared_cache(shared_cache)
    mounts = [Mount(TOOLS_DIR, str(shared_tools()), type="bind", read_only=True)]
    tmpfs = {
        "/tmp": f"size={settings.RUN_TMPFS_SIZE_MB}m,mode=1777",  # noqa: S108 (its own)
        HOME: f"size={settings.RUN_TMPFS_SIZE_MB}m,uid={RUN_UID},gid={RUN_UID},mode=0700",
        WORK_DIR: f"size={WORK_TMPFS_MB}m,uid={RUN_UID},gid={RUN_UID},mode=0700,exec",
    }
    if warm:
        # The one container that writes the shared cache: no secrets, no pipeline code.
        mounts.append(Mount(CACHE_DIR, str(shared_cache), type="bind"))
    else:
        # The run's own cache on a tmpfs, with the shared buckets read-only inside it.
        tmpfs[CACHE_DIR] = f"size={RUN_CACHE_TMPFS_MB}m,uid={RUN_UID},gid={RUN_UID},mode=0755,exec"
        mounts += [
            Mount(f"{CACHE_DIR}/{bucket.name}", str(bucket), type="bind", read_only=True)
            for bucket in shared_buckets(shared_cache)
        ]
    if run_ca_bundle():
        mounts.append(Mount(CA_PATH, settings.RUN_CA_BUNDLE, type="bind", read_only=True))
    return Layout(mounts, tmpfs, layout_variables(warm=warm))


def layout_variables(*, warm: bool) -> dict[str, str]:
    """The variables that go with the layout (the sandbox executor's runs get the same)."""
    env = {
        "HOME": HOME,
        "PYTHONUNBUFFERED": "1",
        "UV_CACHE_DIR": CACHE_DIR,
        "UV_PYTHON_INSTALL_DIR": f"{CACHE_DIR}/python",
        "UV_LINK_MODE": "symlink",
        "UV_NO_PROGRESS": "1",
        "FASTFLOW_ROUTE_FILE": f"{WORK_DIR}/route",
    }
    if not warm:
        env.update(UV_OFFLINE="1", UV_PYTHON_DOWNLOADS="never")
    if run_ca_bundle():
        env.update(SSL_CERT_FILE=CA_PATH, REQUESTS_CA_BUNDLE=CA_PATH)
    return env


def run_ca_bundle() -> bool:
    """Whether runs get RUN_CA_BUNDLE (at CA_PATH): it is set and the file is there."""
    return bool(settings.RUN_CA_BUNDLE) and Path(settings.RUN_CA_BUNDLE).is_file()


def host_config(
    api: docker.APIClient,
    mounts: list[Mount],
    tmpfs: dict[str, str],
    memory: int | None,
    cpu: float | None,
    *,
    network: bool = True,
) -> dict:
    """The lock-down every run container keeps (docs/execution.md), with its limits; no
    network at all for a pipeline that says `"network": false`."""
    limits: dict = {"pids_limit": settings.RUN_PIDS_LIMIT}
    if memory:
        # memswap == mem: no swap on top of the limit, so exceeding it means OOM.
        limits.update(mem_limit=memory, memswap_limit=memory)
    if cpu:
        limits["nano_cpus"] = int(cpu * 1e9)
    return api.create_host_config(
        init=True,
        read_only=True,
        tmpfs=tmpfs,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        mounts=mounts,
        network_mode=settings.RUN_NETWORK if network else "none",
        log_config=LogConfig(
            type="json-file", config={"max-size": f"{settings.LOG_MAX_SIZE_MB + 1}m"}
        ),
        **limits,
    )


def slot_dir(token: str) -> Path:
    """A pooled container's own host folder: the code it is handed (`code`, mounted at
    /pipeline) and the hand-over pipe (`control/job`)."""
    return Path(settings.DATA_DIR) / "pool" / token


def waits_for_hand_over(attrs: dict) -> bool:
    """A pooled container whose hand-over pipe is still there has not been given its run
    (the worker removes the pipe as it hands the run over)."""
    token = (attrs.get("Config", {}).get("Labels") or {}).get(LABEL_SLOT)
    return bool(token) and (slot_dir(token) / "control" / "job").exists()


def run_container_name(run_id: str) -> str:
    return f"{RUN_NAME_PREFIX}{run_id}"


def run_command(spec: RunSpec) -> list[str]:
    return ["sh", f"{TOOLS_DIR}/prepare.sh", spec.entry_point]


def run_environment(spec: RunSpec, layout: Layout) -> dict[str, str]:
    """The run's variables: its own (secrets too), under what Fast-Flow sets (a pipeline
    cannot move HOME or the cache), and what prepare.sh reads."""
    return {
        **spec.env,
        **layout.env,
        **prepare_environment(spec, f"{WORK_DIR}/env", f"{TOOLS_DIR}/launcher.py"),
    }


logger = logging.getLogger(__name__)
_network_ready: set[str] = set()
# Run networks this worker could not guard the host from, and why (`manage.py up` says so).
unguarded_networks: dict[str, str] = {}
ICC_OPTION = "com.docker.network.bridge.enable_icc"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"


def ensure_run_network(api: docker.APIClient) -> None:
    """The network every run container joins: a bridge with traffic between its
    containers switched off (ICC), so one run cannot reach another."""
    name = settings.RUN_NETWORK
    if name in _network_ready:
        return
    found = [n for n in api.networks(names=[name]) if n.get("Name") == name]
    if found and (found[0].get("Options") or {}).get(ICC_OPTION) != "false":
        # Made by someone else, without Fast-Flow's one rule: runs would reach each other.
        raise ExecutorError(
            "internal_error",
            f"The Docker network {name} lets its containers reach each other; remove it "
            f"(`docker network rm {name}`) and Fast-Flow makes it again with that switched off",
        )
    if not found:
        try:
            api.create_network(
                name,
                driver="bridge",
                options={ICC_OPTION: "false"},
                labels={"fastflow.network": "runs"},
                check_duplicate=True,
            )
        except APIError as exc:
            if exc.status_code != 409:  # another worker made it meanwhile
                raise
        keep_one_run_network(api, name)
    guard_the_host(api, name)
    _network_ready.add(name)


def guard_the_host(api: docker.APIClient, name: str) -> None:
    """Runs on the network reach only RUN_HOST_PORTS of this machine (host_firewall.py) —
    where the worker can say so to the firewall; otherwise it warns, once per network."""
    network = api.inspect_network(name)
    options = network.get("Options") or {}
    interface = options.get(BRIDGE_NAME_OPTION) or f"br-{network['Id'][:12]}"
    problem = host_firewall.unguarded(interface)
    if problem:
        unguarded_networks[name] = problem
        logger.warning(
            "runs on the Docker network %s can reach every service of this machine that "
            'listens on its other addresses: %s (docs/execution.md, "What runs reach of '
            'the host")',
            name,
            problem,
        )
        return
    try:
        host_firewall.guard(interface)
    except host_firewall.FirewallError as exc:
        raise ExecutorError("internal_error", f"The host's firewall: {exc}") from exc
    unguarded_networks.pop(name, None)


def keep_one_run_network(api: docker.APIClient, name: str) -> None:
    """Engines no longer refuse a second network of the same name: workers that made it at
    the same moment agree to keep the oldest (then the lowest id) and remove the others,
    or a container naming the network would be refused as ambiguous."""
    made = [
        n
        for n in api.networks(names=[name])
        if n.get("Name") == name and (n.get("Labels") or {}).get("fastflow.network") == "runs"
    ]
    for extra in sorted(made, key=lambda n: (n.get("Created", ""), n["Id"]))[1:]:
        with contextlib.suppress(NotFound, APIError):  # gone already, or one joined it
            api.remove_network(extra["Id"])


def shared_buckets(cache: Path) -> list[Path]:
    """The shared cache's buckets a run reads (all but those uv writes during an install)."""
    try:
        entries = sorted(cache.iterdir())
    except FileNotFoundError:
        return []
    return [
        entry
        for entry in entries
        if entry.is_dir()
        and not entry.name.startswith(".")
        and not entry.name.startswith(PER_RUN_CACHE_BUCKETS)
    ]


def prepare_shared_cache(cache: Path) -> None:
    """The shared uv cache belongs to the run user, the one warm-ups write as.

    When the orchestrator is root it hands the folder over (once; a cache left by an older
    Fast-Flow, written as another uid, is handed over whole). Otherwise the folder must
    already belong to the run user: docs/execution.md says how.
    """
    cache.mkdir(parents=True, exist_ok=True)
    # Made before any run, so that every run (and the pool's profile) mounts it from the start.
    # (An orchestrator that may not write there leaves it to the first warm-up.)
    wheelhouse = cache / WHEELHOUSE_BUCKET
    if not wheelhouse.is_dir():
        with contextlib.suppress(OSError):
            wheelhouse.mkdir()
            if os.geteuid() == 0:
                os.chown(wheelhouse, RUN_UID, RUN_UID)
    if os.geteuid() != 0 or cache.stat().st_uid == RUN_UID:
        return
    for root, dirs, files in os.walk(cache):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), RUN_UID, RUN_UID)
    os.chown(cache, RUN_UID, RUN_UID)


def shared_tools() -> Path:
    """What runs inside a run (runs_app/in_run), copied under DATA_DIR: bind mounts name
    paths on the Docker host, and DATA_DIR is the folder an orchestrator in a container
    shares with the host (same path), while its own code is not."""
    target = Path(settings.DATA_DIR) / "launcher"
    target.mkdir(parents=True, exist_ok=True)
    for source in TOOLS:
        destination = target / source.name
        content = source.read_bytes()
        if not destination.exists() or destination.read_bytes() != content:
            # A name of its own: followers in other threads and processes may write at once.
            temporary = destination.with_name(f".{source.name}.{uuid.uuid4().hex}")
            shutil.copyfile(source, temporary)
            temporary.chmod(0o644)
            temporary.replace(destination)  # atomic: a starting run never sees half a file
    return target
