"""Models projects (dbt, FastFlowTransform) in a pipeline folder: which engine, and whether
the project can run here — read by discovery, so a broken project is a discovery error
with its reason, never a failed run nobody understands.

What is checked: the project file parses as a YAML mapping (dbt's with a `name`), FFT's
`models/` folder exists, `profiles.yml` sits in the folder (runs read it there, with the
connection values from environment variables), and no profile holds a password, token or
key written out in the file: those come from Fast-Flow's secrets and parameters through
`{{ env_var('NAME') }}`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from pipelines_app.contract import MODELS_PROJECT_FILES

PROFILES_FILE = "profiles.yml"
# Keys of a profile whose value is a credential (dbt's and FFT's adapters).
CREDENTIAL_KEYS = frozenset(
    {"password", "pass", "token", "private_key", "private_key_passphrase", "keyfile_json",
     "client_secret", "refresh_token", "api_key", "secret"}
)  # fmt: skip
# A connection string with a password in it: postgresql://user:secret@host/db
DSN_WITH_PASSWORD = re.compile(r"://[^/:@\s]+:[^@\s]+@")

ReadText = Callable[[Path], str]


def detect_engine(folder: Path) -> str | None:
    """ "dbt" for a folder with dbt_project.yml, "fft" for one with project.yml and models/."""
    if (folder / MODELS_PROJECT_FILES["dbt"]).is_file():
        return "dbt"
    if (folder / MODELS_PROJECT_FILES["fft"]).is_file() and (folder / "models").is_dir():
        return "fft"
    return None


def project_problems(folder: Path, engine: str, read_text: ReadText) -> list[tuple[str, str]]:
    """(file, what is wrong) for each reason the project cannot run; empty: it can."""
    project_file = MODELS_PROJECT_FILES[engine]
    problems: list[tuple[str, str]] = []
    if not (folder / project_file).exists():
        hint = "a dbt project" if engine == "dbt" else "a FastFlowTransform project"
        return [(project_file, f"is missing: {hint} needs it (models.engine is {engine!r})")]
    project, problem = _yaml_mapping(folder / project_file, read_text)
    if problem:
        problems.append((project_file, problem))
    elif engine == "dbt" and not isinstance(project.get("name"), str):
        problems.append((project_file, "has no `name:`; dbt needs the project's name"))
    if engine == "fft" and not (folder / "models").is_dir():
        problems.append(
            ("models/", "is missing: a FastFlowTransform project keeps its models there")
        )
    profiles_path = folder / PROFILES_FILE
    if not profiles_path.exists() and engine == "fft":
        return problems  # FFT's own default: an in-memory DuckDB
    if not profiles_path.exists():
        problems.append(
            (
                PROFILES_FILE,
                "is missing: runs read the connection from profiles.yml in the pipeline "
                "folder; write one whose values come from environment variables, e.g. "
                "password: \"{{ env_var('PG_PASSWORD') }}\"",
            )
        )
        return problems
    profiles, problem = _yaml_mapping(profiles_path, read_text)
    if problem:
        problems.append((PROFILES_FILE, problem))
        return problems
    for path, _value in _written_out_credentials(profiles):
        problems.append(
            (
                PROFILES_FILE,
                f"{path} holds a credential written out in the file; keep it in a Fast-Flow "
                f"secret and read it with \"{{{{ env_var('NAME') }}}}\"",
            )
        )
    return problems


def _yaml_mapping(path: Path, read_text: ReadText) -> tuple[dict[str, Any], str]:
    try:
        text = read_text(path)
    except Exception as exc:  # discovery's own "cannot be used" error, for people
        return {}, str(exc)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        what = getattr(exc, "problem", None) or str(exc)
        return {}, f"{where}{what} — this is not valid YAML"
    if not isinstance(data, dict):
        return {}, "must hold a YAML mapping (key: value lines)"
    return data, ""


def _written_out_credentials(data: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Credential keys whose value is a literal, not a template reading the environment."""
    if isinstance(data, dict):
        for key, value in data.items():
            here = f"{path}.{key}" if path else str(key)
            literal = _is_literal(value)
            if literal and (
                str(key).lower() in CREDENTIAL_KEYS or DSN_WITH_PASSWORD.search(str(value))
            ):
                yield here, value
            else:
                yield from _written_out_credentials(value, here)
    elif isinstance(data, list):
        for index, item in enumerate(data):
            yield from _written_out_credentials(item, f"{path}[{index}]")


def _is_literal(value: Any) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, dict | list):
        return False
    text = str(value)
    return "env_var(" not in text and "env(" not in text
