"""The sandbox executor: runs in namespaces and cgroups of their own, without an engine
(README.md lists its parts)."""

from __future__ import annotations

from runs_app.executors.sandbox.executor import SandboxExecutor

__all__ = ["SandboxExecutor"]
