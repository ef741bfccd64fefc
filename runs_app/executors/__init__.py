"""Executors run one pipeline run each: Docker (the product), Docker Swarm (a cluster
places them) or local subprocesses."""

from __future__ import annotations

from django.conf import settings

from runs_app.executors import engine
from runs_app.executors.base import (
    EngineUnavailable,
    Executor,
    ExecutorError,
    LeaseLost,
    Outcome,
    RunSpec,
    Watch,
)
from runs_app.executors.docker import DockerExecutor
from runs_app.executors.local import LocalExecutor
from runs_app.executors.pool import PooledDockerExecutor
from runs_app.executors.swarm import SwarmExecutor

__all__ = [
    "EngineUnavailable",
    "Executor",
    "ExecutorError",
    "LeaseLost",
    "Outcome",
    "RunSpec",
    "Watch",
    "engine_description",
    "get_executor",
]


def engine_description() -> str:
    """What runs this node's runs, for the Workers page."""
    if settings.FASTFLOW_EXECUTOR == "local":
        return "local processes"
    if settings.FASTFLOW_EXECUTOR == "swarm":
        return f"docker swarm, managed at {engine.host()}"
    return f"docker at {engine.host()}"


def get_executor() -> Executor:
    """The executor FASTFLOW_EXECUTOR names: Docker unless `local` is asked for (starting
    runs in pooled containers when RUN_POOL_SIZE is set)."""
    if settings.FASTFLOW_EXECUTOR == "local":
        return LocalExecutor()
    if settings.FASTFLOW_EXECUTOR == "swarm":
        return SwarmExecutor()
    if settings.RUN_POOL_SIZE:
        return PooledDockerExecutor()
    return DockerExecutor()
