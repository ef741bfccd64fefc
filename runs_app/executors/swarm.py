"""SwarmExecutor: every run one service of a Docker Swarm, placed by the Swarm.

The worker talks to a manager (DOCKER_HOST); the Swarm decides on which node each run goes,
by its resources and constraints. Nothing is shared with the nodes but the Swarm itself:

- the run's code and Fast-Flow's tools travel as Swarm configs (the parts of one gzipped
  tar, each under Swarm's 500 KB) and its variables — secrets among them — as a Swarm
  secret of its own, so `docker service inspect` shows none of them; all of them labelled
  with the run and removed with it;
- each node's uv cache is a volume of that node (`fastflow-uv-cache`), read-only for runs
  and written by warm-ups, which run on every node at once (a global service);
- the first process (runs_app/in_run/swarm_boot.py) unpacks, links the cache, samples its
  own cgroup for the live charts (the manager has no stats) and starts prepare.sh.

The lock-down is the Docker executor's where a service spec can say it: uid 10001, a
read-only root, every capability dropped, an init process, limits on memory, CPU and
processes, tmpfs for all it may write, no published ports, no network but the node's
default bridge. What a spec cannot say, the engines must (docs/swarm.md): no new
privileges (checked by every run as it starts) and no traffic between containers.

A run is a `replicated` service of one replica that is never restarted, not a
`replicated-job`: on Docker 20.10 removing a job's service neither stops nor removes its
task (moby#44312), so a cancelled job would run on and every finished one would leave its
container behind; a replicated service's tasks go with it.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings
from docker.errors import APIError, NotFound

from pipelines_app.bundles import entries
from runs_app.executors import engine
from runs_app.executors.base import (
    EngineUnavailable,
    ExecutorError,
    Outcome,
    RunSpec,
    Watch,
    prepare_environment,
)
from runs_app.executors.docker import DockerExecutor
from runs_app.executors.engine import docker_timestamp
from runs_app.executors.layout import (
    LABEL_PIPELINE,
    LABEL_RUN,
    RUN_NAME_PREFIX,
    RUN_UID,
    RUN_USER,
    run_container_name,
)
from runs_app.executors.swarm_follower import FINAL, ServiceFollower
from runs_app.in_run import TOOLS, swarm_boot
from runs_app.logs import LogWriter

CACHE_VOLUME = "fastflow-uv-cache"
CACHE_MOUNT = str(swarm_boot.SHARED_CACHE)
WORK = str(swarm_boot.WORK)
RUN_CACHE = str(swarm_boot.RUN_CACHE)
DELIVERY = str(swarm_boot.DELIVERY)
BOOT = "/run/fastflow-boot.py"
SECRET_TARGET = swarm_boot.SECRET.name
PART_BYTES = 480 * 1024  # Swarm keeps configs under 500 KB
MAX_PARTS = 64  # ~30 MB of compressed code: more is not what configs are for
WORK_TMPFS_MB = 512
LABEL_PURPOSE = "fastflow.purpose"
# A run's secret and configs without its service, older than this, are left over (a worker
# that died between making them and the service): swept by reconcile.
SWEEP_AFTER = timedelta(minutes=2)
REPLICATED_ONCE = {"Replicated": {"Replicas": 1}}  # and restart condition none


class SwarmExecutor(DockerExecutor):
    name = "swarm"
    follower = ServiceFollower

    def check(self) -> None:
        with engine.reachable(also=(APIError,)):
            info = self.api.info()
        swarm = info.get("Swarm") or {}
        if not swarm.get("ControlAvailable"):
            raise EngineUnavailable(
                f"The Docker engine at {engine.host()} is not a Swarm manager "
                f"(swarm state: {swarm.get('LocalNodeState') or 'unknown'})"
            )

    # --- starting --------------------------------------------------------------------------

    def start(self, spec: RunSpec, log: LogWriter, watch: Watch) -> Outcome:
        image_id = self.check_image(spec.image or settings.WORKER_IMAGE)
        if spec.data_dir is not None and spec.purpose == "run":
            raise ExecutorError(
                "internal_error",
                "its pipeline.json asks for a data_folder, a folder on one machine's disk; "
                "the swarm executor places runs on any node and has none",
            )
        if not spec.network and spec.purpose == "run":
            raise ExecutorError(
                "internal_error",
                'its pipeline.json says "network": false, which the swarm executor cannot '
                "give a service; run it with the docker or sandbox executor "
                '(pipeline.json "executor", PIPELINE_EXECUTORS)',
            )
        name = run_container_name(spec.run_id)
        labels = {
            LABEL_RUN: spec.run_id,
            LABEL_PIPELINE: spec.pipeline,
            LABEL_PURPOSE: spec.purpose,
        }
        parts = split(delivery(spec))
        if len(parts) > MAX_PARTS:
            raise ExecutorError(
                "internal_error",
                f"its code is {len(parts) * PART_BYTES // 1024**2} MB or more compressed; the "
                f"swarm executor delivers at most {MAX_PARTS * PART_BYTES // 1024**2} MB",
            )
        made: list[tuple[str, str]] = []  # (kind, id), removed again if the service is not
        # What an earlier follower of this run made before it died, without a service.
        self._remove_labelled(f"{LABEL_RUN}={spec.run_id}")
        try:
            with engine.reachable("stopped answering"):
                secret = self.api.create_secret(
                    f"{name}-env", json.dumps(variables(spec)).encode(), labels=labels
                )["ID"]
                made.append(("secret", secret))
                configs = []
                for number, part in enumerate([boot_script(), *parts]):
                    config = self.api.create_config(f"{name}-{number:03d}", part, labels=labels)[
                        "ID"
                    ]
                    made.append(("config", config))
                    configs.append((config, f"{name}-{number:03d}"))
                self.api.create_service(
                    task_template(spec, image_id, secret, f"{name}-env", configs),
                    name=name,
                    labels=labels,
                    # A warm-up fills every node's cache at once.
                    mode={"Global": {}} if spec.purpose == "warm" else REPLICATED_ONCE,
                )
        except APIError as exc:
            self._remove_made(made)
            raise ExecutorError("internal_error", f"The Swarm refused the run: {exc}") from exc
        except BaseException:
            self._remove_made(made)
            raise
        # The handle is the service's name: it names the run's secret and configs too, so
        # they can be removed after the service is gone (cancel and loss remove it first).
        watch.on_started(name)
        return self.follower(self.api, name, spec, log, watch, {}).follow()

    def _remove_made(self, made: list[tuple[str, str]]) -> None:
        for kind, made_id in made:
            try:
                with engine.reachable():
                    getattr(self.api, f"remove_{kind}")(made_id)
            except (NotFound, APIError, ExecutorError):
                pass  # swept later (labelled_containers)

    # --- housekeeping ------------------------------------------------------------------------

    def find(self, run_id: str) -> str | None:
        with engine.reachable():
            found = self.api.services(filters={"label": f"{LABEL_RUN}={run_id}"})
        return found[0]["Spec"]["Name"] if found else None

    def state(self, handle: str) -> str | None:
        """'running' while its task waits or runs, 'exited' once it ended, None when the
        service is gone."""
        try:
            with engine.reachable():
                self.api.inspect_service(handle)
                tasks = self.api.tasks(filters={"service": handle})
        except NotFound:
            return None
        if tasks and all(task["Status"]["State"] in FINAL for task in tasks):
            return "exited"
        return "running"

    def labelled_containers(self) -> dict[str, str]:
        """{run id: service} of every run's service; secrets and configs of runs whose
        service is gone (a worker that died between making them and the service) go."""
        with engine.reachable():
            services = self.api.services(filters={"label": LABEL_RUN})
        found = {
            service["Spec"]["Labels"][LABEL_RUN]: service["Spec"]["Name"] for service in services
        }
        made_before = datetime.now(UTC) - SWEEP_AFTER
        self._remove_labelled(LABEL_RUN, keep=set(found), made_before=made_before)
        return found

    def _remove_labelled(
        self, label: str, keep: set[str] = frozenset(), made_before: datetime | None = None
    ) -> None:
        """Secrets and configs with `label` (a run's: "fastflow.run_id=<id>"), but those of
        the runs in `keep` and those made since `made_before` (a run being made right now
        has them before its service)."""
        with engine.reachable():
            for kind in ("secret", "config"):
                for item in getattr(self.api, f"{kind}s")(filters={"label": label}):
                    if item["Spec"]["Labels"].get(LABEL_RUN) in keep:
                        continue
                    if made_before and docker_timestamp(item["CreatedAt"])[1] > made_before:
                        continue
                    with contextlib.suppress(NotFound, APIError):
                        getattr(self.api, f"remove_{kind}")(item["ID"])

    def remove(self, handle: str) -> None:
        """The service (Swarm stops its task: SIGTERM, then SIGKILL after the grace
        period), then the run's secret and configs (`handle` is the service's name)."""
        try:
            with engine.reachable():
                self.api.remove_service(handle)
        except NotFound:
            pass  # removed already (cancel, timeout, a lost node): its secret and configs next
        run_id = handle.removeprefix(RUN_NAME_PREFIX)
        self._remove_labelled(f"{LABEL_RUN}={run_id}")


def variables(spec: RunSpec) -> dict[str, str]:
    """Everything the run's processes see, its own variables and secrets first (under what
    Fast-Flow sets): delivered as its Swarm secret, never in the service spec."""
    env = {
        "HOME": f"{WORK}/home",
        "PYTHONUNBUFFERED": "1",
        "UV_LINK_MODE": "symlink",
        "UV_NO_PROGRESS": "1",
        "FASTFLOW_ROUTE_FILE": f"{WORK}/route",
    }
    if spec.purpose == "warm":
        env.update(UV_CACHE_DIR=CACHE_MOUNT, UV_PYTHON_INSTALL_DIR=f"{CACHE_MOUNT}/python")
    else:
        env.update(
            UV_CACHE_DIR=RUN_CACHE,
            UV_PYTHON_INSTALL_DIR=f"{RUN_CACHE}/python",
            UV_OFFLINE="1",
            UV_PYTHON_DOWNLOADS="never",
            # A node that joined the Swarm after the warm-up lacks the packages.
            FASTFLOW_CACHE_FALLBACK="1",
        )
    if settings.RUN_CA_BUNDLE and Path(settings.RUN_CA_BUNDLE).is_file():
        env.update(SSL_CERT_FILE=f"{WORK}/tools/ca.pem", REQUESTS_CA_BUNDLE=f"{WORK}/tools/ca.pem")
    return {
        **spec.env,
        **env,
        **prepare_environment(spec, f"{WORK}/env", f"{WORK}/tools/launcher.py"),
    }


def delivery(spec: RunSpec) -> bytes:
    """One gzipped tar: the pipeline's code (pipeline/), the tools (tools/) and the CA
    bundle runs trust (tools/ca.pem)."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=6, mtime=0) as packed,
        tarfile.open(fileobj=packed, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        files = [
            (f"pipeline/{entry.name}", entry.path, entry.executable, entry.link)
            for entry in entries(spec.folder)
        ]
        files += [(f"tools/{tool.name}", tool, False, "") for tool in TOOLS]
        if settings.RUN_CA_BUNDLE and Path(settings.RUN_CA_BUNDLE).is_file():
            files.append(("tools/ca.pem", Path(settings.RUN_CA_BUNDLE), False, ""))
        for name, path, executable, link in files:
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
                continue
            data = path.read_bytes()
            info.size, info.mode = len(data), 0o755 if executable else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def split(data: bytes) -> list[bytes]:
    return [data[start : start + PART_BYTES] for start in range(0, len(data), PART_BYTES)]


def boot_script() -> bytes:
    return Path(swarm_boot.__file__).read_bytes()


def task_template(
    spec: RunSpec, image_id: str, secret_id: str, secret_name: str, configs: list[tuple[str, str]]
) -> dict:
    """The service's task: the lock-down, its limits and reservations, where it may go."""
    warm = spec.purpose == "warm"
    boot, *parts = configs

    def config(config_id: str, name: str, target: str) -> dict:
        return {
            "ConfigID": config_id,
            "ConfigName": name,
            "File": {"Name": target, "UID": str(RUN_UID), "GID": str(RUN_UID), "Mode": 0o444},
        }

    def tmpfs(target: str, megabytes: int) -> dict:
        return {
            "Type": "tmpfs",
            "Target": target,
            "TmpfsOptions": {"SizeBytes": megabytes * 1024**2, "Mode": 0o1777},
        }

    limits: dict = {"Pids": settings.RUN_PIDS_LIMIT}
    if spec.mem_hard_limit_bytes:
        limits["MemoryBytes"] = spec.mem_hard_limit_bytes
    if spec.cpu_hard_limit:
        limits["NanoCPUs"] = int(spec.cpu_hard_limit * 1e9)
    reservations: dict = {}
    if spec.mem_soft_limit_bytes:
        reservations["MemoryBytes"] = spec.mem_soft_limit_bytes
    if spec.cpu_soft_limit:
        reservations["NanoCPUs"] = int(spec.cpu_soft_limit * 1e9)
    return {
        "ContainerSpec": {
            "Image": image_id,  # by id: no node tries a registry first (~20 s each)
            "Command": ["python3", "-I", BOOT, spec.entry_point],
            "User": RUN_USER,
            "Dir": "/",
            "Env": ["PYTHONDONTWRITEBYTECODE=1"],
            "Labels": {LABEL_RUN: spec.run_id},
            "Init": True,
            "ReadOnly": True,
            "CapabilityDrop": ["ALL"],
            "StopGracePeriod": settings.RUN_STOP_GRACE_SECONDS * 10**9,
            "Mounts": [
                {
                    "Type": "volume",
                    "Source": CACHE_VOLUME,
                    "Target": CACHE_MOUNT,
                    "ReadOnly": not warm,
                },
                tmpfs(WORK, WORK_TMPFS_MB),
                tmpfs(RUN_CACHE, 256),
                tmpfs("/tmp", settings.RUN_TMPFS_SIZE_MB),  # noqa: S108 (its own; 1777 in the image)
            ],
            "Secrets": [
                {
                    "SecretID": secret_id,
                    "SecretName": secret_name,
                    "File": {
                        "Name": SECRET_TARGET,
                        "UID": str(RUN_UID),
                        "GID": str(RUN_UID),
                        "Mode": 0o400,
                    },
                }
            ],
            "Configs": [
                config(*boot, BOOT),
                *(
                    config(config_id, name, f"{DELIVERY}/{number:03d}")
                    for number, (config_id, name) in enumerate(parts)
                ),
            ],
        },
        "Resources": {"Limits": limits, "Reservations": reservations},
        "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
        "Placement": {"Constraints": constraints(spec)},
        "LogDriver": {
            "Name": "json-file",
            "Options": {"max-size": f"{settings.LOG_MAX_SIZE_MB + 1}m"},
        },
    }


def constraints(spec: RunSpec) -> list[str]:
    """The instance's (SWARM_CONSTRAINTS) and the pipeline's (`placement`: node labels)."""
    return [
        *settings.SWARM_CONSTRAINTS,
        *(f"node.labels.{name}=={value}" for name, value in spec.placement),
    ]
