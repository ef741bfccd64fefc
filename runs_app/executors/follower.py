"""Following one run container to its end: its log, its resource samples, and — through
`supervise` — cancel, timeout and the lease.

Following survives quiet runs and a flaky engine: the log stream has no socket timeout by
default (DOCKER_STREAM_TIMEOUT sets one, for tests) and is opened again after the last
line seen whenever it ends while the container still runs; the end of a run is decided by
the engine's state, never by a reader that stopped. When the engine cannot be reached for
ENGINE_RETRY_SECONDS, the follower gives the run up (EngineUnavailable) and the container
goes on. A follower that takes over a run (`resume_after`) starts after the last line its
predecessor stored, and reads the markers that mean the same twice once more.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import struct
import threading
import time
from datetime import datetime

import docker
import requests
import urllib3
from docker.errors import APIError, NotFound

from runs_app.executors import engine
from runs_app.executors.base import (
    EngineUnavailable,
    ExecutorError,
    MarkerReader,
    Outcome,
    RunSpec,
    Watch,
    log_verdict,
    record_sample,
    soft_limit_warnings,
    supervise,
)
from runs_app.executors.engine import (
    ENGINE_ERRORS,
    STREAM_ERRORS,
    docker_since,
    docker_timestamp,
    read_exactly,
)
from runs_app.in_run import fastflow_markers
from runs_app.logs import MAX_LINE_CHARS, STDERR, STDOUT, LogWriter

logger = logging.getLogger(__name__)

# An engine that does not answer for this long: the follower releases the run.
ENGINE_RETRY_SECONDS = 10.0
# The engine says the container ended but the log stream has not: it is closed after this.
STREAM_END_GRACE_SECONDS = 5.0
EXIT_WAIT_SECONDS = 1.0


class ContainerFollower:
    """Follows one container to its end: its log (two streams, re-opened as needed), its
    resource samples, and — through `supervise` — cancel, timeout and the lease."""

    LOG_PATH = "/containers/{0}/logs"
    STREAM_TIMEOUT: float | None = None  # DOCKER_STREAM_TIMEOUT

    def __init__(
        self,
        api: docker.APIClient,
        container_id: str,
        spec: RunSpec,
        log: LogWriter,
        watch: Watch,
        resume_after: dict[str, str],
    ) -> None:
        self.api = api
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
        self._supervise_reading(self._pump_logs, self._pump_stats)
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

    def _supervise_reading(self, *pumps) -> None:
        """The readers (`pumps`) in threads of their own while `supervise` watches the run
        to its end; then the readers are stopped."""
        threads = [
            threading.Thread(target=self._guard, args=(pump,), daemon=True) for pump in pumps
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
        response = engine.stream(self.api, path, self.container_id, params, self.STREAM_TIMEOUT)
        with self.lock:
            self.responses.add(response)
        return response

    def _close(self, response: requests.Response) -> None:
        with self.lock:
            self.responses.discard(response)
        engine.shutdown(response)

    def _close_streams(self) -> None:
        with self.lock:
            responses = list(self.responses)
            self.forced_closes += 1
        for response in responses:
            engine.shutdown(response)

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
        params = {"stdout": 1, "stderr": 1, "follow": 1, "timestamps": 1, **self.log_params()}
        if self.seen:
            params["since"] = docker_since(min(stamp for stamp, _ in self.seen.values()))
        skip = dict(self.seen)
        response = self._open(self.LOG_PATH, params)
        try:
            raw = response.raw
            while True:
                header = read_exactly(raw, 8)
                if not header:
                    return  # docker ended the stream
                kind, length = struct.unpack(">BxxxL", header) if len(header) == 8 else (0, 0)
                payload = read_exactly(raw, length)
                if len(header) < 8 or len(payload) < length:
                    raise urllib3.exceptions.ProtocolError("the log stream was cut off")
                self._frame(STDERR if kind == 2 else STDOUT, payload, skip)
        finally:
            self._close(response)

    def _recover_markers(self) -> None:
        """A re-attached follower learns what the launcher told its predecessor (when the
        code started, uv's version, the route) from the whole stderr once: markers are not
        in the stored log, and the new follower's stream starts after its last line."""
        params = {"stdout": 0, "stderr": 1, "follow": 0, "timestamps": 1, **self.log_params()}
        params["follow"] = 0
        try:
            response = self._open(self.LOG_PATH, params)
        except (NotFound, APIError, *STREAM_ERRORS):
            return
        try:
            raw = response.raw
            while len(header := read_exactly(raw, 8)) == 8:
                payload = read_exactly(raw, struct.unpack(">BxxxL", header)[1])
                stamp, text = self.split_payload(payload)
                marker = fastflow_markers.parse(text)
                if marker and marker[0] in fastflow_markers.REPEATABLE:
                    self.reader.marker(*marker, docker_timestamp(stamp)[1])
        except STREAM_ERRORS:
            pass  # what was read stands
        finally:
            self._close(response)

    def log_params(self) -> dict:
        """What else the log endpoint is asked for."""
        return {}

    def split_payload(self, payload: bytes) -> tuple[str, str]:
        """A frame's timestamp and its text."""
        stamp, _, text = payload.decode("utf-8", errors="replace").partition(" ")
        return stamp, text

    def _frame(self, stream: str, payload: bytes, skip: dict[str, tuple[str, float]]) -> None:
        """One frame. Frames are told apart by docker's timestamp and, for the frames of one
        long line (which share it), by their count: a frame is never consumed twice."""
        stamp, text = self.split_payload(payload)
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
