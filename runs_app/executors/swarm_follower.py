"""Following one run's Swarm service to its end (runs_app/executors/swarm.py).

What is read the way the Docker executor reads a container (`ContainerFollower`): the log
— through the manager, `/services/{id}/logs`, after the last line seen, never a frame
twice — markers, cancel, timeout and the lease. What differs:

- the end is decided by the task's state alone: Swarm's log stream is known to hang after
  a task ended (moby#38640; seen here: a follow stream of a finished service never ends)
  and to cut off (moby#33183), so the stream is read with a read timeout and opened again
  after the last line seen, and once the task has ended, the rest is read without `follow`;
- a task Swarm cannot place yet is said in the log with Swarm's reason, once per reason;
- a task whose node left the Swarm (or whose engine stopped) is lost: the service is
  removed at once, so that the node, when it is back, does not go on with it (and Swarm
  never starts a second task: its restart condition is `none`);
- cancel and timeout remove the service (Swarm stops the task: SIGTERM, then SIGKILL after
  RUN_STOP_GRACE_SECONDS); what the run prints while it stops is not read;
- CPU and memory arrive as `sample` markers from the run itself (the manager has none);
- a warm-up is a global service: one task per node, each line said with its node.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from docker.errors import APIError, NotFound

from runs_app.executors.base import (
    ExecutorError,
    Outcome,
    log_verdict,
    soft_limit_warnings,
)
from runs_app.executors.engine import ENGINE_ERRORS, STREAM_ERRORS, docker_timestamp
from runs_app.executors.follower import ContainerFollower
from runs_app.in_run import fastflow_markers

FINAL = {"complete", "failed", "rejected", "shutdown", "orphaned", "remove"}
POLL_SECONDS = 0.5
POLL_SOON_SECONDS = 0.05  # once the run said its code ended (`exit`)
# A follow stream with no frame for this long is opened again (a hung stream loses nothing:
# the next one starts after the last line seen).
QUIET_STREAM_SECONDS = 30.0


class ServiceFollower(ContainerFollower):
    LOG_PATH = "/services/{0}/logs"
    STREAM_TIMEOUT = QUIET_STREAM_SECONDS

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.warm = self.spec.purpose == "warm"
        self.tasks: list[dict] = []
        self.ended = threading.Event()  # every task in a final state
        self.removed = False  # by cancel or timeout
        self.lost = ""  # why the run is lost
        self.said: set[str] = set()
        self.waiting = ""  # Swarm's reason, while it cannot place the task
        self.stable_polls = 0
        self.last_poll = 0.0
        self.poll_now = threading.Event()

    def log_params(self) -> dict:
        return {"details": 1, "follow": 0 if self.ended.is_set() else 1}

    def split_payload(self, payload: bytes) -> tuple[str, str]:
        """`<time> <details> <text>`: details name the node (said for warm-ups)."""
        stamp, _, rest = payload.decode("utf-8", errors="replace").partition(" ")
        details, _, text = rest.partition(" ")
        if self.warm:
            node = dict(item.partition("=")[::2] for item in details.split(",") if "=" in item).get(
                "com.docker.swarm.node.id", ""
            )
            if node and not text.startswith(fastflow_markers.MARK):
                text = f"[node {node[:10]}] {text}"
        return stamp, text

    # --- following -------------------------------------------------------------------------

    def follow(self, started_at: datetime | None = None) -> Outcome:
        self._poll()
        if self.vanished:
            raise ExecutorError("lost", "Its Swarm service vanished.")
        self.outcome.started_at = started_at or self._started_at() or datetime.now(UTC)
        if self.seen:
            self._recover_markers()
        self._supervise_reading(self._pump_logs)  # (samples come as markers)
        if self.lost:
            self._remove_service()
            raise ExecutorError("lost", self.lost)
        if self.vanished and not self.removed:
            raise ExecutorError("lost", "Its Swarm service vanished while it ran.")
        log_verdict(self.outcome, self.log)
        self._conclude()
        self.outcome.limit_warnings = soft_limit_warnings(
            self.spec, self.outcome.peak_cpu_percent, self.outcome.peak_memory_bytes
        )
        return self.outcome

    def _conclude(self) -> None:
        """Exit code and end from the tasks (a warm-up: the first that failed)."""
        if self.removed:
            return  # stopped by Fast-Flow: cancelled or timed out
        ended = [task for task in self.tasks if task["Status"]["State"] in ("complete", "failed")]
        failed = [task for task in ended if _exit_code(task)]
        decisive = (failed or ended or [None])[0]
        if decisive is None:
            return
        if _exit_code(decisive) is None and decisive["Status"].get("Err"):
            # It never ran: a mount, the image, the node's engine refused.
            raise ExecutorError("internal_error", _rejected(decisive))
        self.outcome.exit_code = _exit_code(decisive)
        self.outcome.finished_at = docker_timestamp(decisive["Status"]["Timestamp"])[1]

    def _started_at(self) -> datetime | None:
        running = [t for t in self.tasks if t["Status"]["State"] == "running"]
        if running:
            return docker_timestamp(running[0]["Status"]["Timestamp"])[1]
        if self.tasks:
            return docker_timestamp(self.tasks[0]["CreatedAt"])[1]
        return None

    def _still_running(self, wait_seconds: float) -> bool:
        soon = self.outcome.end_announced
        if self.logs_done.wait(POLL_SOON_SECONDS if soon else wait_seconds):
            return False
        self._raise_if_engine_gone()
        if self.removed or self.lost or self.vanished:
            return False
        every = POLL_SOON_SECONDS if soon else POLL_SECONDS
        if self.poll_now.is_set() or time.monotonic() - self.last_poll >= every:
            self._poll()
            if self.lost or self.vanished:
                return False
        return True

    def _poll(self) -> None:
        """The service's tasks: waiting (said, with Swarm's reason), lost, or ended."""
        self.poll_now.clear()
        self.last_poll = time.monotonic()
        try:
            self.api.inspect_service(self.container_id)
            tasks = self.api.tasks(filters={"service": self.container_id})
        except NotFound:
            self.vanished = True
            return
        except ENGINE_ERRORS:
            self._engine_down()
            return
        self.engine_down_since = None
        self.tasks = tasks
        for task in tasks:
            self._say_waiting(task)
            self._say_node(task)
            if task["Status"]["State"] == "rejected":
                self._remove_service()
                raise ExecutorError(_rejection_reason(task), _rejected(task))
            if not self.warm and self._lost(task):
                self.lost = (
                    f"Its Swarm node {task.get('NodeID', '')[:10]} left (or its engine stopped) "
                    f"while it ran: {task['Status'].get('Err') or task['Status']['State']}"
                )
                return
        if tasks and all(task["Status"]["State"] in FINAL for task in tasks):
            # A global warm-up's tasks appear together; still, one more look before the end.
            self.stable_polls += 1
            if not self.warm or self.stable_polls >= 2:
                self.ended.set()
                self._close_streams()  # the reader reads the rest without `follow`
        else:
            self.stable_polls = 0

    def _lost(self, task: dict) -> bool:
        """A task Swarm gave up on — its node went down, its engine stopped — that
        Fast-Flow did not stop."""
        state, desired = task["Status"]["State"], task.get("DesiredState")
        if state in ("orphaned", "shutdown", "remove"):
            return True
        return desired in ("shutdown", "remove") and state not in FINAL

    def _say_waiting(self, task: dict) -> None:
        """A task the Swarm cannot place yet: its reason in the log (once) and on the run's
        page (until it runs)."""
        status = task["Status"]
        reason = (status.get("Err") or "") if status["State"] == "pending" else ""
        if reason == self.waiting:
            return
        self.waiting = reason
        self.watch.on_waiting(reason)
        if reason and reason not in self.said:
            self.said.add(reason)
            self.log.system(f"the Swarm cannot place it yet: {reason}")

    def _say_node(self, task: dict) -> None:
        """Where the Swarm placed it, once it runs there."""
        node = task.get("NodeID") or ""
        if task["Status"]["State"] not in ("running", "complete", "failed"):
            return
        if not node or node in self.said:
            return
        self.said.add(node)
        try:
            hostname = self.api.inspect_node(node)["Description"]["Hostname"]
        except (NotFound, APIError, *ENGINE_ERRORS):
            hostname = "?"
        self.log.system(f"placed on Swarm node {hostname} ({node[:10]})")

    def _stop(self, grace_seconds: int) -> None:
        """Cancel or timeout: the service goes (Swarm's stop grace period applies)."""
        if not self.removed:
            self.removed = True
            self._remove_service()
            self.logs_done.set()

    def _remove_service(self) -> None:
        try:
            self.api.remove_service(self.container_id)
        except NotFound:
            pass
        except ENGINE_ERRORS:
            self._engine_down()  # removed by whoever follows it next (or reconcile)

    # --- the log -----------------------------------------------------------------------------

    def _pump_logs(self) -> None:
        """Follow the log until the tasks have ended, then read the rest once."""
        pause = 0.1
        while not self.stopping.is_set():
            last = self.ended.is_set()
            began = time.monotonic()
            try:
                self._read_log_stream()
            except NotFound:
                self.vanished = not self.removed
                self.logs_done.set()
                return
            except (APIError, *STREAM_ERRORS, TimeoutError):
                pass  # cut off, timed out or closed: opened again after the last line
            if last:
                self._flush_pending()
                self.logs_done.set()
                return
            self.poll_now.set()  # a stream that ended may mean the task did
            # A stream that ends at once (a task not placed yet has no log): less often.
            pause = min(pause * 2, 2.0) if time.monotonic() - began < 1 else 0.1
            self.stopping.wait(pause)


def _exit_code(task: dict) -> int | None:
    return (task["Status"].get("ContainerStatus") or {}).get("ExitCode")


def _rejection_reason(task: dict) -> str:
    error = task["Status"].get("Err") or ""
    return "image_missing" if "No such image" in error else "internal_error"


def _rejected(task: dict) -> str:
    error = task["Status"].get("Err") or "rejected"
    node = task.get("NodeID", "")[:10]
    if "No such image" in error:
        return (
            f"Swarm node {node} does not have the worker image ({error}); load it on every "
            "node (docs/swarm.md)"
        )
    return f"Swarm node {node} could not start it: {error}"
