"""What `manage.py up` becomes once the instance is prepared: the parent of the web server
and the worker, and nothing else.

`up` loads all of Django to prepare (migrations, static files, discovery) and then execs
this module, so the process that only waits for its children holds ~10 MB instead of
~150 MB. Standard library only (it imports nothing of the project):

    python -m fastflow_site.serve FOLDER '[["python", "-m", "daphne", ...], [...]]'

It runs each command in FOLDER until it is told to stop (SIGTERM, Ctrl-C), then stops them
all (SIGTERM, SIGKILL after 10 s). It is their process manager, as compose's `restart:
unless-stopped` is in a deployment: a child that ends with an error after it had been up for
a while (the worker gives up when a loop cannot recover, exit status 3) is said on the
console and started again, a few seconds later the more often it ends. A child that ends
at once (a port taken, a database refused at start-up), or with status 0, ends them all,
with its exit code.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

STOP_SECONDS = 10
# A child that ends with an error after this long is started again; sooner, it is broken.
UP_LONG_ENOUGH_SECONDS = 10.0
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)


class Child:
    def __init__(self, command: list[str], folder: str) -> None:
        self.command = command
        self.folder = folder
        self.name = "worker" if "worker" in command else "web server"
        self.restarts = 0
        self.restart_at: float | None = None
        self.start()

    def start(self) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(self.command, cwd=self.folder)  # noqa: S603


def serve(
    folder: str, commands: list[list[str]], up_long_enough: float = UP_LONG_ENOUGH_SECONDS
) -> int:
    children = [Child(command, folder) for command in commands]

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    try:
        while True:
            ended = _look_after(children, up_long_enough)
            if ended is not None:
                exit_code = ended
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            if child.process.poll() is None:
                child.process.terminate()
        for child in children:
            try:
                child.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                child.process.kill()
    return exit_code


def _look_after(children: list[Child], up_long_enough: float) -> int | None:
    """Start again what is due; the exit code that ends everything, or None."""
    now = time.monotonic()
    for child in children:
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.restart_at = None
                child.restarts += 1
                child.start()
            continue
        code = child.process.poll()
        if code is None:
            continue
        up_for = now - child.started
        if code == 0 or up_for < up_long_enough:
            if code:
                say(f"the {child.name} ended with exit code {code}; stopping Fast-Flow")
            return code
        delay = RESTART_DELAYS[min(child.restarts, len(RESTART_DELAYS) - 1)]
        if up_for >= 10 * up_long_enough:
            child.restarts = 0  # it had been well for long: a fresh start
            delay = RESTART_DELAYS[0]
        say(
            f"the {child.name} ended with exit code {code} after {up_for:.0f} s; "
            f"starting it again in {delay:g} s"
        )
        child.restart_at = now + delay
    return None


def say(message: str) -> None:
    print(f"Fast-Flow: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], json.loads(sys.argv[2])))
