"""What runs inside a run — its container, or its local process — and nothing else.

    prepare.sh            builds the run's environment from its warm-up's lock (a warm-up:
                          resolves and fills the shared uv cache), then starts the launcher
    launcher.py           runs main.py, a notebook or the models runner as `python main.py`
                          would, and reports when the code starts and the route it wrote
    models_runner.py      a dbt / FastFlowTransform project's commands, its steps and docs
    receive.py            a pooled container's first process: waits for its run, becomes it
    environment_lock.py   a warm-up's last step: the lock its runs install, offline
    fastflow_markers.py   the marker protocol, shared with the worker's reader

These files use the standard library only and never import Django or the project: the
worker copies them, side by side, into a folder every run sees read-only (TOOLS).
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
LAUNCHER = HERE / "launcher.py"
PREPARE = HERE / "prepare.sh"
TOOLS = tuple(
    HERE / name
    for name in (
        "prepare.sh",
        "launcher.py",
        "models_runner.py",
        "receive.py",
        "environment_lock.py",
        "fastflow_markers.py",
    )
)
