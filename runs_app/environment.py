"""The one place a run's environment is put together (later sources win).

Order today: pipeline `default_env` → the values given for this run (form, CLI, API) →
Fast-Flow's own variables. The secrets issue slots schedule overrides, `encrypted_env` and
stored secrets/parameters in between; they come back in `secret_names`/`secret_values`, so
the run record keeps only the names and the log masks the values.
"""

from __future__ import annotations

from runs_app.models import PipelineRun


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
