"""pipeline.json, field by field: what is accepted, how it is typed, how mistakes are told."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pipelines_app.contract import (
    DownstreamTrigger,
    PipelineConfig,
    RetryStrategy,
    RunSettings,
    parse_config,
)

MiB = 1024**2


def parse(data, **kwargs):
    return parse_config(data, file="pipeline.json", **kwargs)


def only_error(data) -> str:
    result = parse(data)
    assert len(result.errors) == 1, [e.message for e in result.errors]
    return result.errors[0].message


def test_an_empty_object_gives_the_defaults():
    result = parse({})
    assert result.errors == [] and result.warnings == []
    config = result.config
    assert config == PipelineConfig()
    assert config.enabled is True
    assert config.type == "script"
    assert config.entry_point == "main.py"
    assert config.run == RunSettings()
    assert config.schedules == ()


@pytest.mark.parametrize("data", [[], "text", 3, None, True])
def test_json_that_is_not_an_object_is_an_error(data):
    message = only_error(data)
    assert message.startswith("pipeline.json: must hold a JSON object")


def test_unknown_keys_are_warnings_with_a_suggestion():
    result = parse({"timout": 5, "colour": "blue"})
    assert result.errors == []
    messages = [w.message for w in result.warnings]
    assert "pipeline.json: timout is not a pipeline.json field; did you mean 'timeout'?" in messages
    assert "pipeline.json: colour is not a pipeline.json field and is ignored" in messages


# --- description, tags, enabled, type, python_version -------------------------------------


def test_description_and_tags():
    config = parse({"description": "Nightly", "tags": ["etl", "etl", " nightly "]}).config
    assert config.description == "Nightly"
    assert config.tags == ("etl", "nightly")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"description": 5}, "pipeline.json: description 5 must be a string (in double quotes)"),
        ({"tags": "etl"}, "pipeline.json: tags 'etl' must be a list of strings"),
        ({"tags": ["ok", 3]}, "pipeline.json: tags[1] 3 must be a string"),
        ({"tags": [""]}, "pipeline.json: tags[0] must not be empty"),
        (
            {"enabled": "false"},
            "pipeline.json: enabled 'false' must be true or false (without quotes)",
        ),
        ({"type": "lab"}, 'pipeline.json: type \'lab\' must be "script", "notebook" or "models"'),
        (
            {"python_version": 3.1},
            'pipeline.json: python_version 3.1 must be a string such as "3.12"',
        ),
        ({"python_version": "three"}, ""),
        (
            {"python_version": "3 .12"},
            "pipeline.json: python_version '3 .12' is not a Python version",
        ),
    ],
)
def test_basic_field_errors(data, expected):
    if not expected:
        assert parse(data).errors == []  # "three" is passed to uv, which decides
        return
    assert only_error(data).startswith(expected)


def test_enabled_type_and_python_version():
    config = parse({"enabled": False, "type": "notebook", "python_version": "3.12"}).config
    assert config.enabled is False
    assert config.type == "notebook"
    assert config.entry_point == "main.ipynb"
    assert config.python_version == "3.12"


# --- limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512m", 512 * MiB),
        ("1.5g", int(1.5 * 1024**3)),
        ("2Gi", 2 * 1024**3),
        ("800M", 800 * MiB),
        ("100mb", 100 * MiB),
        ("64MiB", 64 * MiB),
        ("10000000", 10_000_000),
        (10_000_000, 10_000_000),
        ("8192k", 8 * MiB),
    ],
)
def test_memory_sizes(text, expected):
    result = parse({"mem_hard_limit": text, "mem_soft_limit": text})
    assert result.errors == []
    assert result.config.run.mem_hard_limit_bytes == expected
    assert result.config.run.mem_soft_limit_bytes == expected


@pytest.mark.parametrize("bad", ["1.5x", "lots", "-1g", "", "1 0m", True, [512], 1.5])
def test_bad_memory_size_says_how_to_write_one(bad):
    message = only_error({"mem_hard_limit": bad})
    assert message.startswith("pipeline.json: mem_hard_limit ")
    assert message.endswith("is not a size; use e.g. 512m, 1.5g, 2Gi")


def test_the_exact_message_for_a_bad_size():
    assert (
        only_error({"mem_hard_limit": "1.5x"})
        == "pipeline.json: mem_hard_limit '1.5x' is not a size; use e.g. 512m, 1.5g, 2Gi"
    )


def test_a_hard_memory_limit_below_what_docker_accepts_is_an_error():
    assert only_error({"mem_hard_limit": "1m"}) == (
        "pipeline.json: mem_hard_limit '1m' is too small; the minimum is 6m"
    )


def test_cpu_limits():
    run = parse({"cpu_hard_limit": 0.5, "cpu_soft_limit": 2}).config.run
    assert run.cpu_hard_limit == 0.5
    assert run.cpu_soft_limit == 2.0


@pytest.mark.parametrize("bad", [0, -1, "1", True, None])
def test_bad_cpu_limit(bad):
    assert only_error({"cpu_hard_limit": bad}).startswith("pipeline.json: cpu_hard_limit ")


def test_a_soft_limit_above_the_hard_limit_is_a_warning():
    result = parse(
        {
            "mem_hard_limit": "64m",
            "mem_soft_limit": "128m",
            "cpu_hard_limit": 1,
            "cpu_soft_limit": 2,
        }
    )
    assert result.errors == []
    assert {w.field for w in result.warnings} == {"mem_soft_limit", "cpu_soft_limit"}


# --- timeout and retries -------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (30, 30), (3600.0, 3600)])
def test_timeout(value, expected):
    assert parse({"timeout": value}).config.run.timeout_seconds == expected


@pytest.mark.parametrize("bad", [-5, "600", 1.5, False])
def test_bad_timeout(bad):
    assert only_error({"timeout": bad}).startswith("pipeline.json: timeout ")


def test_timeout_not_given_is_none_so_the_instance_default_applies():
    assert parse({}).config.run.timeout_seconds is None


def test_retry_attempts():
    assert parse({"retry_attempts": 3}).config.run.retry_attempts == 3
    assert (
        only_error({"retry_attempts": -1}) == "pipeline.json: retry_attempts -1 must be at least 0"
    )


def test_exponential_backoff_strategy():
    strategy = parse(
        {
            "retry_strategy": {
                "type": "exponential_backoff",
                "initial_delay": 2,
                "max_delay": 10,
                "multiplier": 3,
            }
        }
    ).config.run.retry_strategy
    assert strategy == RetryStrategy(
        "exponential_backoff", initial_delay=2, max_delay=10, multiplier=3
    )
    assert [strategy.delay_before_retry(n) for n in (1, 2, 3)] == [2, 6, 10]


def test_fixed_delay_strategy():
    strategy = parse(
        {"retry_strategy": {"type": "fixed_delay", "delay": 7}}
    ).config.run.retry_strategy
    assert [strategy.delay_before_retry(n) for n in (1, 5)] == [7, 7]


def test_custom_schedule_strategy_repeats_its_last_delay():
    strategy = parse(
        {"retry_strategy": {"type": "custom_schedule", "delays": [1, 5, 30]}}
    ).config.run.retry_strategy
    assert [strategy.delay_before_retry(n) for n in (1, 2, 3, 4)] == [1, 5, 30, 30]


@pytest.mark.parametrize(
    ("strategy", "field"),
    [
        ("fast", "retry_strategy"),
        ({"type": "linear"}, "retry_strategy.type"),
        ({}, "retry_strategy.type"),
        ({"type": "fixed_delay", "delay": -1}, "retry_strategy.delay"),
        ({"type": "exponential_backoff", "multiplier": 0.5}, "retry_strategy.multiplier"),
        ({"type": "custom_schedule"}, "retry_strategy.delays"),
        ({"type": "custom_schedule", "delays": []}, "retry_strategy.delays"),
        ({"type": "custom_schedule", "delays": [1, "x"]}, "retry_strategy.delays[1]"),
    ],
)
def test_bad_retry_strategies(strategy, field):
    result = parse({"retry_strategy": strategy})
    assert [e.field for e in result.errors] == [field]
    assert result.config.run.retry_strategy is None


def test_unknown_key_in_a_retry_strategy_is_a_warning():
    result = parse({"retry_strategy": {"type": "fixed_delay", "delay": 5, "jitter": 1}})
    assert result.errors == []
    assert [w.field for w in result.warnings] == ["retry_strategy.jitter"]


# --- environment ---------------------------------------------------------------------------

# Shaped like a Fernet token (version byte 0x80, timestamp, IV, one block, HMAC).
TOKEN = base64.urlsafe_b64encode(b"\x80" + bytes(8 + 16 + 16 + 32)).decode()


def test_default_env_and_encrypted_env():
    run = parse(
        {"default_env": {"A": "1", "b_2": "x"}, "encrypted_env": {"DB_PASSWORD": TOKEN}}
    ).config.run
    assert run.default_env == {"A": "1", "b_2": "x"}
    assert run.encrypted_env == {"DB_PASSWORD": TOKEN}


def test_env_values_that_are_numbers_become_text_with_a_warning():
    result = parse({"default_env": {"PORT": 8080, "DEBUG": True}})
    assert result.errors == []
    assert result.config.run.default_env == {"PORT": "8080", "DEBUG": "true"}
    assert [w.field for w in result.warnings] == ["default_env.PORT", "default_env.DEBUG"]


@pytest.mark.parametrize(
    ("env", "field", "words"),
    [
        ({"1ABC": "x"}, "default_env.1ABC", "is not a valid environment variable name"),
        ({"A-B": "x"}, "default_env.A-B", "is not a valid environment variable name"),
        ({"FASTFLOW_RUN_ID": "x"}, "default_env.FASTFLOW_RUN_ID", "are reserved"),
        ({"A": None}, "default_env.A", "must be a string"),
        ({"A": {"nested": 1}}, "default_env.A", "must be a string"),
    ],
)
def test_bad_default_env(env, field, words):
    result = parse({"default_env": env})
    assert [e.field for e in result.errors] == [field]
    assert words in result.errors[0].message


def test_default_env_must_be_an_object():
    assert only_error({"default_env": ["A=1"]}).startswith(
        'pipeline.json: default_env ["A=1"] must be an object'
    )


@pytest.mark.parametrize("bad", ["plaintext", "gAAAA", 12, "Z0FBQUFB"])
def test_encrypted_env_values_must_be_fernet_tokens(bad):
    message = only_error({"encrypted_env": {"SECRET": bad}})
    assert message.startswith("pipeline.json: encrypted_env.SECRET ")
    assert "Fernet token" in message
    assert str(bad) not in message.replace("encrypted_env.SECRET", "")  # the value is never echoed


def test_webhook_key():
    assert parse({"webhook_key": "k" * 32}).config.run.webhook_key == "k" * 32
    short = parse({"webhook_key": "abc"})
    assert short.errors == [] and short.warnings[0].field == "webhook_key"
    assert only_error({"webhook_key": ""}) == "pipeline.json: webhook_key must not be empty"


def test_max_instances():
    assert parse({"max_instances": 2}).config.max_instances == 2
    assert only_error({"max_instances": 0}) == "pipeline.json: max_instances 0 must be at least 1"


# --- schedules -----------------------------------------------------------------------------


def test_top_level_cron_becomes_the_default_schedule():
    config = parse({"schedule_cron": "*/5 * * * *"}).config
    (schedule,) = config.schedules
    assert schedule.id == "default"
    assert schedule.cron == "*/5 * * * *"
    assert schedule.fires_by_time


def test_cron_aliases_and_whitespace_are_normalised():
    assert parse({"schedule_cron": "@daily"}).config.schedules[0].cron == "0 0 * * *"
    assert parse({"schedule_cron": " 0  9 * *   1 "}).config.schedules[0].cron == "0 9 * * 1"


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("0 25 * * *", "is not a valid cron expression"),
        ("* * * *", "has 4 fields, cron needs 5"),
        ("0 0 0 * * *", "has 6 fields, cron needs 5"),
        ("0 0 31 2 *", "never fires"),
        ("every day", "has 2 fields"),
    ],
)
def test_bad_cron(cron, words):
    message = only_error({"schedule_cron": cron})
    assert message.startswith(f"pipeline.json: schedule_cron '{cron}' ")
    assert words in message
    assert 'use e.g. "0 * * * *"' in message


def test_cron_wins_over_interval_with_a_warning():
    result = parse({"schedule_cron": "0 * * * *", "schedule_interval_seconds": 60})
    (schedule,) = result.config.schedules
    assert schedule.cron == "0 * * * *" and schedule.interval_seconds is None
    assert [w.field for w in result.warnings] == ["schedule_interval_seconds"]


def test_interval_schedule_with_a_window_in_the_instance_time_zone():
    config = parse(
        {
            "schedule_interval_seconds": 90,
            "schedule_start": "2026-01-31T08:00:00",
            "schedule_end": "2026-02-28T08:00:00+00:00",
        },
        tz_name="Europe/Berlin",
    ).config
    (schedule,) = config.schedules
    assert schedule.interval_seconds == 90
    assert schedule.start == datetime(2026, 1, 31, 8, tzinfo=ZoneInfo("Europe/Berlin"))
    assert schedule.start.utcoffset() == timedelta(hours=1)
    assert schedule.end == datetime(2026, 2, 28, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"schedule_interval_seconds": 0}, "schedule_interval_seconds"),
        ({"schedule_interval_seconds": "60"}, "schedule_interval_seconds"),
        ({"schedule_cron": "* * * * *", "schedule_start": "tomorrow"}, "schedule_start"),
        ({"schedule_cron": "* * * * *", "schedule_end": "2026-13-01"}, "schedule_end"),
        (
            {
                "schedule_cron": "* * * * *",
                "schedule_start": "2026-02-01",
                "schedule_end": "2026-01-01",
            },
            "schedule_end",
        ),
        ({"run_once_at": 1700000000}, "run_once_at"),
    ],
)
def test_bad_schedule_fields(data, field):
    result = parse(data)
    assert [e.field for e in result.errors] == [field]


def test_a_window_without_a_schedule_is_a_warning():
    result = parse({"schedule_start": "2026-01-01"})
    assert result.errors == [] and result.config.schedules == ()
    assert result.warnings[0].field == "schedule_start"


def test_run_once_at_is_its_own_schedule():
    config = parse({"run_once_at": "2026-12-24T18:00:00Z"}).config
    (schedule,) = config.schedules
    assert schedule.id == "run_once"
    assert schedule.run_once_at == datetime(2026, 12, 24, 18, tzinfo=UTC)


def test_schedules_list_with_overrides():
    result = parse(
        {
            "schedule_cron": "0 0 * * *",
            "default_env": {"MODE": "full", "REGION": "eu"},
            "timeout": 60,
            "schedules": [
                {"id": "hourly", "schedule_cron": "0 * * * *", "default_env": {"MODE": "delta"}},
                {
                    "id": "prod",
                    "timeout": 0,
                    "mem_hard_limit": "1g",
                    "enabled": False,
                    "timezone": "America/New_York",
                    "schedule_interval_seconds": 600,
                    "schedule_start": "2026-03-01T00:00:00",
                },
                {"schedule_interval_seconds": 30},
            ],
        }
    )
    assert result.errors == []
    assert [w.field for w in result.warnings] == ["schedule_cron"]  # ignored: schedules[] wins
    hourly, prod, third = result.config.schedules
    assert hourly.cron == "0 * * * *"
    assert hourly.overrides.default_env == {"MODE": "delta"}
    merged = result.config.run.overridden_by(hourly.overrides)
    assert merged.default_env == {"MODE": "delta", "REGION": "eu"}
    assert merged.timeout_seconds == 60
    assert prod.enabled is False
    assert prod.overrides.timeout_seconds == 0
    assert result.config.run.overridden_by(prod.overrides).timeout_seconds == 0
    assert prod.overrides.mem_hard_limit_bytes == 1024**3
    assert prod.start.tzinfo == ZoneInfo("America/New_York")
    assert third.id == "schedule_3"
    assert result.config.schedule("prod") is prod


def test_a_schedule_without_a_timer_is_a_run_configuration():
    config = parse({"schedules": [{"id": "prod", "default_env": {"DB": "prod"}}]}).config
    assert config.schedules[0].fires_by_time is False


@pytest.mark.parametrize(
    ("schedules", "field"),
    [
        ("hourly", "schedules"),
        (["0 * * * *"], "schedules[0]"),
        ([{"id": "a"}, {"id": "a"}], "schedules[1].id"),
        ([{"id": 5}], "schedules[0].id"),
        ([{"schedule_cron": "0 0 * *"}], "schedules[0].schedule_cron"),
        ([{"timeout": -1}], "schedules[0].timeout"),
        ([{"enabled": "no"}], "schedules[0].enabled"),
        ([{"timezone": "Mars/Base"}], "schedules[0].timezone"),
    ],
)
def test_bad_schedules(schedules, field):
    result = parse({"schedules": schedules})
    assert [e.field for e in result.errors] == [field]


def test_unknown_key_inside_a_schedule_is_a_warning():
    result = parse({"schedules": [{"id": "a", "cron": "* * * * *"}]})
    assert result.errors == []
    assert result.warnings[0].message == (
        "pipeline.json: schedules[0].cron is not a pipeline.json field; "
        "did you mean 'schedule_cron'?"
    )


# --- chaining, daemons, notebooks ---------------------------------------------------------


def test_downstream_triggers():
    config = parse(
        {
            "downstream_triggers": [
                {"pipeline": "report"},
                {"pipeline": "alert", "on_success": False, "on_failure": True},
                {"pipeline": "full_load", "on_route": "full", "run_config_id": "prod"},
            ]
        }
    ).config
    assert config.downstream_triggers == (
        DownstreamTrigger("report"),
        DownstreamTrigger("alert", on_success=False, on_failure=True),
        DownstreamTrigger("full_load", on_route="full", run_config_id="prod"),
    )


def test_null_route_and_config_id_mean_not_set():
    config = parse(
        {"downstream_triggers": [{"pipeline": "x", "on_route": None, "run_config_id": None}]}
    ).config
    assert config.downstream_triggers == (DownstreamTrigger("x"),)


@pytest.mark.parametrize(
    ("trigger", "field"),
    [
        ({}, "downstream_triggers[0].pipeline"),
        ({"pipeline": "../etc"}, "downstream_triggers[0].pipeline"),
        ({"pipeline": 3}, "downstream_triggers[0].pipeline"),
        ({"pipeline": "x", "on_success": "yes"}, "downstream_triggers[0].on_success"),
        ({"pipeline": "x", "on_route": 1}, "downstream_triggers[0].on_route"),
        ("x", "downstream_triggers[0]"),
    ],
)
def test_bad_downstream_triggers(trigger, field):
    result = parse({"downstream_triggers": [trigger]})
    assert [e.field for e in result.errors] == [field]
    assert result.config.downstream_triggers == ()


def test_triggers_that_can_never_fire_are_warnings():
    result = parse(
        {
            "downstream_triggers": [
                {"pipeline": "a", "on_success": False},
                {"pipeline": "b", "on_success": False, "on_failure": True, "on_route": "full"},
            ]
        }
    )
    assert result.errors == []
    assert [w.field for w in result.warnings] == [
        "downstream_triggers[0]",
        "downstream_triggers[1].on_route",
    ]


def test_daemon_fields():
    config = parse(
        {"restart_on_crash": True, "restart_cooldown": 5, "restart_interval": "0 3 * * *"}
    ).config
    assert config.restart_on_crash is True
    assert config.restart_cooldown == 5.0
    assert config.restart_interval == "0 3 * * *"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"restart_on_crash": 1}, "restart_on_crash"),
        ({"restart_cooldown": -1}, "restart_cooldown"),
        ({"restart_interval": "daily"}, "restart_interval"),
    ],
)
def test_bad_daemon_fields(data, field):
    assert [e.field for e in parse(data).errors] == [field]


def test_cells_for_notebooks():
    result = parse({"type": "notebook", "cells": [{"retries": 2, "delay_seconds": 1.5}, {}]})
    assert result.errors == [] and result.warnings == []
    assert [(c.retries, c.delay_seconds) for c in result.config.cells] == [(2, 1.5), (0, 0.0)]


def test_cells_on_a_script_are_a_warning():
    result = parse({"cells": [{"retries": 1}]})
    assert result.errors == []
    assert result.warnings[0].field == "cells"


@pytest.mark.parametrize(
    ("cells", "field"),
    [("x", "cells"), ([3], "cells[0]"), ([{"retries": -1}], "cells[0].retries")],
)
def test_bad_cells(cells, field):
    assert [e.field for e in parse({"type": "notebook", "cells": cells}).errors] == [field]


# --- the stored form -----------------------------------------------------------------------


def test_every_field_survives_the_round_trip_through_json():
    import json

    data = {
        "description": "all of it",
        "tags": ["a"],
        "enabled": False,
        "type": "notebook",
        "python_version": "3.12",
        "cpu_hard_limit": 2,
        "mem_hard_limit": "1g",
        "cpu_soft_limit": 1,
        "mem_soft_limit": "512m",
        "timeout": 0,
        "retry_attempts": 2,
        "retry_strategy": {"type": "custom_schedule", "delays": [1, 2]},
        "default_env": {"A": "1"},
        "encrypted_env": {"S": TOKEN},
        "webhook_key": "k" * 20,
        "max_instances": 3,
        "timezone": "Europe/Paris",
        "schedules": [
            {
                "id": "s",
                "schedule_cron": "0 7 * * 0",
                "schedule_start": "2026-01-01T00:00:00",
                "run_once_at": "2026-06-01T12:00:00",
                "retry_strategy": {"type": "fixed_delay", "delay": 3},
            }
        ],
        "downstream_triggers": [{"pipeline": "b", "on_route": "full"}],
        "restart_on_crash": True,
        "restart_cooldown": 10,
        "restart_interval": "@hourly",
        "cells": [{"retries": 1, "delay_seconds": 2}],
    }
    result = parse(data)
    assert result.errors == [] and result.warnings == []
    stored = json.loads(json.dumps(result.config.to_json()))
    assert PipelineConfig.from_json(stored) == result.config


def test_placement_is_the_labels_a_worker_must_have():
    config = parse({"placement": {"zone": "a", "gpu": "yes"}}).config
    assert config.placement == (("gpu", "yes"), ("zone", "a"))
    assert PipelineConfig.from_json(config.to_json()) == config  # stored and read back
    assert parse({}).config.placement == ()


@pytest.mark.parametrize(
    ("placement", "expected"),
    [
        (["gpu=yes"], 'pipeline.json: placement ["gpu=yes"] must be an object of labels'),
        ({"gpu": True}, "pipeline.json: placement.gpu true must be a label's value"),
        ({"gpu": "a b"}, "pipeline.json: placement.gpu 'a b' must be a label's value"),
        ({"-x": "1"}, "pipeline.json: placement.-x a label's name is letters"),
    ],
)
def test_a_bad_placement_says_how_to_write_one(placement, expected):
    assert only_error({"placement": placement}).startswith(expected)


def test_network_and_executor_are_read_and_kept():
    config = parse({"network": False, "executor": "sandbox"}).config
    assert (config.network, config.executor) == (False, "sandbox")
    assert PipelineConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    assert (parse({}).config.network, parse({}).config.executor) == (True, "")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"network": "off"}, "pipeline.json: network 'off' must be true or false"),
        (
            {"executor": "podman"},
            'pipeline.json: executor \'podman\' must be "docker" or "sandbox"',
        ),
        ({"executor": "local"}, 'pipeline.json: executor \'local\' must be "docker" or "sandbox"'),
    ],
)
def test_a_bad_network_or_executor_says_what_it_may_be(data, expected):
    assert only_error(data).startswith(expected)
