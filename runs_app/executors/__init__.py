"""Executors run one pipeline run each: Docker (the product), Docker Swarm (a cluster
places them), the sandbox (namespaces and cgroups, no engine) or local subprocesses."""

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
from runs_app.executors.sandbox import SandboxExecutor
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
    "startable_executors",
]


def engine_description() -> str:
    """What runs this node's runs, for the Workers page."""
    if settings.FASTFLOW_EXECUTOR == "local":
        return "local processes"
    if settings.FASTFLOW_EXECUTOR == "sandbox":
        return "sandboxes (bubblewrap, cgroups)"
    if settings.FASTFLOW_EXECUTOR == "swarm":
        return f"docker swarm, managed at {engine.host()}"
    return f"docker at {engine.host()}"


def startable_executors() -> list[str]:
    """The executors this node's runs can take: its own (whose outages pass: its runs wait)
    and each one pipelines may choose (PIPELINE_EXECUTORS) this machine has what it needs
    for — a node without bubblewrap, or not root, leaves sandbox runs to other nodes."""
    names = [settings.FASTFLOW_EXECUTOR]
    for name in settings.PIPELINE_EXECUTORS:
        if name not in names and not (name == "sandbox" and SandboxExecutor.unavailable()):
            names.append(name)
    return names


def get_executor(name: str = "") -> Executor:
    """The executor `name` names (a pipeline's own choice), else FASTFLOW_EXECUTOR's: Docker
    unless another is asked for (starting runs in pooled containers when RUN_POOL_SIZE is
    set)."""
    name = name or settings.FASTFLOW_EXECUTOR
    if name == "local":
        return LocalExecutor()
    if name == "sandbox":
        return SandboxExecutor()
    if name == "swarm":
        return SwarmExecutor()
    if settings.RUN_POOL_SIZE:
        return PooledDockerExecutor()
    return DockerExecutor()
