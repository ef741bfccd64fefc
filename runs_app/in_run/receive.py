"""The first process of a pooled run container: it waits for its run, then becomes it.

A pooled container is created and started before any run exists (runs_app/executors/pool.py):
no secrets, no code, only this program, blocked opening the hand-over pipe (a FIFO on a
read-only mount). When a run takes the container, the worker writes one JSON document to
the pipe — the run's environment (secrets included), its working folder and its command —
and this process replaces itself with that command (exec: same pid, under the container's
init). Nothing is printed before the hand-over, so the container's log is the run's alone.

Standard library only; run as `python3 -I -S receive.py` by the worker image's Python.
"""

from __future__ import annotations

import json
import os
import sys

# `-I` leaves this folder out of sys.path; the marker protocol lives beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fastflow_markers import tell

HANDOVER = "/fastflow-handover/job"


def main():
    with open(HANDOVER, "rb") as pipe:  # blocks until the worker hands a run over
        data = pipe.read()
    try:
        job = json.loads(data)
        argv = [str(part) for part in job["argv"]]
        env = {**os.environ, **{str(k): str(v) for k, v in job["env"].items()}}
        cwd = str(job["cwd"])
    except (ValueError, KeyError, TypeError, AttributeError):
        sys.stderr.write("Fast-Flow's hand-over of this run was cut off; it cannot start.\n")
        sys.exit(125)
    # When the run really begins (its timeout and setup time count from here).
    tell("handover")
    os.chdir(cwd)
    os.execve(argv[0], argv, env)  # noqa: S606 (becoming the run is its job)


if __name__ == "__main__":
    main()
