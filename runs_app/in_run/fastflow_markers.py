"""The marker protocol: how the code inside a run speaks to the worker that follows it.

A marker is one line on the run's stderr: MARK (an ASCII record separator, then
"fastflow:"), a known word, and for most words a space and its text:

    started               the pipeline's own code starts now (setup ends)   launcher.py
    handover              a pooled container got its run: the run begins    receive.py
    uv <version>          uv's version                                      prepare.sh
    oom                   out of memory (a local run's memory limit)        launcher.py
    route <JSON string>   the route the run wrote (FASTFLOW_ROUTE_FILE)     launcher.py
    note <text>           a line for the log, said by Fast-Flow             launcher.py, ...
    resolved <JSON list>  what a warm-up installed ("name==version")        environment_lock.py
    cell <JSON>           a notebook cell's start, retry or end             launcher.py
    step <JSON>           a models node's progress                          models_runner.py
    artifact <JSON>       a piece of an artifact (dbt docs, the graph)      models_runner.py
    sample <JSON>         the run's CPU (% of a core) and memory (bytes),   swarm_boot.py
                          from its own cgroup: {"cpu": …, "memory": …}
    exit <code>           the run's code ended with this code (its task   swarm_boot.py
                          ends next: the follower looks at once)

Only these words make a marker; any other line — one that starts with MARK included — is
the run's output. The worker's reader (runs_app.executors.base.MarkerReader) acts on them.
A pipeline that prints a marker itself only changes its own run's record.

This file is copied beside the other tools into every run and imported by them as
`fastflow_markers` (a name no pipeline module takes), and imported by the worker as
runs_app.in_run.fastflow_markers: one spelling for both ends. prepare.sh is POSIX sh and
spells its one marker (uv) itself; a test holds it to MARK. Standard library only.
"""

from __future__ import annotations

import os
import sys

MARK = "\x1efastflow:"
WORDS = frozenset(
    {
        "started",
        "handover",
        "uv",
        "oom",
        "route",
        "note",
        "resolved",
        "cell",
        "step",
        "artifact",
        "sample",
        "exit",
    }
)
# Markers that mean the same when read twice (a follower that re-attaches to a run reads
# the whole stderr again): steps are stored by their id, artifact pieces at their offset.
REPEATABLE = frozenset({"started", "handover", "uv", "oom", "route", "step", "artifact"})


def encode(word: str, text: str = "") -> bytes:
    """One marker line, ready for stderr."""
    return (MARK + word + (" " + text if text else "") + "\n").encode("utf-8", errors="replace")


def tell(word: str, text: str = "") -> None:
    """A marker on the real stderr (fd 2), whatever the code did to sys.stderr; what the
    code printed before it is flushed first, so the log keeps its order."""
    # try/except, not contextlib: every run imports this before its code starts.
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105
            stream.flush()
        except Exception:  # noqa: S110 - a stream the pipeline closed or replaced
            pass
    try:  # noqa: SIM105
        os.write(2, encode(word, text))
    except OSError:
        pass


def parse(line: str) -> tuple[str, str] | None:
    """(word, text) when the line is a marker, else None."""
    if not line.startswith(MARK):
        return None
    word, _, text = line[len(MARK) :].rstrip("\n").partition(" ")
    return (word, text) if word in WORDS else None
