"""Where a pipeline's Python environment comes from, read at discovery (docs/environments.md).

The first of these a folder has decides, as `uv run main.py` would on its author's laptop:

1. `pyproject.toml` with `uv.lock`: a uv project, installed exactly as locked (`uv sync
   --frozen` semantics: development groups left out; pipeline.json `environment.extras` and
   `environment.groups` add optional ones);
2. `pyproject.toml` with `[project] dependencies` but no `uv.lock`: resolved when warmed;
3. inline script metadata (PEP 723, a `# /// script` block) in main.py;
4. `requirements.txt.lock`, else `requirements.txt` (`-r`/`-c` files must be inside the
   folder: they are part of the environment's hash);
5. nothing: the worker image's Python alone.

The interpreter: pipeline.json `python_version` and `.python-version` name a version, a
`requires-python` (pyproject.toml, the script's metadata) a range; they must agree (a
conflict is an error), and a range alone picks the worker image's Python when it fits,
else the lowest PYTHON_IMAGES version that does.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

REQUIREMENTS_FILES = ("requirements.txt.lock", "requirements.txt")  # first found wins
# What `requirements_file` holds for each source, and how the page names it.
SOURCE_LABELS = {
    "uv.lock": "uv project (pyproject.toml, installed as uv.lock locks it)",
    "pyproject.toml": "pyproject.toml dependencies (no uv.lock: resolved when warmed)",
    "main.py": "inline script metadata in main.py (PEP 723)",
    "requirements.txt.lock": "requirements.txt.lock",
    "requirements.txt": "requirements.txt",
}
SCRIPT_BLOCK = re.compile(
    r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$"
)
INCLUDE = re.compile(r"^\s*(-r|-c|--requirement|--constraint)(\s*=\s*|\s+|(?=\S))(?P<file>\S+)")
# Where packages come from: a run's offline install names the same indexes as its warm-up
# (uv finds their cached pages by address), so these lines go into the lock too.
INDEX_OPTION = re.compile(
    r"^\s*(?P<option>-i|--index-url|--extra-index-url|-f|--find-links|--no-index)"
    r"(?:(?:\s*=\s*|\s+)(?P<value>\S+))?\s*(?:#.*)?$"
)
OPTION_NAMES = {"-i": "--index-url", "-f": "--find-links"}
MAX_INCLUDES = 50
LOCK_MAX_BYTES = 16 * 1024 * 1024

Read = Callable[[Path], str]  # a small text file inside the pipelines folder, or raises


class Unreadable(Exception):
    pass


@dataclass
class Environment:
    """What discovery learned of a folder's environment."""

    source: str = ""  # a key of SOURCE_LABELS, or "" (nothing to install)
    text: str = ""  # what the pipeline page shows
    digest: str = ""  # sha256 of everything that makes the environment
    python_version: str | None = None  # the interpreter it asks for, when it asks
    # "--extra-index-url URL" lines: the package indexes it names besides PyPI.
    index_options: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (file, message)
    warnings: list[tuple[str, str]] = field(default_factory=list)


def read_environment(
    folder: Path,
    read: Read,
    *,
    entry_point: str,
    python_version: str | None,
    extras: tuple[str, ...] = (),
    groups: tuple[str, ...] = (),
) -> Environment:
    found = Environment()
    hasher = hashlib.sha256()
    project = _pyproject(folder, read, found)
    has_lock = (folder / "uv.lock").exists()
    script = (
        _script_metadata(folder / entry_point, read, found) if entry_point == "main.py" else None
    )
    requirements = next((n for n in REQUIREMENTS_FILES if (folder / n).exists()), "")

    if has_lock and project is None and not found.errors:
        found.errors.append(
            ("uv.lock", "has no pyproject.toml beside it; add it, or delete uv.lock")
        )
    elif has_lock and project is not None:
        found.source = "uv.lock"
        found.text = _dependencies_text(project)
        hasher.update(_file_digest(folder / "pyproject.toml", read, found))
        hasher.update(_lock_digest(folder / "uv.lock", found))
    elif project is not None and "dependencies" in project.get("project", {}):
        found.source = "pyproject.toml"
        found.text = _dependencies_text(project)
        hasher.update(_file_digest(folder / "pyproject.toml", read, found))
        found.warnings.append(
            ("pyproject.toml", "has no uv.lock: its dependencies are resolved when warmed; "
             "`uv lock` (and committing uv.lock) pins them")
        )  # fmt: skip
    elif script is not None and "dependencies" in script:
        found.source = "main.py"
        found.text = "\n".join(str(d) for d in script.get("dependencies") or [])
        hasher.update(SCRIPT_BLOCK.search(read(folder / "main.py")).group(0).encode())
    elif requirements:
        found.source = requirements
        try:
            found.text = read(folder / requirements)
        except Unreadable as problem:
            found.errors.append((requirements, str(problem)))
        else:
            hasher.update(found.text.encode())
            texts = [found.text]
            for name, content in _includes(folder, requirements, found.text, read, found):
                hasher.update(f"\0{name}\0{content}".encode())
                texts.append(content)
            found.index_options = _requirements_indexes(texts)
    if found.source in ("uv.lock", "pyproject.toml"):
        found.index_options = _uv_indexes((project or {}).get("tool", {}).get("uv", {}))
    elif found.source == "main.py":
        found.index_options = _uv_indexes((script or {}).get("tool", {}).get("uv", {}))
    _ignored(found, folder, requirements, project, script)

    if found.source in ("uv.lock", "pyproject.toml"):
        hasher.update(repr((extras, groups)).encode())
    elif extras or groups:
        found.warnings.append(
            ("pipeline.json", "environment.extras and environment.groups apply to uv projects "
             "(pyproject.toml) only; they are ignored")
        )  # fmt: skip
    found.digest = hasher.hexdigest() if found.source else ""
    found.python_version = _python(folder, read, found, python_version, project, script)
    return found


# --- the sources --------------------------------------------------------------------------


def _pyproject(folder: Path, read: Read, found: Environment) -> dict | None:
    path = folder / "pyproject.toml"
    if not path.exists():
        return None
    try:
        data = tomllib.loads(read(path))
    except Unreadable as problem:
        found.errors.append(("pyproject.toml", str(problem)))
        return None
    except tomllib.TOMLDecodeError as problem:
        found.errors.append(("pyproject.toml", f"is not valid TOML: {problem}"))
        return None
    project = data.get("project", {})
    if not isinstance(project, dict) or not isinstance(project.get("dependencies", []), list):
        found.errors.append(("pyproject.toml", "[project] dependencies must be a list of strings"))
        return None
    return data


def _script_metadata(path: Path, read: Read, found: Environment) -> dict | None:
    """The `script` block of PEP 723 inline metadata, or None."""
    try:
        text = read(path)
    except Unreadable:
        return None  # the entry point's own problem, reported by discovery
    blocks = [m for m in SCRIPT_BLOCK.finditer(text) if m.group("type") == "script"]
    if not blocks:
        return None
    if len(blocks) > 1:
        found.errors.append(("main.py", "has more than one `# /// script` block (PEP 723)"))
        return None
    content = "".join(
        line[2:] if line.startswith("# ") else line[1:]
        for line in blocks[0].group("content").splitlines(keepends=True)
    )
    try:
        metadata = tomllib.loads(content)
    except tomllib.TOMLDecodeError as problem:
        found.errors.append(("main.py", f"its `# /// script` block is not valid TOML: {problem}"))
        return None
    dependencies = metadata.get("dependencies", [])
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        found.errors.append(
            ("main.py", "`dependencies` in its script block must be a list of strings")
        )
        return None
    return metadata


def _dependencies_text(project: dict) -> str:
    return "\n".join(str(d) for d in project.get("project", {}).get("dependencies", []))


def _includes(
    folder: Path, name: str, text: str, read: Read, found: Environment
) -> list[tuple[str, str]]:
    """The -r and -c files a requirements file names, recursively; each inside the folder."""
    seen: dict[str, str] = {}
    pending = [(name, text)]
    while pending and len(seen) < MAX_INCLUDES:
        parent, content = pending.pop()
        for line in content.splitlines():
            match = INCLUDE.match(line.split(" #")[0])
            if not match:
                continue
            target = (folder / Path(parent).parent / match.group("file")).resolve()
            try:
                relative = target.relative_to(folder.resolve()).as_posix()
            except ValueError:
                found.errors.append(
                    (parent, f"{match.group('file')} is outside the pipeline's folder; only "
                     "files inside it can be included")
                )  # fmt: skip
                continue
            if relative in seen or relative == name:
                continue
            try:
                seen[relative] = read(folder / relative)
            except Unreadable as problem:
                found.errors.append((relative, f"(named in {parent}) {problem}"))
                continue
            pending.append((relative, seen[relative]))
    return sorted(seen.items())


def _requirements_indexes(texts: list[str]) -> list[str]:
    options: list[str] = []
    for text in texts:
        for line in text.splitlines():
            if match := INDEX_OPTION.match(line):
                option = OPTION_NAMES.get(match.group("option"), match.group("option"))
                entry = f"{option} {match.group('value')}" if match.group("value") else option
                if entry not in options:
                    options.append(entry)
    return options


def _uv_indexes(settings_of_uv: dict) -> list[str]:
    """uv's own index settings ([tool.uv] of pyproject.toml or of a script's metadata)."""
    options: list[str] = []
    if not isinstance(settings_of_uv, dict):
        return options
    for entry in settings_of_uv.get("index", []) or []:
        if isinstance(entry, dict) and isinstance(entry.get("url"), str):
            kind = "--index-url" if entry.get("default") else "--extra-index-url"
            options.append(f"{kind} {entry['url']}")
    if isinstance(settings_of_uv.get("index-url"), str):
        options.append(f"--index-url {settings_of_uv['index-url']}")
    for url in settings_of_uv.get("extra-index-url", []) or []:
        if isinstance(url, str):
            options.append(f"--extra-index-url {url}")
    for url in settings_of_uv.get("find-links", []) or []:
        if isinstance(url, str):
            options.append(f"--find-links {url}")
    return options


def _ignored(found: Environment, folder: Path, requirements: str, project, script) -> None:
    """Tell which other declarations the chosen source overrides."""
    if not found.source:
        return
    others = []
    if requirements and found.source != requirements:
        others.append(requirements)
    if script is not None and "dependencies" in script and found.source != "main.py":
        others.append("the inline script metadata of main.py")
    if (
        project is not None
        and "dependencies" in project.get("project", {})
        and found.source not in ("uv.lock", "pyproject.toml")
    ):
        others.append("pyproject.toml")
    for other in others:
        found.warnings.append(
            (found.source, f"decides the environment; {other} is ignored (order: uv.lock, "
             "pyproject.toml, inline script metadata, requirements.txt)")
        )  # fmt: skip


def _file_digest(path: Path, read: Read, found: Environment) -> bytes:
    try:
        return read(path).encode()
    except Unreadable as problem:
        found.errors.append((path.name, str(problem)))
        return b""


def _lock_digest(path: Path, found: Environment) -> bytes:
    """uv.lock may be larger than the files discovery reads whole: hashed in chunks."""
    hasher = hashlib.sha256()
    try:
        if path.is_symlink() or not path.is_file():
            raise OSError("is not a regular file")
        if path.stat().st_size > LOCK_MAX_BYTES:
            raise OSError(f"is larger than {LOCK_MAX_BYTES // 1024**2} MiB")
        with path.open("rb") as lock:
            while chunk := lock.read(1 << 16):
                hasher.update(chunk)
    except OSError as problem:
        found.errors.append(("uv.lock", getattr(problem, "strerror", None) or str(problem)))
    return hasher.digest()


# --- the interpreter ---------------------------------------------------------------------


def available_pythons() -> list[str]:
    """The minor versions worker images offer: WORKER_IMAGE's first, then PYTHON_IMAGES'."""
    others = sorted(settings.PYTHON_IMAGES, key=_minor_key)
    return [settings.WORKER_IMAGE_PYTHON, *(v for v in others if v != settings.WORKER_IMAGE_PYTHON)]


def _python(
    folder: Path, read: Read, found: Environment, asked: str | None, project, script
) -> str | None:
    """The Python the pipeline asks for ("3.12"), or None for the worker image's own."""
    named = _named_versions(folder, read, found, asked)  # [(where, version)]
    ranges = _version_ranges(found, project, script)  # [(file, what, range)]
    if len({_minor(version) for _, version in named}) > 1:
        (first_where, first), (second_where, second) = named[:2]
        found.errors.append(
            (".python-version", f"{first_where} asks for {first}, {second_where} for "
             f"{second}; make them agree")
        )  # fmt: skip
        return asked
    if named:
        where, version = named[0]
        for file, what, allowed in ranges:
            if not _fits(version, allowed):
                found.errors.append(
                    (file, f"{what} is {allowed}, but {where} asks for {version}; make them agree")
                )
        if asked or _minor(version) == settings.WORKER_IMAGE_PYTHON:
            return asked  # (the worker image's own Python needs no choosing)
        return _minor(version)
    if not ranges:
        return None
    for minor in available_pythons():
        if all(_fits(minor, allowed) for _, _, allowed in ranges):
            return None if minor == settings.WORKER_IMAGE_PYTHON else minor
    wanted = " and ".join(f"{allowed}" for _, _, allowed in ranges)
    found.errors.append(
        (ranges[0][0], f"{ranges[0][1]} ({wanted}) fits no worker image's Python (they have "
         f"{', '.join(available_pythons())}); add an image to PYTHON_IMAGES")
    )  # fmt: skip
    return None


def _named_versions(
    folder: Path, read: Read, found: Environment, asked: str | None
) -> list[tuple[str, str]]:
    named = [("pipeline.json python_version", asked)] if asked else []
    if not (folder / ".python-version").exists():
        return named
    try:
        lines = read(folder / ".python-version").strip().splitlines()
    except Unreadable as problem:
        found.errors.append((".python-version", str(problem)))
        return named
    first = lines[0].strip() if lines else ""
    version = first.removeprefix("cpython-").removeprefix("python")
    if re.fullmatch(r"\d+\.\d+(\.\d+)?", version):
        named.append((".python-version", version))
    elif first:
        found.errors.append((".python-version", f"{first!r} is not a Python version, e.g. 3.12"))
    return named


def _version_ranges(found: Environment, project, script) -> list[tuple[str, str, SpecifierSet]]:
    ranges = []
    for file, what, metadata in (
        ("pyproject.toml", "its requires-python", (project or {}).get("project", {})),
        ("main.py", "the requires-python of its script block", script or {}),
    ):
        if "requires-python" not in metadata:
            continue
        try:
            ranges.append((file, what, SpecifierSet(str(metadata["requires-python"]))))
        except InvalidSpecifier:
            found.errors.append(
                (file, f"{what} {metadata['requires-python']!r} is not a version range")
            )
    return ranges


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _minor_key(version: str) -> tuple[int, ...]:
    try:
        return Version(version).release
    except InvalidVersion:
        return (0,)


def _fits(version: str, allowed: SpecifierSet) -> bool:
    """Whether a version (a minor one: any of its releases) is in the range."""
    if version.count(".") >= 2:
        return allowed.contains(version, prereleases=True)
    return any(allowed.contains(f"{version}.{patch}", prereleases=True) for patch in range(100))
