"""The one place a run's environment is put together (later sources win).

Order today: pipeline `default_env` → the values given for this run (form, CLI, API) →
Fast-Flow's own variables. The secrets issue slots schedule overrides, `encrypted_env` and
stored secrets/parameters in between; they come back in `secret_names`/`secret_values`, so
the run record keeps only the names and the log masks the values.
"""

from __future__ import annotations

import re

from runs_app.models import PipelineRun

VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Names that change how a run is built or isolated, never settable per run.
RESERVED_NAMES = {"PATH", "HOME", "PWD", "SHELL", "USER", "HOSTNAME"}
RESERVED_PREFIXES = ("PYTHON", "UV_", "LD_", "SSL_", "REQUESTS_CA", "FASTFLOW_", "VIRTUAL_ENV")


def check_parameters(values: dict[str, str]) -> list[str]:
    """Why each given name cannot be a run's environment variable (empty: all fine)."""
    problems = []
    for name in values:
        if not VARIABLE_NAME.match(name):
            problems.append(
                f"{name!r} is not a variable name (letters, digits and _, not first a digit)"
            )
        elif name.upper() in RESERVED_NAMES or name.upper().startswith(RESERVED_PREFIXES):
            problems.append(f"{name} is reserved: it would change how the run is built")
    return problems


def build_environment(run: PipelineRun) -> tuple[dict[str, str], set[str], list[str]]:
    """(environment, names of secret variables, secret values to mask)."""
    environment: dict[str, str] = {}
    environment.update(run.pipeline.spec.run.default_env)
    environment.update({str(k): str(v) for k, v in run.parameters.items()})
    environment.update(
        FASTFLOW_RUN_ID=str(run.public_id),
        FASTFLOW_PIPELINE=run.pipeline.name,
        FASTFLOW_ATTEMPT=str(run.attempt),
    )
    return environment, set(), []
