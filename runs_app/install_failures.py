"""A failed warm-up in plain words: what went wrong, which package, and what to do.

uv's own message stays below it (the resolver's, the build backend's); this names the
common causes people can act on: a package built from source that needs a compiler or
headers the worker image lacks, a package index that cannot be reached or refuses the
credentials, a git or URL requirement the engine's network cannot fetch, a uv.lock that no
longer matches its pyproject.toml.
"""

from __future__ import annotations

import re

from django.conf import settings

from pipelines_app.models import Pipeline

FAILED_BUILD = re.compile(r"Failed to (?:build|download and build) `(?P<what>[^`]+)`")
COMPILERS = r"[\w.-]*(?:gcc|cc|clang|g\+\+|c\+\+|gfortran)"
NEEDS_COMPILER = re.compile(
    "|".join(
        [
            rf"command '{COMPILERS}' failed",
            rf"No such file or directory: '{COMPILERS}'",
            rf"unable to execute '{COMPILERS}'",
            rf"\b{COMPILERS}: not found",
            r"linker `cc` not found",
            r"Python\.h: No such file or directory",
            r"could not find a C compiler",
            r"pg_config executable not found",
            r"Unknown compiler\(s\)",
        ]
    )
)
UNREACHABLE = (
    "dns error",
    "Connection refused",
    "error sending request",
    "Could not connect",
    "operation timed out",
    "failed to lookup address",
)
REFUSED_CREDENTIALS = ("401 Unauthorized", "403 Forbidden", "Missing credentials")
URL = re.compile(r"https?://[^\s`'\"]+")


def explain_install_failure(lines: list[str], pipeline: Pipeline) -> str:
    """One or two sentences for the pipeline page ("" when nothing known applies)."""
    text = "\n".join(lines)
    built = [m.group("what") for m in FAILED_BUILD.finditer(text)]
    package = built[-1] if built else ""
    if "needs to be updated, but `--check` was provided" in text:
        return (
            "uv.lock does not match pyproject.toml (its dependencies changed since it was "
            "locked): run `uv lock` and commit uv.lock."
        )
    if NEEDS_COMPILER.search(text):
        python = pipeline.spec.python_version or settings.WORKER_IMAGE_PYTHON
        what = f"{package} is" if package else "A package is"
        return (
            f"{what} built from source here and needs a compiler or C headers the worker "
            f"image lacks: pin a release that publishes a wheel for Python {python} on "
            "Linux (manylinux), or use a worker image with build tools (WORKER_IMAGE)."
        )
    git = package and ("git+" in package or "Git operation failed" in text)
    if git or "failed to clone" in text.lower() or "Git operation failed" in text:
        return (
            f"A git requirement could not be fetched{f' ({package})' if package else ''}: "
            "the engine's network (RUN_NETWORK) must reach it, and a private one needs "
            "credentials (environment.indexes does not cover git)."
        )
    if any(needle in text for needle in REFUSED_CREDENTIALS):
        where = _first_url(text)
        return (
            f"The package index{f' {where}' if where else ''} refused the warm-up: check "
            "environment.indexes in pipeline.json (its username and password_secret)."
        )
    if any(needle in text for needle in UNREACHABLE):
        where = _first_url(text)
        return (
            f"The package index{f' {where}' if where else ''} could not be reached from the "
            "warm-up: check the address, and that the engine's network (RUN_NETWORK) "
            "reaches it."
        )
    return ""


def _first_url(text: str) -> str:
    match = URL.search(text)
    return match.group(0).rstrip(".,)") if match else ""
