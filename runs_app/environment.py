"""The one place a run's environment is put together. Later sources win:

1. pipeline.json `default_env`
2. the schedule's `default_env` (the schedule that started the run, or `run_config_id`)
3. pipeline.json `encrypted_env` (decrypted here, just before the run)
4. the schedule's `encrypted_env`
5. stored parameters and secrets (secrets_app): global ones, then the pipeline's own
6. the values given for this run (run form, webhook body, `runpipeline -e`)
7. Fast-Flow's own FASTFLOW_* variables

Values from 3, 4 and stored secrets are secret: the run record keeps only their names, and
every such value of 4+ characters is masked in the log before it is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pipelines_app.contract import RUN_SELECTION_NAMES, RunSettings, run_selection_problem
from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun
from secrets_app.crypto import decrypt
from secrets_app.env_names import runtime_env_name_problem
from secrets_app.models import Variable


def secret_names_of(pipeline: Pipeline) -> set[str]:
    """Every name a run of `pipeline` may get a secret under: its pipeline.json
    encrypted_env (schedules' included) and the stored secrets it receives."""
    spec = pipeline.spec
    names = set(spec.run.encrypted_env)
    for schedule in spec.schedules:
        names |= set(schedule.overrides.encrypted_env)
    names |= {variable.name for variable in Variable.for_pipeline(pipeline) if variable.is_secret}
    return names


def check_parameters(pipeline: Pipeline, values: dict[str, str]) -> list[str]:
    """Why each name given for one run (run form, webhook body, `runpipeline -e`) cannot be
    one of its environment variables (empty: all fine). Reserved names are refused (but
    for a models pipeline's FASTFLOW_SELECT, FASTFLOW_EXCLUDE and FASTFLOW_FULL_REFRESH,
    checked as selections), and so are the names of the pipeline's secrets: a caller must
    not swap a secret for its own value (a database password for one that points
    elsewhere)."""
    problems = []
    for name, value in values.items():
        if name in RUN_SELECTION_NAMES:  # which models a models run builds
            if pipeline.spec.type != "models":
                problems.append(f"{name} is for models pipelines; {pipeline.name} is not one")
            elif problem := run_selection_problem(name, str(value)):
                problems.append(problem)
        elif problem := runtime_env_name_problem(name):
            problems.append(problem)
    secrets = secret_names_of(pipeline)
    problems += [
        f"{name} is a secret of {pipeline.name}; a value given for one run cannot replace it"
        for name in values
        if name in secrets
    ]
    return problems


def parameters_from_json(pipeline: Pipeline, body: object) -> tuple[dict[str, str], list[str]]:
    """Values for one run from a decoded JSON object (webhook body, API): strings, numbers
    and booleans become strings; the names pass `check_parameters`."""
    if not isinstance(body, dict):
        return {}, ['the body must be a JSON object of names to values, e.g. {"DAY": "monday"}']
    problems = [
        f"{name}: the value must be a string, number or boolean"
        for name, value in body.items()
        if not isinstance(value, str | int | float | bool)
    ]
    problems += check_parameters(pipeline, body)
    values = {
        name: (json.dumps(value) if isinstance(value, bool) else str(value))
        for name, value in body.items()
    }
    return values, problems


@dataclass
class RunEnvironment:
    variables: dict[str, str] = field(default_factory=dict)
    secret_names: set[str] = field(default_factory=set)
    secret_values: list[str] = field(default_factory=list)

    def put(self, values: dict[str, str], *, secret: bool) -> None:
        for name, value in values.items():
            self.variables[name] = value
            if secret:
                self.secret_names.add(name)
                self.secret_values.append(value)
            else:
                self.secret_names.discard(name)

    @property
    def visible(self) -> dict[str, str]:
        """What the run record may keep."""
        return {k: v for k, v in self.variables.items() if k not in self.secret_names}


def _decrypted(tokens: dict[str, str], origin: str) -> dict[str, str]:
    """Raises secrets_app.crypto.DecryptionError naming the variable, never the value."""
    return {name: decrypt(token, f"{origin} {name}") for name, token in tokens.items()}


def build_environment(run: PipelineRun) -> RunEnvironment:
    pipeline_settings = run.pipeline.spec.run
    schedule_settings = run.schedule.settings if run.schedule_id else RunSettings()
    schedule_origin = f"schedule {run.config_id!r}"
    environment = RunEnvironment()
    environment.put(pipeline_settings.default_env, secret=False)
    environment.put(schedule_settings.default_env, secret=False)
    environment.put(
        _decrypted(pipeline_settings.encrypted_env, "pipeline.json encrypted_env"), secret=True
    )
    environment.put(
        _decrypted(schedule_settings.encrypted_env, f"{schedule_origin} encrypted_env"),
        secret=True,
    )
    for variable in Variable.for_pipeline(run.pipeline):
        environment.put({variable.name: variable.plain_value()}, secret=variable.is_secret)
    environment.put({str(k): str(v) for k, v in run.parameters.items()}, secret=False)
    own = {
        "FASTFLOW_RUN_ID": str(run.public_id),
        "FASTFLOW_PIPELINE": run.pipeline.name,
        "FASTFLOW_ATTEMPT": str(run.attempt),
    }
    spec = run.pipeline.spec
    if spec.type == "models":
        # What models_runner.py runs; the run's own FASTFLOW_SELECT... (parameters) win.
        models = {**spec.models.to_json(), "commands": list(spec.models.effective_commands)}
        own["FASTFLOW_MODELS"] = json.dumps(models)
    if spec.type == "notebook" and spec.cells:
        # The launcher's per-cell retries and delays (pipeline.json `cells`).
        own["FASTFLOW_CELLS"] = json.dumps(
            [{"retries": c.retries, "delay_seconds": c.delay_seconds} for c in spec.cells]
        )
    environment.put(own, secret=False)
    return environment
