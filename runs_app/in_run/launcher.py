"""Starts a pipeline's entry point inside its run (container or local process).

It is run as `python -u launcher.py main.py` (or `main.ipynb`) in the pipeline folder, by the
Python of the run's uv environment, and uses the standard library only. It tells the
follower when the user's code starts (that ends "setup"), and otherwise behaves like
`python main.py`: same `__main__`, argv, sys.path, exit codes and tracebacks.

It speaks to the worker in markers (fastflow_markers.py, beside it): `started`, `oom`,
`route`, `note`, and for notebooks `cell` (a code cell's start, retry, success or failure,
with its attempt); the models runner adds `step` and `artifact`.

After the pipeline's code ends (normally or by sys.exit), the launcher reads the file named
by FASTFLOW_ROUTE_FILE and reports its content as the run's route: inside the run, without
following links, only a regular file of at most 256 bytes (anything else is ignored, with a
note saying why). The worker itself never opens a file the run could have planted.

json and traceback are imported where they are needed, after the user's code (or for a
notebook): importing them first would hold every run's first line back by ~7 ms that
`python main.py` does not spend.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import sys
import time
import types

from fastflow_markers import tell  # beside this file, in every run

ROUTE_MAX_BYTES = 256


def read_route(path):
    """(route, None) or (None, why it is ignored); (None, None) when there is no file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "it is a symbolic link"
        return None, f"it cannot be read ({exc.strerror})"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, "it is not a regular file"
        if info.st_size > ROUTE_MAX_BYTES:
            return None, f"it is larger than {ROUTE_MAX_BYTES} bytes"
        data = os.read(fd, ROUTE_MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > ROUTE_MAX_BYTES:
        return None, f"it is larger than {ROUTE_MAX_BYTES} bytes"
    value = data.decode("utf-8", errors="replace").strip()
    if "\n" in value or "\r" in value:
        return None, "it holds more than one line"
    return value, None


def report_route():
    path = os.environ.get("FASTFLOW_ROUTE_FILE")
    if not path:
        return
    value, problem = read_route(path)
    if problem:
        tell("note", f"FASTFLOW_ROUTE_FILE ignored: {problem}")
    elif value is not None:
        import json

        tell("route", json.dumps(value))


def print_user_traceback(exc, filename):
    """The traceback from the user's first frame on, as `python main.py` would print it."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    import traceback

    traceback.print_exception(type(exc), exc, tb or exc.__traceback__)


def run_as_main(path):
    """Run the file as `__main__`, as runpy.run_path(path, run_name="__main__") does — a
    module of its own in sys.modules while it runs (pickle and multiprocessing find its
    classes), compiled without the launcher's own __future__ flags — without the ~4 ms of
    imports runpy spends first (pkgutil, typing, re)."""
    with io.open_code(path) as handle:
        code = compile(handle.read(), path, "exec", dont_inherit=True)
    module = types.ModuleType("__main__")
    module.__dict__.update(
        __file__=path, __cached__=None, __loader__=None, __package__=None, __spec__=None
    )
    previous = sys.modules.get("__main__")
    sys.modules["__main__"] = module
    try:
        exec(code, module.__dict__)  # noqa: S102 - the pipeline's own code, as python runs it
    finally:
        sys.modules["__main__"] = previous


def run_script(entry):
    sys.argv = [entry]
    sys.path.insert(0, os.getcwd())
    try:
        run_as_main(entry)
    except (SystemExit, KeyboardInterrupt, MemoryError):
        raise
    except BaseException as exc:
        print_user_traceback(exc, entry)
        sys.exit(1)


def run_notebook(entry):
    """Code cells in order, in one namespace; a cell may be retried (pipeline.json `cells`)."""
    import json

    with open(entry, encoding="utf-8") as handle:
        notebook = json.load(handle)
    policies = json.loads(os.environ.get("FASTFLOW_CELLS", "[]"))
    cells = [c for c in notebook.get("cells", []) if c.get("cell_type") == "code"]
    namespace = {"__name__": "__main__", "__file__": entry}
    sys.argv = [entry]
    sys.path.insert(0, os.getcwd())
    for index, cell in enumerate(cells):
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        # IPython magics and shell escapes are not Python; they are skipped, visibly.
        lines = []
        for line in source.splitlines():
            if line.lstrip().startswith(("%", "!")):
                tell("note", f"skip cell {index + 1}: {line.strip()} (IPython syntax is not run)")
                lines.append("")
            else:
                lines.append(line)
        code = compile("\n".join(lines), f"<cell {index + 1}>", "exec")
        policy = policies[index] if index < len(policies) else {}
        attempts = 1 + int(policy.get("retries", 0))
        delay = float(policy.get("delay_seconds", 0))
        for attempt in range(1, attempts + 1):
            report = {"cell": index + 1, "of": len(cells), "attempt": attempt, "attempts": attempts}
            tell("cell", json.dumps({**report, "event": "start"}))
            began = time.monotonic()
            try:
                exec(code, namespace)  # noqa: S102 - running the user's notebook is the job
            except (SystemExit, KeyboardInterrupt, MemoryError):
                raise
            except BaseException as exc:
                print_user_traceback(exc, f"<cell {index + 1}>")
                event = "failed" if attempt == attempts else "retry"
                took = round(time.monotonic() - began, 3)
                tell(
                    "cell", json.dumps({**report, "event": event, "seconds": took, "delay": delay})
                )
                if attempt == attempts:
                    sys.exit(1)
                time.sleep(delay)
                continue
            took = round(time.monotonic() - began, 3)
            tell("cell", json.dumps({**report, "event": "ok", "seconds": took}))
            break


def main():
    entry = sys.argv[1]
    memory_limit = os.environ.pop("FASTFLOW_MEMORY_RLIMIT", "")
    if memory_limit:  # the local executor's stand-in for a container memory limit
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(memory_limit), int(memory_limit)))
    tell("started")
    try:
        try:
            if os.environ.get("FASTFLOW_MODELS"):
                import models_runner  # beside this file (the models pipelines' runner)

                models_runner.main()
            elif entry.endswith(".ipynb"):
                run_notebook(entry)
            else:
                run_script(entry)
        finally:
            report_route()
    except MemoryError:
        tell("oom")
        sys.stderr.flush()
        os._exit(137)


if __name__ == "__main__":
    main()
