"""DockerExecutor: every run in its own fresh, locked-down container from WORKER_IMAGE.

A run container gets the least that works (docs/execution.md has the full list): an init
process, its own uid (not the orchestrator's), no capabilities, no new privileges, a
read-only root file system, limits on memory, CPU and processes, tmpfs for everything it
may write (so it cannot fill the host's disk), the pipeline code read-only, and a network
of its own on which run containers cannot reach each other. The shared uv cache is mounted
read-only: packages are linked from it into the run's own environment on a tmpfs, so no
run can change what another run executes. Only warm-ups (no secrets, no pipeline code but
its requirements) write to the cache.

Following a container survives quiet runs and a flaky engine: the log stream has no socket
timeout by default (DOCKER_STREAM_TIMEOUT sets one, for tests) and is opened again after
the last line seen whenever it ends while the container still runs; the end of a run is
decided by the engine's state, never by a reader that stopped. When the engine cannot be
reached for ENGINE_RETRY_SECONDS, the follower gives the run up (EngineUnavailable) and
the container goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import requests
import urllib3
from django.conf import settings
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import LogConfig, Mount

from runs_app.executors.base import (
    ENVIRONMENT_LOCK,
    LAUNCHER,
    MARK,
    MODELS_RUNNER,
    PREPARE,
    RECEIVE,
    EngineUnavailable,
    ExecutorError,
    MarkerReader,
    Outcome,
    RunSpec,
    Watch,
    ensure_data_folder,
    log_verdict,
    prepare_environment,
    record_sample,
    soft_limit_warnings,
    supervise,
)
from runs_app.logs import MAX_LINE_CHARS, STDERR, STDOUT, LogWriter

logger = logging.getLogger(__name__)

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
# An engine that does not answer for this long: the follower releases the run.
ENGINE_RETRY_SECONDS = 10.0
# The engine says the container ended but the log stream has not: it is closed after this.
STREAM_END_GRACE_SECONDS = 5.0
EXIT_WAIT_SECONDS = 1.0
BUILD_HINT = (
    "build it with `bash runs_app/worker_image/build-offline.sh` (no registry needed) "
    "or `docker build -t {image} runs_app/worker_image`"
)
NEWER_PYTHON_HINT = (
    "it is the image PYTHON_IMAGES names for the pipeline's python_version; build it with "
    "`SUITE=trixie bash runs_app/worker_image/build-offline.sh {image}` (Python 3.13) or "
    "`docker build --build-arg PYTHON=3.13 -t {image} runs_app/worker_image`"
)
# What an unreachable engine looks like through docker-py.
ENGINE_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    urllib3.exceptions.ProtocolError,
    ConnectionError,
    socket.timeout,
)
# Markers that mean the same when read twice (a re-attached follower reads them again).
# Steps are stored by their id, artifact pieces at their offset: the same when read twice.
REPEATABLE = ("started", "uv", "oom", "route", "handover", "step", "artifact")
# What a stream that ends early raises (closed, timed out, cut off): read it again.
STREAM_ERRORS = (*ENGINE_ERRORS, requests.exceptions.RequestException, urllib3.exceptions.HTTPError)


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


def docker_since(timestamp: str) -> str:
    """A stored timestamp as the `since` of docker's log API, to the nanosecond."""
    seconds, _, fraction = timestamp.rstrip("Z").partition(".")
    epoch = int(datetime.fromisoformat(seconds).replace(tzinfo=UTC).timestamp())
    return f"{epoch}.{(fraction + '000000000')[:9]}"


class DockerExecutor:
    name = "docker"

    def __init__(self) -> None:
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.from_env(timeout=settings.DOCKER_API_TIMEOUT)
            except DockerException as exc:
                raise EngineUnavailable(f"The Docker engine cannot be reached ({exc})") from exc
        return self._client

    @property
    def api(self) -> docker.APIClient:
        return self.client.api

    def check(self) -> None:
        try:
            self.api.ping()
        except (*ENGINE_ERRORS, DockerException) as exc:
            raise EngineUnavailable(f"The Docker engine cannot be reached ({exc})") from exc

    # --- starting --------------------------------------------------------------------------

    def start(self, spec: RunSpec, log: LogWriter, watch: Watch) -> Outcome:
        try:
            container_id = self._create(spec)
        except ENGINE_ERRORS as exc:
            raise EngineUnavailable(f"The Docker engine stopped answering ({exc})") from exc
        watch.on_started(container_id)
        try:
            self.api.start(container_id)
        except ENGINE_ERRORS as exc:
            raise EngineUnavailable(f"The Docker engine stopped answering ({exc})") from exc
        except APIError as exc:
            self.remove(container_id)
            raise ExecutorError("internal_error", f"The container did not start: {exc}") from exc
        return ContainerFollower(self, container_id, spec, log, watch, {}).follow()

    def reattach(
        self,
        spec: RunSpec,
        handle: str,
        log: LogWriter,
        watch: Watch,
        resume_after: dict[str, str],
    ) -> Outcome:
        return ContainerFollower(self, handle, spec, log, watch, resume_after).follow()

    def check_image(self, image: str = "") -> str:
        """The id of `image` (WORKER_IMAGE when not given); ExecutorError (image_missing)
        unless it is there and of this version."""
        image = image or settings.WORKER_IMAGE
        try:
            found = self.api.inspect_image(image)
            labels = found["Config"].get("Labels") or {}
        except ImageNotFound:
            raise ExecutorError(
                "image_missing",
                f"The worker image {image} is not on this machine; "
                + (BUILD_HINT if image == settings.WORKER_IMAGE else NEWER_PYTHON_HINT).format(
                    image=image
                ),
            ) from None
        if labels.get(IMAGE_VERSION_LABEL) != IMAGE_VERSION:
            raise ExecutorError(
                "image_missing",
                f"The worker image {image} was built for an older Fast-Flow (version "
                f"{labels.get(IMAGE_VERSION_LABEL, '1')}, this one needs {IMAGE_VERSION}); "
                "rebuild it with `FORCE=1 bash runs_app/worker_image/build-offline.sh` "
                f"or `docker build -t {image} runs_app/worker_image`",
            )
        return found["Id"]

    def _create(self, spec: RunSpec) -> str:
        image = spec.image or settings.WORKER_IMAGE
        self.check_image(image)
        layout = self.layout(warm=spec.purpose == "warm")
        mounts = [Mount(CODE_DIR, str(spec.folder), type="bind", read_only=True), *layout.mounts]
        if spec.data_dir is not None and spec.purpose == "run":
            # The pipeline's own persistent folder (pipeline.json data_folder), its runs only.
            ensure_data_folder(spec.data_dir, RUN_UID)
            mounts.append(Mount(DATA_MOUNT, str(spec.data_dir), type="bind"))
            layout.env["FASTFLOW_DATA_DIR"] = DATA_MOUNT
        host_config = self.host_config(
            mounts, layout.tmpfs, spec.mem_hard_limit_bytes, spec.cpu_hard_limit
        )
        try:
            created = self.api.create_container(
                image,
                command=run_command(spec),
                name=run_container_name(spec.run_id),
                labels={LABEL_RUN: spec.run_id, LABEL_PIPELINE: spec.pipeline},
                environment=run_environment(spec, layout),
                working_dir=CODE_DIR,
                user=RUN_USER,
                host_config=host_config,
            )
        except APIError as exc:
            raise ExecutorError("internal_error", f"The container was refused: {exc}") from exc
        return created["Id"]

    def layout(self, *, warm: bool) -> Layout:
        """What every run container is given apart from its code, limits and own variables:
        tools, the uv cache (its own on a tmpfs, shared buckets read-only; warm-ups write the
        shared one), tmpfs for all it may write, the CA bundle. A pooled container is made
        from the same layout (runs_app/executors/pool.py)."""
        ensure_run_network(self.api)
        shared_cache = Path(settings.UV_CACHE_DIR)
        prepare_shared_cache(shared_cache)
        mounts = [Mount(TOOLS_DIR, str(shared_tools()), type="bind", read_only=True)]
        tmpfs = {
            "/tmp": f"size={settings.RUN_TMPFS_SIZE_MB}m,mode=1777",  # noqa: S108 (its own)
            HOME: f"size={settings.RUN_TMPFS_SIZE_MB}m,uid={RUN_UID},gid={RUN_UID},mode=0700",
            WORK_DIR: f"size={WORK_TMPFS_MB}m,uid={RUN_UID},gid={RUN_UID},mode=0700,exec",
        }
        env = {
            "HOME": HOME,
            "PYTHONUNBUFFERED": "1",
            "UV_CACHE_DIR": CACHE_DIR,
            "UV_PYTHON_INSTALL_DIR": f"{CACHE_DIR}/python",
            "UV_LINK_MODE": "symlink",
            "UV_NO_PROGRESS": "1",
            "FASTFLOW_ROUTE_FILE": f"{WORK_DIR}/route",
        }
        if warm:
            # The one container that writes the shared cache: no secrets, no pipeline code.
            mounts.append(Mount(CACHE_DIR, str(shared_cache), type="bind"))
        else:
            # The run's own cache on a tmpfs, with the shared buckets read-only inside it.
            tmpfs[CACHE_DIR] = (
                f"size={RUN_CACHE_TMPFS_MB}m,uid={RUN_UID},gid={RUN_UID},mode=0755,exec"
            )
            mounts += [
                Mount(f"{CACHE_DIR}/{bucket.name}", str(bucket), type="bind", read_only=True)
                for bucket in shared_buckets(shared_cache)
            ]
            env.update(UV_OFFLINE="1", UV_PYTHON_DOWNLOADS="never")
        if settings.RUN_CA_BUNDLE and Path(settings.RUN_CA_BUNDLE).is_file():
            mounts.append(Mount(CA_PATH, settings.RUN_CA_BUNDLE, type="bind", read_only=True))
            env.update(SSL_CERT_FILE=CA_PATH, REQUESTS_CA_BUNDLE=CA_PATH)
        return Layout(mounts, tmpfs, env)

    def host_config(
        self, mounts: list[Mount], tmpfs: dict[str, str], memory: int | None, cpu: float | None
    ) -> dict:
        """The lock-down every run container keeps (docs/execution.md), with its limits."""
        limits: dict = {"pids_limit": settings.RUN_PIDS_LIMIT}
        if memory:
            # memswap == mem: no swap on top of the limit, so exceeding it means OOM.
            limits.update(mem_limit=memory, memswap_limit=memory)
        if cpu:
            limits["nano_cpus"] = int(cpu * 1e9)
        return self.api.create_host_config(
            init=True,
            read_only=True,
            tmpfs=tmpfs,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            mounts=mounts,
            network_mode=settings.RUN_NETWORK,
            log_config=LogConfig(
                type="json-file", config={"max-size": f"{settings.LOG_MAX_SIZE_MB + 1}m"}
            ),
            **limits,
        )

    # --- housekeeping ------------------------------------------------------------------------

    def find(self, run_id: str) -> str | None:
        """By name: a pooled container has the run's name, not its label (labels are fixed
        when a container is made, before the run was known)."""
        name = run_container_name(run_id)
        try:
            found = self.api.containers(
                all=True, filters={"label": LABEL_RUN, "name": f"^/{name}$"}
            )
        except ENGINE_ERRORS as exc:
            raise EngineUnavailable(f"The Docker engine cannot be reached ({exc})") from exc
        return found[0]["Id"] if found else None

    def state(self, handle: str) -> str | None:
        try:
            attrs = self.api.inspect_container(handle)
        except NotFound:
            return None
        except ENGINE_ERRORS as exc:
            raise EngineUnavailable(f"The Docker engine cannot be reached ({exc})") from exc
        if waits_for_hand_over(attrs):
            return "created"  # a pooled container still waiting: the run never began in it
        return attrs["State"]["Status"]

    def labelled_containers(self) -> dict[str, str]:
        """{run id: container} of every run container, pooled ones once they hold a run."""
        try:
            containers = self.api.containers(all=True, filters={"label": LABEL_RUN})
        except ENGINE_ERRORS as exc:
            raise EngineUnavailable(f"The Docker engine cannot be reached ({exc})") from exc
        found = {}
        for container in containers:
            name = (container.get("Names") or [""])[0].lstrip("/")
            run_id = container["Labels"].get(LABEL_RUN) or name.removeprefix(RUN_NAME_PREFIX)
            if run_id and name.startswith(RUN_NAME_PREFIX):
                found[run_id] = container["Id"]
        return found

    def remove(self, handle: str) -> None:
        try:
            self.api.remove_container(handle, force=True, v=True)
        except NotFound:
            pass
        except ENGINE_ERRORS as exc:
            raise EngineUnavailable(f"The Docker engine cannot be reached ({exc})") from exc
        except APIError as exc:
            if "already in progress" not in str(exc):
                raise


class ContainerFollower:
    """Follows one container to its end: its log (two streams, re-opened as needed), its
    resource samples, and — through `supervise` — cancel, timeout and the lease."""

    def __init__(
        self,
        executor: DockerExecutor,
        container_id: str,
        spec: RunSpec,
        log: LogWriter,
        watch: Watch,
        resume_after: dict[str, str],
    ) -> None:
        self.api = executor.api
        self.container_id = container_id
        self.spec = spec
        self.log = log
        self.watch = watch
        self.outcome = Outcome()
        self.reader = MarkerReader(log, self.outcome, watch)
        # Per stream, the newest timestamp consumed and how many frames had it. A previous
        # follower's last line is consumed whole (every frame of it: infinity).
        self.seen: dict[str, tuple[str, float]] = {
            stream: (stamp, math.inf) for stream, stamp in resume_after.items()
        }
        self.pending = {STDOUT: "", STDERR: ""}
        self.pending_stamp = {STDOUT: "", STDERR: ""}
        self.logs_done = threading.Event()
        self.stopping = threading.Event()
        self.vanished = False
        self.engine_down_since: float | None = None
        self.exited_seen_at: float | None = None
        self.responses: set[requests.Response] = set()
        self.forced_closes = 0
        self.lock = threading.Lock()
        self.last_state_check = 0.0

    def follow(self, started_at: datetime | None = None) -> Outcome:
        """`started_at`: when a pooled container was handed the run (it started earlier)."""
        state = self._inspect()
        if state is None:
            raise ExecutorError("lost", "Its container vanished.")
        self.outcome.started_at = started_at or docker_timestamp(state["StartedAt"])[1]
        if self.seen:
            self._recover_markers()
        threads = [
            threading.Thread(target=self._guard, args=(self._pump_logs,), daemon=True),
            threading.Thread(target=self._guard, args=(self._pump_stats,), daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            supervise(
                self.spec,
                self.outcome,
                self.log,
                self.watch,
                still_running=self._still_running,
                stop=self._stop,
            )
        finally:
            self.stopping.set()
            self._close_streams()
            for thread in threads:
                thread.join(timeout=5)
        if self.vanished:
            raise ExecutorError("lost", "Its container vanished while it ran.")
        log_verdict(self.outcome, self.log)
        state = self._inspect()
        if state is None:
            raise ExecutorError("lost", "Its container vanished while it ran.")
        self.outcome.exit_code = state.get("ExitCode")
        self.outcome.oom_killed = self.outcome.oom_killed or bool(state.get("OOMKilled"))
        if state.get("FinishedAt", "").startswith("0001-"):
            self.outcome.finished_at = None
        elif state.get("FinishedAt"):
            self.outcome.finished_at = docker_timestamp(state["FinishedAt"])[1]
        self.outcome.limit_warnings = soft_limit_warnings(
            self.spec, self.outcome.peak_cpu_percent, self.outcome.peak_memory_bytes
        )
        return self.outcome

    # --- the engine ----------------------------------------------------------------------------

    def _inspect(self) -> dict | None:
        """The container's state; None when it is gone; EngineUnavailable when the engine
        has not answered for ENGINE_RETRY_SECONDS."""
        while True:
            try:
                state = self.api.inspect_container(self.container_id)["State"]
            except NotFound:
                return None
            except ENGINE_ERRORS:
                self._engine_down()
                self._raise_if_engine_gone()
                time.sleep(0.5)
                continue
            self.engine_down_since = None
            return state

    def _engine_down(self) -> None:
        with self.lock:
            if self.engine_down_since is None:
                self.engine_down_since = time.monotonic()

    def _raise_if_engine_gone(self) -> None:
        since = self.engine_down_since
        if since is not None and time.monotonic() - since >= ENGINE_RETRY_SECONDS:
            raise EngineUnavailable(
                f"The Docker engine did not answer for {ENGINE_RETRY_SECONDS:g} s"
            )

    def _still_running(self, wait_seconds: float) -> bool:
        if self.logs_done.wait(wait_seconds):
            return False
        self._raise_if_engine_gone()
        now = time.monotonic()
        if now - self.last_state_check >= STREAM_END_GRACE_SECONDS:
            # A safety net for a stream that hangs although the container ended (a dead
            # connection through a proxy): the engine's state decides, not the reader.
            self.last_state_check = now
            try:
                state = self.api.inspect_container(self.container_id)["State"]
            except NotFound:
                self.vanished = True
                return False
            except ENGINE_ERRORS:
                self._engine_down()
                return True
            if state["Running"]:
                self.exited_seen_at = None
            elif self.exited_seen_at is None:
                self.exited_seen_at = now
            elif now - self.exited_seen_at >= STREAM_END_GRACE_SECONDS:
                self._close_streams()  # the reader reads the rest once more, then ends
        return True

    def _stop(self, grace_seconds: int) -> None:
        try:
            if grace_seconds:
                self.api.stop(self.container_id, timeout=grace_seconds)
            else:
                self.api.kill(self.container_id)
        except NotFound:
            pass
        except ENGINE_ERRORS:
            self._engine_down()  # the next follower stops it (cancel, timeout stand)
        except APIError as exc:
            if "is not running" not in str(exc):
                raise

    # --- streams -------------------------------------------------------------------------------

    def _guard(self, pump) -> None:
        """A reader thread never dies silently: what it hits is logged and said, and it
        reads on (after the last line seen) a moment later."""
        while not self.stopping.is_set():
            try:
                pump()
                return
            except Exception as exc:
                logger.exception("reading container %s failed", self.container_id[:12])
                self.log.system(
                    f"reading the run's output failed ({type(exc).__name__}: {exc}); "
                    "reading on after the last line seen"
                )
                self.stopping.wait(1.0)

    def _open(self, path: str, params: dict) -> requests.Response:
        response = self.api._get(
            self.api._url(path, self.container_id),
            params=params,
            stream=True,
            timeout=settings.DOCKER_STREAM_TIMEOUT,
        )
        self.api._raise_for_status(response)
        with self.lock:
            self.responses.add(response)
        return response

    def _close(self, response: requests.Response) -> None:
        with self.lock:
            self.responses.discard(response)
        _shutdown(response)

    def _close_streams(self) -> None:
        with self.lock:
            responses = list(self.responses)
            self.forced_closes += 1
        for response in responses:
            _shutdown(response)

    def _pump_logs(self) -> None:
        """Read the log until the container has ended and every line is read.

        A pass ends cleanly when docker ends the stream; docker ends a follow stream when
        the container has ended and everything was sent. Any other end (a timeout, a broken
        connection, a stream closed by the safety net) is followed by another pass.
        """
        backoff = 0.2
        while not self.stopping.is_set():
            closes_before = self.forced_closes
            try:
                self._read_log_stream()
                clean_end = self.forced_closes == closes_before
            except NotFound:
                self.vanished = True
                self.logs_done.set()
                return
            except (*STREAM_ERRORS, TimeoutError):
                clean_end = False  # whether the engine is there, the state below tells
            if self.stopping.is_set():
                return
            if clean_end:
                self._await_exit()
            state = self._inspect_quietly()
            if state == "gone":
                self.vanished = True
                self.logs_done.set()
                return
            if state is None:  # the engine does not answer: wait, then ask again
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            if clean_end and not state["Running"]:
                self._flush_pending()
                self.logs_done.set()
                return
            if not clean_end:
                self.stopping.wait(0.05)  # a stream that ended early is opened again

    def _await_exit(self) -> None:
        """Docker ends a log stream a few tens of milliseconds before its state says the
        container ended: wait for that moment (the engine's wait call returns at once with
        it) rather than polling. A container that still runs after EXIT_WAIT_SECONDS (a
        stream that ended for another reason) has its log opened again."""
        with contextlib.suppress(NotFound, APIError, *STREAM_ERRORS):
            self.api.wait(self.container_id, timeout=EXIT_WAIT_SECONDS)

    def _inspect_quietly(self) -> dict | str | None:
        try:
            state = self.api.inspect_container(self.container_id)["State"]
        except NotFound:
            return "gone"
        except ENGINE_ERRORS:
            self._engine_down()
            return None
        self.engine_down_since = None
        return state

    def _read_log_stream(self) -> None:
        """One pass over docker's multiplexed log stream (stdout and stderr frames), after
        the last frame consumed. docker-py's public `logs()` merges the two streams; the
        frame header tells them apart, so the stream is read here frame by frame."""
        params = {"stdout": 1, "stderr": 1, "follow": 1, "timestamps": 1}
        if self.seen:
            params["since"] = docker_since(min(stamp for stamp, _ in self.seen.values()))
        skip = dict(self.seen)
        response = self._open("/containers/{0}/logs", params)
        try:
            raw = response.raw
            while True:
                header = _read_exactly(raw, 8)
                if not header:
                    return  # docker ended the stream
                kind, length = struct.unpack(">BxxxL", header) if len(header) == 8 else (0, 0)
                payload = _read_exactly(raw, length)
                if len(header) < 8 or len(payload) < length:
                    raise urllib3.exceptions.ProtocolError("the log stream was cut off")
                self._frame(STDERR if kind == 2 else STDOUT, payload, skip)
        finally:
            self._close(response)

    def _recover_markers(self) -> None:
        """A re-attached follower learns what the launcher told its predecessor (when the
        code started, uv's version, the route) from the whole stderr once: markers are not
        in the log file, and the new follower's stream starts after the last line there."""
        params = {"stdout": 0, "stderr": 1, "follow": 0, "timestamps": 1}
        try:
            response = self._open("/containers/{0}/logs", params)
        except (NotFound, APIError, *STREAM_ERRORS):
            return
        try:
            raw = response.raw
            while len(header := _read_exactly(raw, 8)) == 8:
                payload = _read_exactly(raw, struct.unpack(">BxxxL", header)[1])
                stamp, _, text = payload.decode("utf-8", errors="replace").partition(" ")
                if text.startswith(MARK) and text.split(" ", 1)[0][len(MARK) :] in REPEATABLE:
                    self.reader.marker(text[len(MARK) :].rstrip("\n"), docker_timestamp(stamp)[1])
        except STREAM_ERRORS:
            pass  # what was read stands
        finally:
            self._close(response)

    def _frame(self, stream: str, payload: bytes, skip: dict[str, tuple[str, float]]) -> None:
        """One frame. Frames are told apart by docker's timestamp and, for the frames of one
        long line (which share it), by their count: a frame is never consumed twice."""
        stamp, _, text = payload.decode("utf-8", errors="replace").partition(" ")
        timestamp, moment = docker_timestamp(stamp)
        skip_stamp, skip_count = skip.get(stream, ("", 0))
        if timestamp < skip_stamp:
            return  # read before (an earlier pass, or the previous follower)
        if timestamp == skip_stamp and skip_count > 0:
            skip[stream] = (skip_stamp, skip_count - 1)
            return
        seen_stamp, seen_count = self.seen.get(stream, ("", 0))
        self.seen[stream] = (timestamp, seen_count + 1 if seen_stamp == timestamp else 1)
        if not text.endswith("\n"):  # docker cuts lines longer than 16 KiB into frames
            self.pending[stream] += text
            self.pending_stamp[stream] = timestamp
            if len(self.pending[stream]) >= MAX_LINE_CHARS:
                self._emit(stream, self.pending[stream], timestamp, moment)
                self.pending[stream] = ""
            return
        line = self.pending[stream] + text[:-1]
        self.pending[stream] = ""
        self._emit(stream, line, timestamp, moment)

    def _emit(self, stream: str, text: str, timestamp: str, moment: datetime) -> None:
        self.reader.line(stream, text.rstrip("\r"), timestamp, moment)

    def _flush_pending(self) -> None:
        """A last line without a newline, once the container has ended."""
        for stream, text in self.pending.items():
            if text:
                stamp = self.pending_stamp[stream]
                self._emit(stream, text, stamp, docker_timestamp(stamp)[1])
                self.pending[stream] = ""

    def _pump_stats(self) -> None:
        """Peak CPU and memory from docker's live stats (about one sample a second)."""
        while not self.stopping.is_set() and not self.logs_done.is_set():
            try:
                response = self._open("/containers/{0}/stats", {"stream": 1})
            except (NotFound, APIError, *STREAM_ERRORS):
                self.stopping.wait(1.0)
                continue
            try:
                for line in response.iter_lines():
                    if self.stopping.is_set():
                        return
                    if line:
                        sample = json.loads(line)
                        record_sample(
                            self.outcome, self.watch, _cpu_percent(sample), _memory_bytes(sample)
                        )
            except (ValueError, AttributeError, *STREAM_ERRORS):
                pass  # closed or cut off: the peaks so far stand
            finally:
                self._close(response)
            self.stopping.wait(1.0)


def _read_exactly(raw, length: int) -> bytes:
    data = b""
    while len(data) < length:
        try:
            chunk = raw.read(length - len(data))
        except (AttributeError, ValueError, OSError) as exc:
            # The response was closed under the reader (the follower ends, or the safety
            # net closed a hanging stream): urllib3 then fails in various ways.
            raise urllib3.exceptions.ProtocolError("the stream was closed") from exc
        if not chunk:
            break
        data += chunk
    return data


def _shutdown(response: requests.Response) -> None:
    """Close a streaming response so that a thread blocked reading it wakes up."""
    try:
        raw_socket = response.raw._fp.fp.raw
        getattr(raw_socket, "_sock", raw_socket).shutdown(socket.SHUT_RDWR)
    except (AttributeError, OSError):
        pass
    with contextlib.suppress(Exception):  # closing a response that is already broken
        response.close()


# --- what a run container is given ---------------------------------------------------------


@dataclass
class Layout:
    mounts: list[Mount]
    tmpfs: dict[str, str]
    env: dict[str, str]


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


_network_ready: set[str] = set()
ICC_OPTION = "com.docker.network.bridge.enable_icc"


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
    _network_ready.add(name)


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
    """The launcher and prepare.sh, copied under DATA_DIR: bind mounts name paths on the
    Docker host, and DATA_DIR is the folder an orchestrator in a container shares with the
    host (same path), while its own code is not."""
    target = Path(settings.DATA_DIR) / "launcher"
    target.mkdir(parents=True, exist_ok=True)
    for source in (LAUNCHER, MODELS_RUNNER, PREPARE, RECEIVE, ENVIRONMENT_LOCK):
        destination = target / source.name
        content = source.read_bytes()
        if not destination.exists() or destination.read_bytes() != content:
            # A name of its own: followers in other threads and processes may write at once.
            temporary = destination.with_name(f".{source.name}.{uuid.uuid4().hex}")
            shutil.copyfile(source, temporary)
            temporary.chmod(0o644)
            temporary.replace(destination)  # atomic: a starting run never sees half a file
    return target


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
