"""The layering of DESIGN.md: secrets_app ← pipelines_app ← runs_app ← fastflow_site, and
the rooms that show the processes (docs/architecture.md).

Domain code imports only its own layer and the ones below. Views, admin pages, URL lists,
template tags and management commands are entry points — they show things side by side or
act for a person (roles, the audit log) — and may read from any app. Nowhere is a
project import placed inside a function (the sign of code in the wrong app), but for the
receivers an AppConfig.ready() connects.

Rooms: what runs inside a run (runs_app/in_run) and the engine guard (engine_guard/) use
the standard library only; the worker's modules (runs_app/worker) and the executors they
drive are imported by no web code — only by each other and by management commands.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from django.conf import settings

LAYERS = ["secrets_app", "pipelines_app", "runs_app", "fastflow_site"]
PRESENTATION = {"views.py", "admin.py", "urls.py"}
# AppConfig.ready() imports the app's signal receivers, as Django intends.
READY_HOOKS = {"apps.py"}
ROOT = Path(settings.BASE_DIR)


def project_modules() -> list[Path]:
    return sorted(
        path
        for app in LAYERS
        for path in (ROOT / app).rglob("*.py")
        if "migrations" not in path.parts
    )


def imported_apps(tree: ast.AST) -> list[tuple[int, str, bool]]:
    """(line, app, inside a function) for each import of a project app."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                names = [child.module]
            for name in names:
                app = name.split(".")[0]
                if app in LAYERS:
                    found.append((child.lineno, app, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def is_presentation(path: Path) -> bool:
    return (
        path.name in PRESENTATION
        or "templatetags" in path.parts
        or path.parent.parts[-2:] == ("management", "commands")
    )


@pytest.mark.parametrize("path", project_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_one_way(path):
    own = LAYERS.index(path.relative_to(ROOT).parts[0])
    tree = ast.parse(path.read_text(), filename=str(path))
    problems = []
    for line, app, in_function in imported_apps(tree):
        if in_function and path.name not in READY_HOOKS:
            problems.append(f"line {line}: {app} imported inside a function")
        elif LAYERS.index(app) > own and not is_presentation(path):
            problems.append(f"line {line}: imports {app}, a layer above")
    assert not problems, "; ".join(problems)


# --- rooms -----------------------------------------------------------------------------------

STANDALONE = {
    # folder: the modules beside each other it may import as well as the standard library
    "engine_guard": {"engine_guard"},
    "runs_app/in_run": {"fastflow_markers", "models_runner"},
}
WORKER_ROOMS = ("runs_app.worker", "runs_app.executors")


def top_level_imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
    return found


def standalone_modules() -> list[tuple[Path, set[str]]]:
    return [
        (path, siblings)
        for folder, siblings in STANDALONE.items()
        for path in sorted((ROOT / folder).glob("*.py"))
    ]


@pytest.mark.parametrize(
    ("path", "siblings"), standalone_modules(), ids=lambda p: str(getattr(p, "name", ""))
)
def test_standalone_rooms_use_the_standard_library_only(path, siblings):
    """They run where the project is not installed: in a run's own Python, or as the guard."""
    tree = ast.parse(path.read_text(), filename=str(path))
    outside = [
        f"line {line}: {name}"
        for line, name in top_level_imports(tree)
        if name.split(".")[0] not in sys.stdlib_module_names | siblings
    ]
    assert not outside, "; ".join(outside)


def is_worker_side(path: Path) -> bool:
    relative = path.relative_to(ROOT).as_posix()
    return relative.startswith(("runs_app/worker/", "runs_app/executors/")) or (
        path.parent.parts[-2:] == ("management", "commands")
    )


@pytest.mark.parametrize("path", project_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_web_code_imports_the_worker(path):
    if is_worker_side(path):
        return
    tree = ast.parse(path.read_text(), filename=str(path))
    reaching = [
        f"line {line}: {name}"
        for line, name in top_level_imports(tree)
        if name.startswith(WORKER_ROOMS)
    ]
    assert not reaching, "; ".join(reaching)
