"""The end of a warm-up, in its container: what the environment holds, as the lock its runs
install, and the wheels uv built from source kept where runs find them.

    python environment_lock.py UV_CACHE_DIR WHEELHOUSE LOCK_FILE

Run by the warmed environment's own Python (standard library only). It writes LOCK_FILE —
one `name==version` per installed distribution, sorted — and says on stderr what it holds
(the `resolved` marker: the dependency audit and the run records read it). A distribution
uv built from a source archive (or a git or URL requirement) has its wheel only in the
cache's `sdists-*` bucket, which a run cannot use without writing a lock file next to it;
the wheel is copied into WHEELHOUSE, which runs read as a flat index (`--find-links`).
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import shutil
import sys
import uuid
from pathlib import Path

# `-I` leaves this folder out of sys.path; the marker protocol lives beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fastflow_markers import tell


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[tuple[str, str], str]:
    """{(canonical name, version): "Name==version"} of this environment."""
    found = {}
    for distribution in metadata.distributions():
        name, version = distribution.metadata["Name"], distribution.version
        if name:
            found[(canonical(name), version)] = f"{name}=={version}"
    return found


def keep_built_wheels(cache: Path, wheelhouse: Path, wanted: set[tuple[str, str]]) -> list[str]:
    """Copy the wheels uv built for these distributions into the wheelhouse (once)."""
    kept = []
    for bucket in sorted(cache.glob("sdists-*")):
        for wheel in bucket.rglob("*.whl"):
            parts = wheel.name[: -len(".whl")].split("-")
            if len(parts) < 5 or not wheel.is_file():
                continue
            key = (canonical(parts[0]), parts[1])
            if key not in wanted:
                continue
            target = wheelhouse / wheel.name
            if not target.exists():
                partial = wheelhouse / f".{wheel.name}.{uuid.uuid4().hex}"
                shutil.copyfile(wheel, partial)
                os.replace(partial, target)  # a run never sees half a wheel
            kept.append(f"{parts[0]} {parts[1]}")
    return sorted(set(kept))


def main(cache: str, wheelhouse: str, lock_file: str) -> None:
    found = installed()
    pins = sorted(found.values(), key=str.lower)
    Path(lock_file).write_text("".join(f"{pin}\n" for pin in pins))
    built = keep_built_wheels(Path(cache), Path(wheelhouse), set(found))
    if built:
        note = "built from source once, kept for its runs: " + ", ".join(built)
        tell("note", note)
    tell("resolved", json.dumps(pins))


if __name__ == "__main__":
    main(*sys.argv[1:4])
