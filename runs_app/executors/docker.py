"""DockerExecutor: every run in its own fresh, locked-down container from WORKER_IMAGE."""

from __future__ import annotations

import logging
import os
import struct
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
from django.conf import settings
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import LogConfig, Mount

from runs_app.executors.base import (
    LAUNCHER,
    ExecutorError,
    MarkerReader,
    Outcome,
    RunSpec,
    Watch,
    record_sample,
    soft_limit_warnings,
    supervise,
    uv_command,
)
from runs_app.logs import STDERR, STDOUT, LogWriter

logger = logging.getLogger(__name__)

RUN_USER = "1000:1000"  # the worker image's `fastflow` user
HOME = "/home/fastflow"
CODE_DIR = "/pipeline"
CACHE_DIR = "/uv-cache"
RUN_DIR = "/fastflow-run"
LAUNCHER_PATH = "/opt/fastflow/launcher.py"
CA_PATH = "/etc/ssl/fastflow-ca.pem"
LABEL_RUN, LABEL_PIPELINE = "fastflow.run_id", "fastflow.pipeline"
BUILD_HINT = (
    "build it with `bash runs_app/worker_image/build-offline.sh` (no registry needed) "
    "or `docker build -t {image} runs_app/worker_image`"
)


def docker_timestamp(raw: str) -> tuple[str, datetime]:
    """Docker's RFC 3339 time (trailing zeros trimmed) as a fixed-width string and a datetime.

    Fixed width (9 fraction digits) makes stored timestamps compare correctly as text.
    """
    seconds, _, fraction = raw.rstrip("Z").partition(".")
    fraction = (fraction + "000000000")[:9]
    moment = datetime.fromisoformat(seconds).replace(tzinfo=UTC) + timedelta(
        microseconds=int(fraction[:6])
    )
    return f"{seconds}.{fraction}Z", moment


class DockerExecutor:
    name = "docker"

    def __init__(self) -> None:
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.from_env(timeout=30)
                self._client.ping()
            except DockerException as exc:
                self._client = None
                raise ExecutorError(
                    "internal_error", f"The Docker engine cannot be reached ({exc})"
                ) from exc
        return self._client

    # --- starting --------------------------------------------------------------------------

    def start(self, spec: RunSpec, log: LogWriter, watch: Watch) -> Outcome:
        container = self._create(spec)
        watch.on_started(container.id)
        try:
            container.start()
        except APIError as exc:
            self.remove(container.id)
            raise ExecutorError("internal_error", f"The container did not start: {exc}") from exc
        return self._follow(container.id, spec, log, watch, resume_after={})

    def _create(self, spec: RunSpec):
        image = settings.WORKER_IMAGE
        try:
            self.client.images.get(image)
        except ImageNotFound:
            raise ExecutorError(
                "image_missing",
                f"The worker image {image} is not on this machine; "
                + BUILD_HINT.format(image=image),
            ) from None
        _prepare_writable_dir(Path(settings.UV_CACHE_DIR))
        _prepare_writable_dir(spec.run_dir)
        mounts = [
            Mount(CODE_DIR, str(spec.folder), type="bind", read_only=True),
            Mount(CACHE_DIR, str(settings.UV_CACHE_DIR), type="bind"),
            Mount(RUN_DIR, str(spec.run_dir), type="bind"),
            Mount(LAUNCHER_PATH, str(_shared_launcher()), type="bind", read_only=True),
        ]
        env = {
            **spec.env,
            "HOME": HOME,
            "PYTHONUNBUFFERED": "1",
            "UV_CACHE_DIR": CACHE_DIR,
            "UV_PYTHON_INSTALL_DIR": f"{CACHE_DIR}/python",
            "FASTFLOW_ROUTE_FILE": f"{RUN_DIR}/route",
        }
        if settings.RUN_CA_BUNDLE and Path(settings.RUN_CA_BUNDLE).is_file():
            mounts.append(Mount(CA_PATH, settings.RUN_CA_BUNDLE, type="bind", read_only=True))
            env.update(SSL_CERT_FILE=CA_PATH, REQUESTS_CA_BUNDLE=CA_PATH)
        tmpfs_size = f"size={settings.RUN_TMPFS_SIZE_MB}m"
        command = uv_command(spec, LAUNCHER_PATH)
        # uv's version is told first, then uv builds the environment and starts the launcher.
        shell = 'printf "\\036fastflow:uv %s\\n" "$(uv --version)" >&2; exec "$@"'
        limits = {}
        if spec.mem_hard_limit_bytes:
            # memswap == mem: no swap on top of the limit, so exceeding it means OOM.
            limits.update(
                mem_limit=spec.mem_hard_limit_bytes, memswap_limit=spec.mem_hard_limit_bytes
            )
        if spec.cpu_hard_limit:
            limits["nano_cpus"] = int(spec.cpu_hard_limit * 1e9)
        try:
            return self.client.containers.create(
                image,
                command=["sh", "-c", shell, "fastflow", *command],
                name=f"fastflow-run-{spec.run_id}",
                labels={LABEL_RUN: spec.run_id, LABEL_PIPELINE: spec.pipeline},
                environment=env,
                working_dir=CODE_DIR,
                user=RUN_USER,
                read_only=True,
                tmpfs={
                    "/tmp": f"{tmpfs_size},mode=1777",  # noqa: S108 (the container's own /tmp)
                    HOME: f"{tmpfs_size},uid=1000,gid=1000",
                },
                cap_drop=["ALL"],
                security_opt=["no-new-privileges:true"],
                pids_limit=settings.RUN_PIDS_LIMIT,
                mounts=mounts,
                log_config=LogConfig(
                    type="json-file", config={"max-size": f"{settings.LOG_MAX_SIZE_MB + 1}m"}
                ),
                **limits,
            )
        except APIError as exc:
            raise ExecutorError("internal_error", f"The container was refused: {exc}") from exc

    # --- following ---------------------------------------------------------------------------

    def reattach(
        self,
        spec: RunSpec,
        container_id: str,
        log: LogWriter,
        watch: Watch,
        resume_after: dict[str, str],
    ) -> Outcome:
        """Follow a container started by a worker that is gone, from where its log stops."""
        return self._follow(container_id, spec, log, watch, resume_after)

    def _follow(
        self,
        container_id: str,
        spec: RunSpec,
        log: LogWriter,
        watch: Watch,
        resume_after: dict[str, str],
    ) -> Outcome:
        outcome = Outcome()
        api = self.client.api
        state = api.inspect_container(container_id)["State"]
        outcome.started_at = docker_timestamp(state["StartedAt"])[1]
        reader = MarkerReader(log, outcome)
        done = threading.Event()
        log_thread = threading.Thread(
            target=self._stream_logs, args=(container_id, reader, resume_after), daemon=True
        )
        stats_thread = threading.Thread(
            target=self._watch_stats, args=(container_id, outcome, watch, done), daemon=True
        )
        log_thread.start()
        stats_thread.start()

        def still_running(wait_seconds: float) -> bool:
            log_thread.join(timeout=wait_seconds)  # the log stream ends when the container does
            return log_thread.is_alive()

        supervise(
            spec,
            outcome,
            log,
            watch,
            still_running=still_running,
            stop=lambda grace: self._stop(container_id, grace),
        )
        result = api.wait(container_id)
        done.set()
        stats_thread.join(timeout=2)
        state = api.inspect_container(container_id)["State"]
        outcome.exit_code = result.get("StatusCode", state.get("ExitCode"))
        outcome.oom_killed = outcome.oom_killed or bool(state.get("OOMKilled"))
        outcome.limit_warnings = soft_limit_warnings(
            spec, outcome.peak_cpu_percent, outcome.peak_memory_bytes
        )
        return outcome

    def _stream_logs(
        self, container_id: str, reader: MarkerReader, resume_after: dict[str, str]
    ) -> None:
        """Read docker's multiplexed log stream (stdout and stderr frames) until the end.

        docker-py's public `logs()` merges the two streams; the frame header tells them
        apart, so the stream is read here frame by frame.
        """
        api = self.client.api
        params = {"stdout": 1, "stderr": 1, "follow": 1, "timestamps": 1}
        if resume_after:
            oldest = min(resume_after.values())
            params["since"] = int(docker_timestamp(oldest)[1].timestamp())
        response = api._get(
            api._url("/containers/{0}/logs", container_id), params=params, stream=True
        )
        api._raise_for_status(response)
        pending = {STDOUT: "", STDERR: ""}
        raw = response.raw
        try:
            while True:
                header = raw.read(8)
                if len(header) < 8:
                    break
                kind, length = struct.unpack(">BxxxL", header)
                payload = raw.read(length).decode("utf-8", errors="replace")
                stream = STDERR if kind == 2 else STDOUT
                stamp, _, text = payload.partition(" ")
                timestamp, moment = docker_timestamp(stamp)
                if not text.endswith("\n"):  # docker splits lines longer than 16 KiB
                    pending[stream] += text
                    continue
                text = pending[stream] + text[:-1]
                pending[stream] = ""
                if timestamp <= resume_after.get(stream, ""):
                    continue  # written before the previous follower stopped
                reader.line(stream, text.rstrip("\r"), timestamp, moment)
        finally:
            response.close()

    def _watch_stats(
        self, container_id: str, outcome: Outcome, watch: Watch, done: threading.Event
    ) -> None:
        """Peak CPU and memory from docker's live stats (about one sample a second)."""
        try:
            for sample in self.client.api.stats(container_id, decode=True, stream=True):
                if done.is_set():
                    break
                record_sample(outcome, watch, _cpu_percent(sample), _memory_bytes(sample))
        except (DockerException, ValueError, OSError):
            pass  # the container is gone; the peaks so far stand

    def _stop(self, container_id: str, grace_seconds: int) -> None:
        try:
            if grace_seconds:
                self.client.api.stop(container_id, timeout=grace_seconds)
            else:
                self.client.api.kill(container_id)
        except NotFound:
            pass
        except APIError as exc:
            if "is not running" not in str(exc):
                raise

    # --- housekeeping ------------------------------------------------------------------------

    def container_state(self, container_id: str) -> str | None:
        """'running', 'exited', ... or None when the container does not exist."""
        try:
            return self.client.api.inspect_container(container_id)["State"]["Status"]
        except NotFound:
            return None

    def labelled_containers(self) -> dict[str, str]:
        """{run public id: container id} of every Fast-Flow container on this engine."""
        containers = self.client.api.containers(all=True, filters={"label": LABEL_RUN})
        return {c["Labels"][LABEL_RUN]: c["Id"] for c in containers}

    def remove(self, container_id: str) -> None:
        try:
            self.client.api.remove_container(container_id, force=True)
        except NotFound:
            pass
        except APIError as exc:
            if "already in progress" not in str(exc):
                raise


def _shared_launcher() -> Path:
    """The launcher, copied under DATA_DIR: bind mounts name paths on the Docker host, and
    DATA_DIR is the folder an orchestrator in a container shares with the host (same path),
    while its own code is not."""
    target = Path(settings.DATA_DIR) / "launcher" / "launcher.py"
    source = LAUNCHER.read_bytes()
    if not target.exists() or target.read_bytes() != source:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_suffix(".tmp")
        temporary.write_bytes(source)
        temporary.chmod(0o644)
        temporary.replace(target)  # atomic: a starting run never sees half a file
    return target


def _prepare_writable_dir(path: Path) -> None:
    """Folders the run writes to must belong to the run user (uid 1000)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0 and path.stat().st_uid != 1000:
        os.chown(path, 1000, 1000)


def _cpu_percent(sample: dict) -> float | None:
    cpu, previous = sample.get("cpu_stats", {}), sample.get("precpu_stats", {})
    try:
        cpu_delta = cpu["cpu_usage"]["total_usage"] - previous["cpu_usage"]["total_usage"]
        system_delta = cpu["system_cpu_usage"] - previous["system_cpu_usage"]
    except KeyError:
        return None
    if system_delta <= 0 or cpu_delta < 0:
        return None
    cores = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or [1])
    return cpu_delta / system_delta * cores * 100


def _memory_bytes(sample: dict) -> int | None:
    memory = sample.get("memory_stats", {})
    usage = memory.get("usage")
    if usage is None:
        return None
    stats = memory.get("stats", {})
    # Page cache is not the program's memory (cgroup v1 "cache", v2 "inactive_file").
    return usage - stats.get("cache", stats.get("inactive_file", 0))
