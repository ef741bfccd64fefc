"""Executors run one pipeline run each: Docker (the product) or local subprocesses."""

from __future__ import annotations

from django.conf import settings

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

__all__ = [
    "EngineUnavailable",
    "Executor",
    "ExecutorError",
    "LeaseLost",
    "Outcome",
    "RunSpec",
    "Watch",
    "get_executor",
]


def get_executor() -> Executor:
    """The executor FASTFLOW_EXECUTOR names: Docker unless `local` is asked for."""
    if settings.FASTFLOW_EXECUTOR == "local":
        return LocalExecutor()
    return DockerExecutor()
