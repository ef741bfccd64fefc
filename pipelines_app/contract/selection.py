"""Which models a models run builds: pipeline.json `models.select`/`exclude`, and the same
given for one run (run form, webhook body, API, `runpipeline -e`) under the names of
RUN_SELECTION_NAMES.

A selection is passed to the engine as separate arguments (never through a shell), but it
still must not smuggle in an option (`--vars ...`, `--profiles-dir ...`): every token is a
selector made of the characters dbt's and FFT's selector syntax use, and none starts with
a dash.
"""

from __future__ import annotations

import re

# Values given for one run: {run value name: pipeline.json "models" field it replaces}.
RUN_SELECTION_NAMES = {
    "FASTFLOW_SELECT": "select",
    "FASTFLOW_EXCLUDE": "exclude",
    "FASTFLOW_FULL_REFRESH": "full_refresh",
}
# name, tag:nightly, path:models/staging, +orders, orders+, 2+orders, @orders, source:raw.x,
# config.materialized:table, a,b (intersection), stg_* (glob).
SELECTOR = re.compile(r"[A-Za-z0-9_+@*?\[][A-Za-z0-9_.:+@*?,/=\[\]-]*")
MAX_SELECTORS = 100
MAX_SELECTOR_CHARS = 200
TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no", "")


def selection_tokens(value: str) -> tuple[str, ...]:
    """A selection as written ("orders+ tag:nightly") split into its selectors."""
    return tuple(value.split())


def selection_problem(value: str) -> str | None:
    """Why `value` is not a selection (None: it is one)."""
    tokens = selection_tokens(value)
    if len(tokens) > MAX_SELECTORS:
        return f"has {len(tokens)} selectors; at most {MAX_SELECTORS}"
    for token in tokens:
        if len(token) > MAX_SELECTOR_CHARS:
            return f"{token[:40]!r}... is longer than {MAX_SELECTOR_CHARS} characters"
        if not SELECTOR.fullmatch(token):
            return (
                f"{token!r} is not a selector: use model names, tag:..., path:..., +name, "
                "name+ (letters, digits and _ . : + @ * ? , / = [ ] -, not first a dash)"
            )
    return None


def run_selection_problem(name: str, value: str) -> str | None:
    """Why a value given for one run under a RUN_SELECTION_NAMES name is refused."""
    if RUN_SELECTION_NAMES[name] == "full_refresh":
        if value.strip().lower() not in (*TRUE_WORDS, *FALSE_WORDS):
            return f"{name} must be true or false, not {value[:40]!r}"
        return None
    problem = selection_problem(value)
    return f"{name} {problem}" if problem else None


def is_true(value: str) -> bool:
    return value.strip().lower() in TRUE_WORDS
