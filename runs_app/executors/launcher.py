"""Starts a pipeline's entry point inside its run (container or local process).

It is run as `python -u launcher.py main.py` (or `main.ipynb`) in the pipeline folder, by the
Python of the run's uv environment, and uses the standard library only. It tells the
follower when the user's code starts (that ends "setup"), and otherwise behaves like
`python main.py`: same `__main__`, argv, sys.path, exit codes and tracebacks.

Lines on stderr that start with MARK are messages for Fast-Flow, never shown as output.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import time
import traceback

MARK = "\x1efastflow:"


def tell(message):
    print(MARK + message, file=sys.stderr, flush=True)


def print_user_traceback(exc, filename):
    """The traceback from the user's first frame on, as `python main.py` would print it."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb or exc.__traceback__)


def run_script(entry):
    sys.argv = [entry]
    sys.path.insert(0, os.getcwd())
    try:
        runpy.run_path(entry, run_name="__main__")
    except (SystemExit, KeyboardInterrupt, MemoryError):
        raise
    except BaseException as exc:
        print_user_traceback(exc, entry)
        sys.exit(1)


def run_notebook(entry):
    """Code cells in order, in one namespace; a cell may be retried (pipeline.json `cells`)."""
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
                tell(f"skip cell {index + 1}: {line.strip()} (IPython syntax is not run)")
                lines.append("")
            else:
                lines.append(line)
        code = compile("\n".join(lines), f"<cell {index + 1}>", "exec")
        policy = policies[index] if index < len(policies) else {}
        attempts = 1 + int(policy.get("retries", 0))
        for attempt in range(1, attempts + 1):
            tell(f"cell {index + 1}/{len(cells)}" + (f" attempt {attempt}" if attempt > 1 else ""))
            try:
                exec(code, namespace)  # noqa: S102 - running the user's notebook is the job
                break
            except (SystemExit, KeyboardInterrupt, MemoryError):
                raise
            except BaseException as exc:
                print_user_traceback(exc, f"<cell {index + 1}>")
                if attempt == attempts:
                    sys.exit(1)
                time.sleep(float(policy.get("delay_seconds", 0)))


def main():
    entry = sys.argv[1]
    memory_limit = os.environ.pop("FASTFLOW_MEMORY_RLIMIT", "")
    if memory_limit:  # the local executor's stand-in for a container memory limit
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(memory_limit), int(memory_limit)))
    tell("started")
    try:
        if entry.endswith(".ipynb"):
            run_notebook(entry)
        else:
            run_script(entry)
    except MemoryError:
        tell("oom")
        sys.stderr.flush()
        os._exit(137)


if __name__ == "__main__":
    main()
