"""The run side's data: runs and their state machine, skipped due times, live workers."""

from __future__ import annotations

from runs_app.models.chain import ChainLink
from runs_app.models.chore import Chore
from runs_app.models.chunk import LogChunk, LogText, RunArtifact
from runs_app.models.daemon import Daemon
from runs_app.models.entry import RunRefused
from runs_app.models.environment import EnvironmentLock, NodeWarmth
from runs_app.models.node import WorkerNode
from runs_app.models.notification import (
    Channel,
    Delivery,
    Incident,
    Notification,
    Rule,
)
from runs_app.models.run import PipelineRun, dispatch, with_last_run
from runs_app.models.skip import ScheduleSkip
from runs_app.models.step import RunStep
from runs_app.models.tally import RunDay, RunTally
from runs_app.models.vulnerability import DependencyCheck, Vulnerability
from runs_app.models.worker import WorkerProcess

__all__ = [
    "ChainLink",
    "Channel",
    "Chore",
    "Daemon",
    "Delivery",
    "DependencyCheck",
    "EnvironmentLock",
    "Incident",
    "LogChunk",
    "LogText",
    "NodeWarmth",
    "Notification",
    "PipelineRun",
    "Rule",
    "RunArtifact",
    "RunDay",
    "RunRefused",
    "RunStep",
    "RunTally",
    "ScheduleSkip",
    "Vulnerability",
    "WorkerNode",
    "WorkerProcess",
    "dispatch",
    "with_last_run",
]
