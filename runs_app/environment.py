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

from pipelines_app.contract import RunSettings
from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun
from runs_app.run_values import index_secret_names
from secrets_app.crypto import decrypt
from secrets_app.models import Variable


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
    index_secrets = index_secret_names(run.pipeline)
    for variable in Variable.for_pipeline(run.pipeline):
        if variable.is_secret and variable.name in index_secrets:
            continue  # a package index's password: for warm-ups only, never a run's
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


# --- warm-ups: private package indexes ------------------------------------------------------


class IndexCredentialsError(Exception):
    """A private index's credentials cannot be had (a missing or undecryptable secret)."""


def index_credentials(pipeline: Pipeline) -> tuple[str, list[str]]:
    """The netrc a warm-up signs in to the pipeline's private package indexes with, and the
    secret values in it (masked wherever the warm-up's output goes). Runs never get it."""
    secrets = {
        variable.name: variable
        for variable in Variable.for_pipeline(pipeline)
        if variable.is_secret
    }
    lines, values = [], []
    for number, index in enumerate(pipeline.spec.environment.indexes):
        if not index.password_secret:
            continue
        variable = secrets.get(index.password_secret)
        where = f"environment.indexes[{number}].password_secret"
        if variable is None:
            raise IndexCredentialsError(
                f"{where} names {index.password_secret}, which is no secret of {pipeline.name} "
                "nor a global one: add it on the Secrets page"
            )
        password = variable.plain_value()
        if any(character.isspace() or character == '"' for character in password + index.username):
            raise IndexCredentialsError(
                f"{where}: the username or password of {index.host} holds a space or a "
                "quote, which a netrc file cannot carry"
            )
        login = index.username or "__token__"
        lines.append(f"machine {index.host} login {login} password {password}")
        values.append(password)
    return "\n".join(lines), values
