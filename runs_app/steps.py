"""The steps of models runs: stored as the run reports them, told in a failed run's reason,
and drawn as the pipeline's model graph with each node's last status.

A run reports its steps through `step` markers (runs_app/in_run/models_runner.py). What
a run says is not trusted: unknown kinds and statuses are ignored, texts are cut to their
column's size and masked like the log, a run cannot make more than MAX_STEPS rows, and
reports past MAX_REPORTS are ignored.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction

from pipelines_app.models import Pipeline
from runs_app.artifacts import artifact_content, has_artifact
from runs_app.graph import Edge, Graph, Node
from runs_app.models import PipelineRun, RunStep

logger = logging.getLogger(__name__)
Status = RunStep.Status
MAX_STEPS = 20_000
# Step markers are not log lines (LOG_MAX_SIZE_MB does not count them): a run that keeps
# reporting past this many is not listened to any more.
MAX_REPORTS = 10 * MAX_STEPS
BATCH_SIZE = 200
WRITER_STOP_SECONDS = 30.0
MAX_MESSAGE_CHARS = 4000
MAX_DEPENDENCIES = 500
# The engines' words for a node's state → ours.
STATUS_WORDS = {
    "running": Status.RUNNING,
    "started": Status.RUNNING,
    "success": Status.SUCCESS,
    "ok": Status.SUCCESS,
    "pass": Status.PASS,
    "warn": Status.WARN,
    "fail": Status.FAIL,
    "error": Status.ERROR,
    "runtime error": Status.ERROR,
    "skipped": Status.SKIPPED,
    "not_run": Status.NOT_RUN,
}
# How many runs back the model graph looks for a node's last status.
GRAPH_HISTORY_RUNS = 30


def _text(value: object, limit: int) -> str:
    return "" if value is None else str(value)[:limit]


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else None


def _number(value: object, kind: type) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return kind(value) if abs(value) < 2**62 else None


class StepRecorder:
    """Stores one run's steps as they are reported (one row per node, updated in place).

    Reports come from the thread that reads the run's output; they are written by a
    thread of the recorder's own, in batches (one transaction each), so a run that
    reports thousands of steps never holds up its log, and that thread's database
    connection is closed when the run ends (`close`).
    """

    def __init__(self, run: PipelineRun, mask: Callable[[str], str]) -> None:
        self.run = run
        self.mask = mask
        self.steps = {step.node_id: step for step in run.steps.all()}
        self.pending: queue.SimpleQueue[dict | None] = queue.SimpleQueue()
        self.writer: threading.Thread | None = None
        self.lock = threading.Lock()
        self.stale = False
        self.reports = 0

    def report(self, report: dict) -> None:
        """A step as the run reported it (any thread); written soon after."""
        with self.lock:
            self.reports += 1
            if self.reports > MAX_REPORTS:
                return
            if self.writer is None:
                self.writer = threading.Thread(
                    target=self._write, name=f"steps-{self.run.pk}", daemon=True
                )
                self.writer.start()
        self.pending.put(report)

    def close(self) -> None:
        """Write what is pending, then stop the writer."""
        with self.lock:
            writer, self.writer = self.writer, None
        if writer is not None:
            self.pending.put(None)
            writer.join(timeout=WRITER_STOP_SECONDS)

    def _write(self) -> None:
        try:
            done = False
            while not done:
                batch = [self.pending.get()]
                while len(batch) < BATCH_SIZE:
                    try:
                        batch.append(self.pending.get_nowait())
                    except queue.Empty:
                        break
                done = None in batch
                try:
                    self._store([report for report in batch if report is not None])
                except Exception:
                    # Never the writer's end: the next batches are still stored.
                    logger.exception("run %s: step reports could not be stored", self.run)
                    self.stale = True
        finally:
            connection.close()

    def _store(self, batch: list[dict]) -> None:
        """One batch in one transaction; while the database is away (a restart, a lock held
        too long) it is tried again for as long as the run's lease is safe."""
        give_up_at = time.monotonic() + settings.RUN_HEARTBEAT_TIMEOUT / 2
        delay = 0.25
        while True:
            try:
                close_old_connections()  # a connection the outage ended is replaced
                if self.stale:  # rows of a rolled back batch keep pks the table lacks
                    self.steps = {step.node_id: step for step in self.run.steps.all()}
                    self.stale = False
                touched: dict[str, RunStep] = {}
                for report in batch:
                    if step := self.apply(report):
                        touched[step.node_id] = step
                # Two statements per batch: the changed rows are written again whole (a
                # multi-row insert keeping their ids) — much cheaper than an UPDATE per row
                # or Django's bulk_update (a CASE per column and row).
                with transaction.atomic():
                    stored = [s.pk for s in touched.values() if s.pk is not None]
                    RunStep.objects.filter(pk__in=stored).delete()
                    RunStep.objects.bulk_create(list(touched.values()))
                return
            except DatabaseError:
                self.stale = True
                if time.monotonic() + delay > give_up_at:
                    logger.warning("run %s: %d step reports not stored", self.run, len(batch))
                    return
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def apply(self, report: dict) -> RunStep | None:
        """The report applied to its step in memory (None: nothing to store)."""
        node_id = _text(report.get("id"), 300)
        kind = report.get("type")
        if not node_id or kind not in RunStep.Kind.values:
            return None
        step = self.steps.get(node_id)
        if step is None:
            if len(self.steps) >= MAX_STEPS:
                return None
            step = RunStep(run=self.run, node_id=node_id, kind=kind, position=len(self.steps))
        status = STATUS_WORDS.get(str(report.get("status", "")).lower())
        if status and not (status == Status.RUNNING and step.status != Status.RUNNING):
            step.status = status  # (a late "started" never undoes an outcome)
        step.name = _text(report.get("name"), 300) or step.name or node_id.split(".")[-1]
        for field in ("started_at", "finished_at"):
            if moment := _moment(report.get(field)):
                setattr(step, field, moment)
        for field, kind_of in (("seconds", float), ("rows", int), ("failures", int)):
            if (number := _number(report.get(field), kind_of)) is not None:
                setattr(step, field, number)
        if report.get("message"):
            step.message = self.mask(_text(report["message"], MAX_MESSAGE_CHARS))
        if report.get("model"):
            step.tested_model = _text(report["model"], 300)
        if report.get("column"):
            step.tested_column = _text(report["column"], 300)
        if isinstance(report.get("depends_on"), list):
            step.depends_on = [_text(d, 300) for d in report["depends_on"][:MAX_DEPENDENCIES]]
        self.steps[node_id] = step
        return step

    def conclude(self) -> None:
        """At the run's end: what was still running never finished, and each skipped step
        says which failure upstream made the engine skip it."""
        self.run.steps.filter(status=Status.RUNNING).update(
            status=Status.NOT_RUN, message="not finished: the run ended before it did"
        )
        steps = {step.node_id: step for step in self.run.steps.all()}
        failed_tests_on: dict[str, list[RunStep]] = {}
        for step in steps.values():
            if step.failed and step.kind == RunStep.Kind.TEST:
                for upstream in step.depends_on:
                    failed_tests_on.setdefault(upstream, []).append(step)
        for step in steps.values():
            if step.status == Status.SKIPPED and not step.message:
                cause = _cause_upstream(step, steps, failed_tests_on, set())
                if cause is not None:
                    step.message = f"skipped: {cause.kind} {cause.name} failed upstream"
                    step.save(update_fields=["message"])


def _cause_upstream(
    step: RunStep,
    steps: dict[str, RunStep],
    failed_tests_on: dict[str, list[RunStep]],
    seen: set[str],
) -> RunStep | None:
    """The first failed step (or failed test of an upstream node) above `step`."""
    for upstream_id in step.depends_on:
        if upstream_id in seen:
            continue
        seen.add(upstream_id)
        upstream = steps.get(upstream_id)
        if upstream is not None and upstream.failed:
            return upstream
        if failed_tests_on.get(upstream_id):
            return failed_tests_on[upstream_id][0]
        if upstream is not None and upstream.status == Status.SKIPPED:
            cause = _cause_upstream(upstream, steps, failed_tests_on, seen)
            if cause is not None:
                return cause
    return None


def failure_summary(run: PipelineRun) -> str:
    """What failed in a models run, by name (tests with the model and column they test),
    and how much was skipped because of it; "" when no step failed."""
    failed = list(run.steps.filter(status__in=RunStep.FAILED)[:4])
    if not failed:
        return ""
    parts = []
    for step in failed[:3]:
        text = f"{step.kind} {step.name}"
        if step.kind == RunStep.Kind.TEST and step.tested:
            text += f" on {step.tested}"
        text += f" {'failed' if step.status == Status.FAIL else 'errored'}"
        first_line = step.message.strip().splitlines()[0] if step.message.strip() else ""
        if first_line:
            text += f" ({first_line[:200]})"
        parts.append(text)
    more = run.steps.filter(status__in=RunStep.FAILED).count() - len(parts)
    summary = "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
    skipped = run.steps.filter(status=Status.SKIPPED).count()
    if skipped:
        summary += f"; {skipped} skipped because of it"
    return summary


def model_graph(pipeline: Pipeline) -> Graph:
    """The models (seeds, snapshots) of the newest run that reported its graph, each with
    its last status over the recent runs, linked to the run it comes from."""
    runs = list(
        PipelineRun.objects.filter(pipeline=pipeline).order_by("-queued_at", "-id")[
            :GRAPH_HISTORY_RUNS
        ]
    )
    nodes: list[dict] = []
    for run in runs:
        if content := artifact_content(run, "dag.json"):
            try:
                nodes = json.loads(content.decode("utf-8"))
            except ValueError:
                continue
            if isinstance(nodes, list):
                break
            nodes = []
    graph = Graph()
    if not nodes:
        return graph
    last: dict[str, tuple[str, PipelineRun]] = {}
    by_pk = {run.pk: run for run in runs}
    newest_first = {run.pk: index for index, run in enumerate(runs)}
    steps = RunStep.objects.filter(run__in=runs).values_list("node_id", "status", "run_id")
    for node_id, status, run_id in sorted(steps, key=lambda s: newest_first[s[2]]):
        last.setdefault(node_id, (status, by_pk[run_id]))
    for node in nodes:
        if not isinstance(node, dict) or not node.get("id"):
            continue
        key = _text(node["id"], 300)
        status, run = last.get(key, ("", None))
        url = f"{run.get_absolute_url()}#step-{key}" if run else ""
        label = _text(node.get("name") or key, 100)
        graph.nodes[key] = Node(key=key, label=label, url=url, status=status)
    for node in nodes:
        if isinstance(node, dict) and node.get("id") in graph.nodes:
            for upstream in node.get("depends_on") or []:
                if upstream in graph.nodes:
                    graph.edges.append(Edge(str(upstream), str(node["id"]), ""))
    return graph


def docs_run(pipeline: Pipeline) -> PipelineRun | None:
    """The newest succeeded run of `pipeline` that left generated docs."""
    succeeded = PipelineRun.objects.filter(
        pipeline=pipeline, status=PipelineRun.Status.SUCCEEDED
    ).order_by("-finished_at", "-id")
    for run in succeeded[:GRAPH_HISTORY_RUNS]:
        if has_artifact(run, "docs.html"):
            return run
    return None
