"""The values a caller gives one run (the run form, a webhook body, the API, `runpipeline
-e`), and what is refused: names that change how a run is built or where it connects, values
no environment can hold, and — for a given pipeline — the names of its secrets and the
selections of models pipelines. `parameters_json_schema` says the same to API clients.

No dependency on the run model: the run's own `start` applies these rules.
"""

from __future__ import annotations

import json

from pipelines_app.contract import RUN_SELECTION_NAMES, run_selection_problem
from pipelines_app.contract.selection import (
    FALSE_WORDS,
    MAX_SELECTOR_CHARS,
    MAX_SELECTORS,
    SELECTOR,
    TRUE_WORDS,
)
from pipelines_app.models import Pipeline
from secrets_app.env_names import (
    ENV_NAME,
    RESERVED_RUNTIME_NAMES,
    RESERVED_RUNTIME_PREFIXES,
    runtime_env_name_problem,
)
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
    one of its environment variables (empty: all fine): `refused_parameters` and
    `conflicting_parameters` together."""
    return refused_parameters(values) + conflicting_parameters(pipeline, values)


def refused_parameters(values: dict[str, str]) -> list[str]:
    """What no pipeline takes for one run: reserved names (but FASTFLOW_SELECT,
    FASTFLOW_EXCLUDE and FASTFLOW_FULL_REFRESH, checked as selections) and values no
    environment can hold. `parameters_json_schema` says the same to API clients."""
    problems = []
    for name, value in values.items():
        if name in RUN_SELECTION_NAMES:  # which models a models run builds
            if problem := run_selection_problem(name, str(value)):
                problems.append(problem)
        elif problem := runtime_env_name_problem(name):
            problems.append(problem)
        if "\x00" in str(value):
            problems.append(f"{name}: a value cannot hold a NUL character")
    return problems


def _json_type_problem(name: str, value: object) -> str | None:
    """A JSON value (webhook body, API) that is not text for the run: a selection must be a
    string (FASTFLOW_FULL_REFRESH: true/false, 1/0 too); anything else a scalar."""
    if name in RUN_SELECTION_NAMES and not isinstance(value, str):
        if RUN_SELECTION_NAMES[name] != "full_refresh":
            return f"{name} must be a string of selectors, not {value!r}"
        if value not in (0, 1):  # (True and False are 1 and 0)
            return f"{name} must be true or false, not {value!r}"
    if not isinstance(value, str | int | float | bool):
        return f"{name}: the value must be a string, number or boolean"
    return None


def conflicting_parameters(pipeline: Pipeline, values: dict[str, str]) -> list[str]:
    """What this pipeline does not take for one run: a selection when it is no models
    pipeline, and the names of its secrets — a caller must not swap a secret for its own
    value (a database password for one that points elsewhere)."""
    problems = []
    if pipeline.spec.type != "models":
        problems += [
            f"{name} is for models pipelines; {pipeline.name} is not one"
            for name in values
            if name in RUN_SELECTION_NAMES
        ]
    secrets = secret_names_of(pipeline)
    problems += [
        f"{name} is a secret of {pipeline.name}; a value given for one run cannot replace it"
        for name in values
        if name in secrets
    ]
    return problems


def parameters_json_schema() -> dict:
    """`refused_parameters` as JSON Schema (2020-12, as OpenAPI 3.1 serves it): what a
    caller may send is described, so that what the API refuses with 400 is what the
    description excludes (pipeline-specific refusals are a 409)."""
    # Regexes without flags (ECMA-262 has no inline ones): each letter in both cases.
    reserved = "|".join(
        [_any_case(name) for name in sorted(RESERVED_RUNTIME_NAMES)]
        + [_any_case(prefix) + "[A-Za-z0-9_]*" for prefix in RESERVED_RUNTIME_PREFIXES]
    )
    selector = SELECTOR.pattern.removesuffix("*") + f"{{0,{MAX_SELECTOR_CHARS - 1}}}"
    selection = f"^ *({selector}( +{selector}){{0,{MAX_SELECTORS - 1}}})? *$"
    switch = "|".join(_any_case(word) for word in (*TRUE_WORDS, *FALSE_WORDS) if word)
    return {
        "type": "object",
        "description": "Environment values for this run: a name (letters, digits and _, "
        "not first a digit) not reserved by Fast-Flow, and a string, number or boolean. "
        "FASTFLOW_SELECT, FASTFLOW_EXCLUDE (selectors) and FASTFLOW_FULL_REFRESH (true or "
        "false) are for models pipelines; a name that is a secret of the pipeline is "
        "refused with 409.",
        "propertyNames": {
            "pattern": f"^{ENV_NAME.pattern}$",
            "not": {
                "allOf": [
                    {"pattern": f"^({reserved})$"},
                    {"not": {"enum": sorted(RUN_SELECTION_NAMES)}},
                ]
            },
        },
        "properties": {
            "FASTFLOW_SELECT": {"type": "string", "pattern": selection},
            "FASTFLOW_EXCLUDE": {"type": "string", "pattern": selection},
            "FASTFLOW_FULL_REFRESH": {
                "anyOf": [
                    {"type": "boolean"},
                    {"type": "integer", "enum": [0, 1]},
                    {"type": "string", "pattern": f"^[ \t]*({switch})?[ \t]*$"},
                ]
            },
        },
        "additionalProperties": {
            "anyOf": [
                {"type": "string", "pattern": "^[^\\u0000]*$"},
                {"type": "number"},
                {"type": "boolean"},
            ]
        },
    }


def _any_case(text: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in text)


def values_from_json(body: object) -> tuple[dict[str, str], list[str]]:
    """Values for one run from a decoded JSON object (webhook body, API): strings, numbers
    and booleans become strings; anything else is a problem. Names are judged by
    `PipelineRun.start`."""
    if not isinstance(body, dict):
        return {}, ['the body must be a JSON object of names to values, e.g. {"DAY": "monday"}']
    problems = [
        problem for name, value in body.items() if (problem := _json_type_problem(name, value))
    ]
    return {name: _as_text(name, value) for name, value in body.items()}, problems


def _as_text(name: str, value: object) -> str:
    if name in RUN_SELECTION_NAMES and not isinstance(value, str):
        return "true" if value else "false"  # FASTFLOW_FULL_REFRESH: true, 1, 1.0
    return json.dumps(value) if isinstance(value, bool) else str(value)


def index_secret_names(pipeline: Pipeline) -> set[str]:
    return {index.password_secret for index in pipeline.spec.environment.indexes} - {""}
