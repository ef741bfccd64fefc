"""`up`'s parent process (fastflow_site/serve.py) as the worker's process manager: a child
that gives up after a while is started again and said on the console; one that fails at
once stops everything with its exit code."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from runs_app.follow import wait_for

PARENT = "import sys, json; from fastflow_site.serve import serve; " \
    "sys.exit(serve(sys.argv[1], json.loads(sys.argv[2]), up_long_enough=0.5))"  # fmt: skip


def parent(folder: Path, *commands: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", PARENT, str(folder), json.dumps(list(commands))],
        cwd=Path(__file__).resolve().parents[2],
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_child_that_gives_up_after_a_while_is_started_again(tmp_path):
    starts = tmp_path / "starts"
    # Up for a second, then exits 3 — as a worker whose loop cannot recover.
    gives_up = [sys.executable, "-c",
                "import time; open('starts', 'a').write('x'); time.sleep(1); raise SystemExit(3)",
                "worker"]  # fmt: skip
    steady = [sys.executable, "-c", "import time; time.sleep(60)"]
    process = parent(tmp_path, steady, gives_up)
    try:
        assert wait_for(lambda: starts.exists() and len(starts.read_text()) >= 2, timeout=20)
        assert process.poll() is None  # the other child goes on, and so does the parent
    finally:
        process.send_signal(signal.SIGTERM)
        _, console = process.communicate(timeout=20)
    assert process.returncode == 0
    assert "the worker ended with exit code 3 after 1 s; starting it again in 1 s" in console


def test_a_child_that_fails_at_once_stops_everything(tmp_path):
    broken = [sys.executable, "-c", "raise SystemExit(1)", "daphne"]
    steady = [sys.executable, "-c", "import time; time.sleep(60)"]
    process = parent(tmp_path, broken, steady)
    _, console = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "the web server ended with exit code 1; stopping Fast-Flow" in console
