"""What `manage.py up` becomes once the instance is prepared: the parent of the web server
and the worker, and nothing else.

`up` loads all of Django to prepare (migrations, static files, discovery) and then execs
this module, so the process that only waits for its children holds ~10 MB instead of
~150 MB. Standard library only (it imports nothing of the project):

    python -m fastflow_site.serve FOLDER '[["python", "-m", "daphne", ...], [...]]'

It runs each command in FOLDER until one ends or it is told to stop (SIGTERM, Ctrl-C),
then stops them all (SIGTERM, SIGKILL after 10 s) and exits with the first one's code.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

STOP_SECONDS = 10


def serve(folder: str, commands: list[list[str]]) -> int:
    children = [subprocess.Popen(command, cwd=folder) for command in commands]  # noqa: S603

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    try:
        while all(child.poll() is None for child in children):
            try:
                children[0].wait(timeout=1)
            except subprocess.TimeoutExpired:
                continue
        exit_code = next(c.returncode for c in children if c.returncode is not None)
        if exit_code:
            print(f"a Fast-Flow process ended with exit code {exit_code}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
    return exit_code


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], json.loads(sys.argv[2])))
