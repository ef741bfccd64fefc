"""Executors run one pipeline run each: Docker (the product) or local subprocesses."""

from __future__ import annotations

from django.conf import settings

from runs_app.executors.base import ExecutorError, Outcome, RunSpec, Watch

__all__ = ["ExecutorError", "Outcome", "RunSpec", "Watch", "get_executor"]


def get_executor():
    if settings.FASTFLOW_EXECUTOR == "local":
        from runs_app.executors.local import LocalExecutor

        return LocalExecutor()
    from runs_app.executors.docker import DockerExecutor

    return DockerExecutor()
