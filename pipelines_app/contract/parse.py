"""parse_config(): a decoded pipeline.json validated into a PipelineConfig and its problems.

Every error names the file, the field, the bad value and a fix.
"""

from __future__ import annotations

import re
from typing import Any

from pipelines_app.contract.environment import parse_environment
from pipelines_app.contract.reader import FieldReader, ParseResult, show
from pipelines_app.contract.selection import selection_problem, selection_tokens
from pipelines_app.contract.types import (
    MODELS_COMMANDS,
    MODELS_ENGINES,
    NOTIFY_EVENTS,
    CellPolicy,
    DownstreamTrigger,
    ModelsSpec,
    NotifyPolicy,
    PipelineConfig,
    RetryStrategy,
    RunSettings,
    ScheduleSpec,
)

PIPELINE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
PYTHON_VERSION = re.compile(r"[A-Za-z0-9@.<>=!~,*+-]{1,64}")
# Docker refuses memory limits below 6 MiB.
MIN_MEMORY_LIMIT = 6 * 1024 * 1024
RETRY_TYPES = ("exponential_backoff", "fixed_delay", "custom_schedule")

RUN_SETTING_KEYS = (
    "cpu_hard_limit",
    "mem_hard_limit",
    "cpu_soft_limit",
    "mem_soft_limit",
    "timeout",
    "retry_attempts",
    "retry_strategy",
    "default_env",
    "encrypted_env",
    "webhook_key",
)
SCHEDULE_KEYS = (
    "schedule_cron",
    "schedule_interval_seconds",
    "schedule_start",
    "schedule_end",
    "run_once_at",
)
TOP_LEVEL_KEYS = (
    "description",
    "tags",
    "enabled",
    "type",
    "python_version",
    *RUN_SETTING_KEYS,
    "max_instances",
    *SCHEDULE_KEYS,
    "timezone",
    "schedules",
    "downstream_triggers",
    "restart_on_crash",
    "restart_cooldown",
    "restart_interval",
    "cells",
    "notify",
    "models",
    "data_folder",
    "environment",
    "placement",
    "network",
    "executor",
)
PIPELINE_TYPES = ("script", "notebook", "models")
# What pipeline.json "executor" may name (the instance's PIPELINE_EXECUTORS says which it
# allows).
PIPELINE_EXECUTOR_CHOICES = ("docker", "sandbox")
MODELS_KEYS = (
    "engine",
    "commands",
    "select",
    "exclude",
    "full_refresh",
    "target",
    "docs",
    "fingerprint_cache",
)
TARGET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
# A worker label's name and value (WORKER_LABELS=gpu=yes,zone=a; pipeline.json "placement").
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
SCHEDULE_ENTRY_KEYS = ("id", "enabled", "timezone", *SCHEDULE_KEYS, *RUN_SETTING_KEYS)
TRIGGER_KEYS = ("pipeline", "on_success", "on_failure", "run_config_id", "on_route")


def is_pipeline_name(name: str) -> bool:
    """Letters, digits, -, _ and . (not first); the whole name, not a prefix of it."""
    return PIPELINE_NAME.fullmatch(name) is not None


def parse_config(data: Any, *, file: str = "pipeline.json", tz_name: str = "UTC") -> ParseResult:
    """Validate a decoded pipeline.json; never raises for bad content."""
    reader = FieldReader(file, tz_name)
    if not isinstance(data, dict):
        reader.error(
            "",
            f"must hold a JSON object ({{...}}), not {type(data).__name__}; "
            'e.g. {"description": "Nightly import"}',
        )
        return ParseResult(PipelineConfig(), reader.errors, reader.warnings)

    reader.unknown_keys(data, TOP_LEVEL_KEYS, "")
    values: dict[str, Any] = {}

    if "description" in data and (text := reader.string(data["description"], "description")):
        values["description"] = text
    if "tags" in data:
        values["tags"] = _tags(reader, data["tags"])
    if "enabled" in data and (flag := reader.boolean(data["enabled"], "enabled")) is not None:
        values["enabled"] = flag
    if "type" in data:
        values["type"] = reader.choice(data["type"], "type", PIPELINE_TYPES)
    if "python_version" in data:
        values["python_version"] = _python_version(reader, data["python_version"])
    if "environment" in data and (environment := parse_environment(reader, data["environment"])):
        values["environment"] = environment
    if "timezone" in data:
        values["timezone"] = reader.timezone(data["timezone"], "timezone")
    tz_name = values.get("timezone") or tz_name

    values["run"] = _run_settings(reader, data, "")
    if "max_instances" in data:
        values["max_instances"] = reader.integer(data["max_instances"], "max_instances", minimum=1)

    values["schedules"] = _schedules(reader, data, tz_name)
    if "downstream_triggers" in data:
        values["downstream_triggers"] = _triggers(reader, data["downstream_triggers"])
    if "restart_on_crash" in data:
        flag = reader.boolean(data["restart_on_crash"], "restart_on_crash")
        values["restart_on_crash"] = bool(flag)
    if "restart_cooldown" in data:
        cooldown = reader.number(data["restart_cooldown"], "restart_cooldown", minimum=0)
        values["restart_cooldown"] = cooldown or 0.0
    if "restart_interval" in data:
        values["restart_interval"] = reader.cron(data["restart_interval"], "restart_interval")
    if "cells" in data:
        values["cells"] = _cells(reader, data["cells"])
        if values.get("type", "script") != "notebook":
            reader.warn("cells", 'applies to notebooks only ("type": "notebook") and is ignored')

    if "notify" in data:
        values["notify"] = _notify(reader, data["notify"])
    if "models" in data:
        values["models"] = _models(reader, data["models"])
        if values.get("type") not in (None, "models"):
            reader.warn("models", 'applies to models pipelines only ("type": "models")')
    if "data_folder" in data:
        values["data_folder"] = reader.boolean(data["data_folder"], "data_folder")
    if "placement" in data:
        values["placement"] = _placement(reader, data["placement"])
    if "network" in data and (flag := reader.boolean(data["network"], "network")) is not None:
        values["network"] = flag
    if "executor" in data:
        values["executor"] = reader.choice(data["executor"], "executor", PIPELINE_EXECUTOR_CHOICES)

    config = PipelineConfig(**{k: v for k, v in values.items() if v is not None})
    return ParseResult(config, reader.errors, reader.warnings)


def _models(reader: FieldReader, value: Any) -> ModelsSpec | None:
    """{"engine": "dbt", "commands": ["build"], "select": "orders+", "full_refresh": false}"""
    if not isinstance(value, dict):
        reader.error("models", f'{show(value)} must be an object, e.g. {{"select": "orders+"}}')
        return None
    reader.unknown_keys(value, MODELS_KEYS, "models.")
    values: dict[str, Any] = {}
    if value.get("engine") is not None:
        values["engine"] = reader.choice(
            value["engine"], "models.engine", MODELS_ENGINES, note=" (FastFlowTransform)"
        )
    if "commands" in value:
        commands = _names(reader, value["commands"], "models.commands")
        allowed = MODELS_COMMANDS.get(values.get("engine", ""), ())
        known = allowed or sorted({c for each in MODELS_COMMANDS.values() for c in each})
        for command in commands:
            if command not in known:
                reader.error(
                    "models.commands",
                    f"{show(command)} is not a command Fast-Flow runs; use " + ", ".join(known),
                )
        values["commands"] = tuple(c for c in commands if c in known)
        if not commands:
            reader.error("models.commands", 'names no command; e.g. ["build"]')
    for key in ("select", "exclude"):
        if key in value:
            values[key] = _selection(reader, value[key], f"models.{key}")
    for key in ("full_refresh", "docs", "fingerprint_cache"):
        if key in value and (flag := reader.boolean(value[key], f"models.{key}")) is not None:
            values[key] = flag
    if "target" in value:
        target = reader.string(value["target"], "models.target", allow_empty=False)
        if target is not None and not TARGET_NAME.fullmatch(target):
            reader.error("models.target", f'{show(target)} is not a target name, e.g. "prod"')
        elif target is not None:
            values["target"] = target
    if values.get("fingerprint_cache") and values.get("engine") == "dbt":
        reader.warn("models.fingerprint_cache", "applies to FastFlowTransform only")
    return ModelsSpec(**values)


def _selection(reader: FieldReader, value: Any, path: str) -> tuple[str, ...]:
    """ "orders+ tag:nightly" or ["orders+", "tag:nightly"] → the selectors."""
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        value = " ".join(value)
    if not isinstance(value, str):
        reader.error(path, f'{show(value)} must be a string or a list of strings, e.g. "orders+"')
        return ()
    problem = selection_problem(value)
    if problem:
        reader.error(path, problem)
        return ()
    return selection_tokens(value)


def _notify(reader: FieldReader, value: Any) -> NotifyPolicy | None:
    """["ops-slack"], or {"channels": ["ops-slack"], "events": ["failed", "recovered"]}."""
    example = '["ops-slack"] or {"channels": ["ops-slack"], "events": ["failed", "recovered"]}'
    if isinstance(value, list):
        value = {"channels": value}
    if not isinstance(value, dict):
        reader.error("notify", f"{show(value)} must be a list of channel names, or {example}")
        return None
    reader.unknown_keys(value, ("channels", "events"), "notify.")
    channels = _names(reader, value.get("channels", []), "notify.channels")
    events = NOTIFY_EVENTS
    if "events" in value:
        events = _names(reader, value["events"], "notify.events")
        for event in events:
            if event not in NOTIFY_EVENTS:
                reader.error("notify.events", f"{show(event)} is not an event; use "
                             + ", ".join(NOTIFY_EVENTS))  # fmt: skip
        events = tuple(e for e in events if e in NOTIFY_EVENTS)
    if not channels:
        reader.warn("notify", "names no channel, so it notifies nobody")
    return NotifyPolicy(channels=channels, events=events)


def _names(reader: FieldReader, value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        reader.error(path, f"{show(value)} must be a list of strings")
        return ()
    names: list[str] = []
    for index, item in enumerate(value):
        name = reader.string(item, f"{path}[{index}]", allow_empty=False)
        if name is not None and name.strip() not in names:
            names.append(name.strip())
    return tuple(names)


def _placement(reader: FieldReader, value: Any) -> tuple[tuple[str, str], ...]:
    """The labels a worker must have to take the pipeline's runs: {"gpu": "yes"}."""
    example = 'e.g. {"gpu": "yes", "zone": "a"}'
    if not isinstance(value, dict):
        reader.error("placement", f"{show(value)} must be an object of labels, {example}")
        return ()
    labels = []
    for name, wanted in value.items():
        path = f"placement.{name}"
        if not LABEL.fullmatch(str(name)):
            reader.error(path, "a label's name is letters, digits, '.', '_' and '-' (at most 63)")
        elif not isinstance(wanted, str) or not LABEL.fullmatch(wanted):
            reader.error(path, f"{show(wanted)} must be a label's value, {example}")
        else:
            labels.append((str(name), wanted))
    return tuple(sorted(labels))


def _tags(reader: FieldReader, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        reader.error("tags", f'{show(value)} must be a list of strings, e.g. ["nightly", "etl"]')
        return ()
    tags: list[str] = []
    for index, item in enumerate(value):
        tag = reader.string(item, f"tags[{index}]", allow_empty=False)
        if tag is not None and tag.strip() not in tags:
            tags.append(tag.strip())
    return tuple(tags)


def _python_version(reader: FieldReader, value: Any) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        reader.error(
            "python_version",
            f'{show(value)} must be a string such as "3.12" (in quotes: as a number 3.10 is 3.1)',
        )
        return None
    text = reader.string(value, "python_version", allow_empty=False)
    if text is not None and not PYTHON_VERSION.fullmatch(text.strip()):
        reader.error("python_version", f'{show(value)} is not a Python version; use e.g. "3.12"')
        return None
    return text.strip() if text else None


def _run_settings(reader: FieldReader, data: dict[str, Any], prefix: str) -> RunSettings:
    values: dict[str, Any] = {}
    for key in ("cpu_hard_limit", "cpu_soft_limit"):
        if key in data:
            values[key] = reader.number(data[key], prefix + key, minimum=0, exclusive=True)
    if "mem_hard_limit" in data:
        values["mem_hard_limit_bytes"] = reader.size(
            data["mem_hard_limit"], prefix + "mem_hard_limit", minimum=MIN_MEMORY_LIMIT
        )
    if "mem_soft_limit" in data:
        values["mem_soft_limit_bytes"] = reader.size(
            data["mem_soft_limit"], prefix + "mem_soft_limit"
        )
    if "timeout" in data:
        values["timeout_seconds"] = reader.integer(
            data["timeout"],
            prefix + "timeout",
            minimum=0,
            unit=" of seconds (0 = no limit)",
            example=600,
        )
    if "retry_attempts" in data:
        values["retry_attempts"] = reader.integer(
            data["retry_attempts"], prefix + "retry_attempts", minimum=0
        )
    if "retry_strategy" in data:
        values["retry_strategy"] = _retry_strategy(reader, data["retry_strategy"], prefix)
    if "default_env" in data:
        values["default_env"] = reader.env_map(
            data["default_env"], prefix + "default_env", encrypted=False
        )
    if "encrypted_env" in data:
        values["encrypted_env"] = reader.env_map(
            data["encrypted_env"], prefix + "encrypted_env", encrypted=True
        )
    if "webhook_key" in data:
        key = reader.string(data["webhook_key"], prefix + "webhook_key", allow_empty=False)
        if key is not None and len(key) < 16:
            reader.warn(prefix + "webhook_key", "is shorter than 16 characters and easy to guess")
        values["webhook_key"] = key

    settings = RunSettings(**{k: v for k, v in values.items() if v is not None})
    for kind, unit in (("cpu", "cores"), ("mem", "bytes")):
        suffix = "" if kind == "cpu" else "_bytes"
        soft = getattr(settings, f"{kind}_soft_limit{suffix}")
        hard = getattr(settings, f"{kind}_hard_limit{suffix}")
        if soft is not None and hard is not None and soft > hard:
            reader.warn(
                f"{prefix}{kind}_soft_limit",
                f"is above {kind}_hard_limit ({unit}: {soft:g} > {hard:g}) "
                "and can never be reached",
            )
    return settings


def _retry_strategy(reader: FieldReader, value: Any, prefix: str) -> RetryStrategy | None:
    path = prefix + "retry_strategy"
    if not isinstance(value, dict):
        reader.error(
            path, f'{show(value)} must be an object, e.g. {{"type": "fixed_delay", "delay": 30}}'
        )
        return None
    kind = value.get("type")
    if kind not in RETRY_TYPES:
        reader.error(f"{path}.type", f"{show(kind)} must be one of {', '.join(RETRY_TYPES)}")
        return None
    known = {
        "exponential_backoff": ("type", "initial_delay", "max_delay", "multiplier"),
        "fixed_delay": ("type", "delay"),
        "custom_schedule": ("type", "delays"),
    }[kind]
    reader.unknown_keys(value, known, f"{path}.")
    values: dict[str, Any] = {"type": kind}
    for key in known[1:]:
        if key not in value:
            continue
        if key == "delays":
            values["delays"] = _delays(reader, value["delays"], f"{path}.delays")
        else:
            minimum = 1 if key == "multiplier" else 0
            values[key] = reader.number(value[key], f"{path}.{key}", minimum=minimum)
    if kind == "custom_schedule" and not values.get("delays"):
        if "delays" not in value:
            reader.error(f"{path}.delays", "is required for custom_schedule, e.g. [10, 60, 300]")
        return None
    if None in values.values():
        return None
    strategy = RetryStrategy(**values)
    if strategy.max_delay < strategy.initial_delay:
        reader.warn(f"{path}.max_delay", "is below initial_delay; every retry waits max_delay")
    return strategy


def _delays(reader: FieldReader, value: Any, path: str) -> tuple[float, ...] | None:
    if not isinstance(value, list) or not value:
        reader.error(path, f"{show(value)} must be a non-empty list of seconds, e.g. [10, 60, 300]")
        return None
    delays = [reader.number(item, f"{path}[{i}]", minimum=0) for i, item in enumerate(value)]
    return None if None in delays else tuple(d for d in delays if d is not None)


def _schedule_fields(
    reader: FieldReader, data: dict[str, Any], prefix: str, tz_name: str
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if "schedule_cron" in data:
        values["cron"] = reader.cron(data["schedule_cron"], prefix + "schedule_cron")
    if "schedule_interval_seconds" in data:
        values["interval_seconds"] = reader.integer(
            data["schedule_interval_seconds"],
            prefix + "schedule_interval_seconds",
            minimum=1,
            unit=" of seconds",
            example=300,
        )
    if "schedule_cron" in data and "schedule_interval_seconds" in data:
        reader.warn(
            prefix + "schedule_interval_seconds",
            "is ignored because schedule_cron is also given (cron wins)",
        )
        values["interval_seconds"] = None
    for key, name in (
        ("schedule_start", "start"),
        ("schedule_end", "end"),
        ("run_once_at", "run_once_at"),
    ):
        if key in data:
            values[name] = reader.moment(data[key], prefix + key, tz_name)
    start, end = values.get("start"), values.get("end")
    if start and end and end <= start:
        reader.error(
            prefix + "schedule_end", f"{show(data['schedule_end'])} must be after schedule_start"
        )
    return values


def _schedules(reader: FieldReader, data: dict[str, Any], tz_name: str) -> tuple[ScheduleSpec, ...]:
    if "schedules" not in data:
        values = _schedule_fields(reader, data, "", tz_name)
        once = values.pop("run_once_at", None)
        specs = []
        if values.get("cron") or values.get("interval_seconds"):
            specs.append(ScheduleSpec(id="default", **values))
        elif values.get("start") or values.get("end"):
            reader.warn("schedule_start", "and schedule_end have no effect without a schedule")
        if once:
            specs.append(ScheduleSpec(id="run_once", run_once_at=once))
        return tuple(specs)

    entries = data["schedules"]
    for key in SCHEDULE_KEYS:
        if key in data:
            reader.warn(key, "is ignored because schedules[] is present; move it into an entry")
    if not isinstance(entries, list):
        reader.error("schedules", f"{show(entries)} must be a list of objects")
        return ()
    specs: list[ScheduleSpec] = []
    for index, entry in enumerate(entries):
        prefix = f"schedules[{index}]."
        if not isinstance(entry, dict):
            reader.error(f"schedules[{index}]", f"{show(entry)} must be an object")
            continue
        reader.unknown_keys(entry, SCHEDULE_ENTRY_KEYS, prefix)
        schedule_id = f"schedule_{index + 1}"
        if "id" in entry:
            schedule_id = (
                reader.string(entry["id"], prefix + "id", allow_empty=False) or schedule_id
            )
        if any(spec.id == schedule_id for spec in specs):
            reader.error(prefix + "id", f"{show(schedule_id)} is used twice; ids must be unique")
            continue
        schedule_tz = tz_name
        values: dict[str, Any] = {}
        if "timezone" in entry:
            values["timezone"] = reader.timezone(entry["timezone"], prefix + "timezone")
            schedule_tz = values["timezone"] or tz_name
        values.update(_schedule_fields(reader, entry, prefix, schedule_tz))
        if "enabled" in entry:
            values["enabled"] = reader.boolean(entry["enabled"], prefix + "enabled")
        values["overrides"] = _run_settings(reader, entry, prefix)
        specs.append(
            ScheduleSpec(id=schedule_id, **{k: v for k, v in values.items() if v is not None})
        )
    return tuple(specs)


def _triggers(reader: FieldReader, value: Any) -> tuple[DownstreamTrigger, ...]:
    if not isinstance(value, list):
        reader.error("downstream_triggers", f"{show(value)} must be a list of objects")
        return ()
    triggers: list[DownstreamTrigger] = []
    for index, entry in enumerate(value):
        path = f"downstream_triggers[{index}]"
        if not isinstance(entry, dict):
            reader.error(path, f'{show(entry)} must be an object like {{"pipeline": "other"}}')
            continue
        reader.unknown_keys(entry, TRIGGER_KEYS, f"{path}.")
        target = entry.get("pipeline")
        if target is None:
            reader.error(f"{path}.pipeline", "is required: the name of the pipeline to start")
            continue
        target = reader.string(target, f"{path}.pipeline", allow_empty=False)
        if target is None:
            continue
        if not is_pipeline_name(target):
            reader.error(f"{path}.pipeline", f"{show(target)} is not a pipeline (folder) name")
            continue
        values: dict[str, Any] = {"pipeline": target}
        for key in ("on_success", "on_failure"):
            if key in entry:
                values[key] = reader.boolean(entry[key], f"{path}.{key}")
        for key in ("run_config_id", "on_route"):
            if entry.get(key) is not None:
                values[key] = reader.string(entry[key], f"{path}.{key}", allow_empty=False)
        if None in values.values():
            continue
        trigger = DownstreamTrigger(**values)
        if not trigger.on_success and not trigger.on_failure:
            reader.warn(path, "has on_success and on_failure both false and never fires")
        elif trigger.on_route is not None and not trigger.on_success:
            reader.warn(f"{path}.on_route", "only fires after a success, but on_success is false")
        triggers.append(trigger)
    return tuple(triggers)


def _cells(reader: FieldReader, value: Any) -> tuple[CellPolicy, ...]:
    if not isinstance(value, list):
        reader.error(
            "cells", f'{show(value)} must be a list like [{{"retries": 2, "delay_seconds": 5}}]'
        )
        return ()
    cells: list[CellPolicy] = []
    for index, entry in enumerate(value):
        path = f"cells[{index}]"
        if not isinstance(entry, dict):
            reader.error(path, f"{show(entry)} must be an object")
            continue
        reader.unknown_keys(entry, ("retries", "delay_seconds"), f"{path}.")
        retries = reader.integer(entry.get("retries", 0), f"{path}.retries", minimum=0)
        delay = reader.number(entry.get("delay_seconds", 0), f"{path}.delay_seconds", minimum=0)
        cells.append(CellPolicy(retries=retries or 0, delay_seconds=delay or 0.0))
    return tuple(cells)
