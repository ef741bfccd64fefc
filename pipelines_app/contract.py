"""The pipeline.json contract (docs/pipeline-format.md), parsed once into typed values.

`parse_config()` validates a decoded pipeline.json and returns a `PipelineConfig` plus the
problems found. Every error names the file, the field, the bad value and a fix. The config is
stored on the `Pipeline` row as `PipelineConfig.to_json()` (already normalised: sizes in
bytes, cron in 5-field form, datetimes with their offset) and read back with
`PipelineConfig.from_json()`, so nothing later parses pipeline.json again.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import re
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipelines_app.cron import CRON_EXAMPLES, normalize_cron
from pipelines_app.sizes import SIZE_EXAMPLES, parse_size

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PIPELINE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
PYTHON_VERSION = re.compile(r"^[A-Za-z0-9@.<>=!~,*+-]{1,64}$")
RESERVED_ENV_PREFIX = "FASTFLOW_"
# Names that change how a run is built or isolated: never set by a stored variable or by the
# values given for one run (pipeline.json's own default_env only reserves FASTFLOW_).
RESERVED_RUNTIME_NAMES = {"PATH", "HOME", "PWD", "SHELL", "USER", "HOSTNAME"}
RESERVED_RUNTIME_PREFIXES = (
    "PYTHON",
    "UV_",
    "LD_",
    "SSL_",
    "REQUESTS_CA",
    "FASTFLOW_",
    "VIRTUAL_ENV",
)
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
)
SCHEDULE_ENTRY_KEYS = ("id", "enabled", "timezone", *SCHEDULE_KEYS, *RUN_SETTING_KEYS)
TRIGGER_KEYS = ("pipeline", "on_success", "on_failure", "run_config_id", "on_route")


def runtime_env_name_problem(name: str) -> str | None:
    """Why `name` cannot be set for a run from outside the pipeline's code (None: it can)."""
    if not ENV_NAME.match(name):
        return f"{name!r} is not a variable name (letters, digits and _, not first a digit)"
    upper = name.upper()
    if upper in RESERVED_RUNTIME_NAMES or upper.startswith(RESERVED_RUNTIME_PREFIXES):
        return f"{name} is reserved: it would change how the run is built"
    return None


# --- Typed values --------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryStrategy:
    """How long to wait before retry number n (1-based)."""

    type: Literal["exponential_backoff", "fixed_delay", "custom_schedule"]
    initial_delay: float = 60.0
    max_delay: float = 3600.0
    multiplier: float = 2.0
    delay: float = 60.0
    delays: tuple[float, ...] = ()

    def delay_before_retry(self, retry_number: int) -> float:
        if self.type == "fixed_delay":
            return self.delay
        if self.type == "custom_schedule":
            return self.delays[min(retry_number, len(self.delays)) - 1]
        return min(self.initial_delay * self.multiplier ** (retry_number - 1), self.max_delay)


@dataclass(frozen=True)
class RunSettings:
    """The settings a schedule may override; None means "not set here"."""

    cpu_hard_limit: float | None = None
    mem_hard_limit_bytes: int | None = None
    cpu_soft_limit: float | None = None
    mem_soft_limit_bytes: int | None = None
    timeout_seconds: int | None = None  # 0 = no limit (daemons)
    retry_attempts: int | None = None
    retry_strategy: RetryStrategy | None = None
    default_env: dict[str, str] = field(default_factory=dict)
    encrypted_env: dict[str, str] = field(default_factory=dict)
    webhook_key: str | None = None

    def overridden_by(self, other: RunSettings) -> RunSettings:
        """These settings with `other`'s set values on top; env maps merge key by key."""
        changes: dict[str, Any] = {
            f.name: getattr(other, f.name)
            for f in fields(other)
            if f.name not in ("default_env", "encrypted_env") and getattr(other, f.name) is not None
        }
        changes["default_env"] = {**self.default_env, **other.default_env}
        changes["encrypted_env"] = {**self.encrypted_env, **other.encrypted_env}
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSettings:
        return _run_settings_from_json(data)


@dataclass(frozen=True)
class ScheduleSpec:
    """One entry of `schedules[]` (or the top-level schedule fields, as id "default")."""

    id: str
    cron: str | None = None
    interval_seconds: int | None = None
    run_once_at: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    timezone: str | None = None
    enabled: bool = True
    overrides: RunSettings = field(default_factory=RunSettings)

    @property
    def fires_by_time(self) -> bool:
        return bool(self.cron or self.interval_seconds or self.run_once_at)


@dataclass(frozen=True)
class DownstreamTrigger:
    pipeline: str
    on_success: bool = True
    on_failure: bool = False
    run_config_id: str | None = None
    on_route: str | None = None


@dataclass(frozen=True)
class CellPolicy:
    retries: int = 0
    delay_seconds: float = 0.0


@dataclass(frozen=True)
class PipelineConfig:
    description: str = ""
    tags: tuple[str, ...] = ()
    enabled: bool = True
    type: Literal["script", "notebook"] = "script"
    python_version: str | None = None
    run: RunSettings = field(default_factory=RunSettings)
    max_instances: int | None = None
    timezone: str | None = None
    schedules: tuple[ScheduleSpec, ...] = ()
    downstream_triggers: tuple[DownstreamTrigger, ...] = ()
    restart_on_crash: bool = False
    restart_cooldown: float = 0.0
    restart_interval: str | None = None
    cells: tuple[CellPolicy, ...] = ()

    @property
    def entry_point(self) -> str:
        return "main.ipynb" if self.type == "notebook" else "main.py"

    def schedule(self, schedule_id: str) -> ScheduleSpec | None:
        return next((s for s in self.schedules if s.id == schedule_id), None)

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PipelineConfig:
        """Rebuild from `to_json()` output (trusted, already validated)."""
        data = dict(data)
        data["tags"] = tuple(data.get("tags", ()))
        data["run"] = _run_settings_from_json(data.get("run", {}))
        data["schedules"] = tuple(_schedule_from_json(s) for s in data.get("schedules", ()))
        data["downstream_triggers"] = tuple(
            DownstreamTrigger(**t) for t in data.get("downstream_triggers", ())
        )
        data["cells"] = tuple(CellPolicy(**c) for c in data.get("cells", ()))
        return cls(**data)


def _to_json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _to_json(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, list | tuple):
        return [_to_json(item) for item in value]
    if isinstance(value, dict):
        return {key: _to_json(item) for key, item in value.items()}
    return value


def _run_settings_from_json(data: dict[str, Any]) -> RunSettings:
    data = dict(data)
    if data.get("retry_strategy"):
        strategy = dict(data["retry_strategy"])
        strategy["delays"] = tuple(strategy.get("delays", ()))
        data["retry_strategy"] = RetryStrategy(**strategy)
    return RunSettings(**data)


def _schedule_from_json(data: dict[str, Any]) -> ScheduleSpec:
    data = dict(data)
    for key in ("run_once_at", "start", "end"):
        if data.get(key):
            data[key] = datetime.fromisoformat(data[key])
    data["overrides"] = _run_settings_from_json(data.get("overrides", {}))
    return ScheduleSpec(**data)


# --- Problems ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """An error or warning about one field of one file, in words a person can act on."""

    file: str
    field: str
    message: str

    @classmethod
    def of(cls, file: str, field: str, what: str) -> Problem:
        """A problem whose message reads: file, field, then what is wrong."""
        where = " ".join(part for part in (f"{file}:" if file else "", field) if part)
        return cls(file, field, f"{where} {what}" if where else what)

    def to_json(self) -> dict[str, str]:
        return {"file": self.file, "field": self.field, "message": self.message}


@dataclass
class ParseResult:
    config: PipelineConfig
    errors: list[Problem]
    warnings: list[Problem]


def show(value: Any) -> str:
    """A bad value as people wrote it, shortened: '1.5x', 3.12, [1, 2]."""
    import json

    text = f"'{value}'" if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "…"


class _Reader:
    """Reads fields out of one JSON object, collecting problems instead of raising."""

    def __init__(self, file: str, tz_name: str) -> None:
        self.file = file
        self.default_tz = tz_name
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(Problem.of(self.file, path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(Problem.of(self.file, path, message))

    def unknown_keys(self, data: dict[str, Any], known: tuple[str, ...], prefix: str) -> None:
        for key in data:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.5) or [
                name for name in known if name.endswith(f"_{key}")
            ]
            hint = f"; did you mean '{close[0]}'?" if close else " and is ignored"
            self.warn(f"{prefix}{key}", f"is not a pipeline.json field{hint}")

    # Scalars. Each returns None (after recording an error) when the value is unusable.

    def string(self, value: Any, path: str, *, allow_empty: bool = True) -> str | None:
        if not isinstance(value, str):
            self.error(path, f"{show(value)} must be a string (in double quotes)")
            return None
        if not allow_empty and not value.strip():
            self.error(path, "must not be empty")
            return None
        return value

    def boolean(self, value: Any, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.error(path, f"{show(value)} must be true or false (without quotes)")
            return None
        return value

    def integer(
        self, value: Any, path: str, *, minimum: int, unit: str = "", example: int = 3
    ) -> int | None:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"{show(value)} must be a whole number{unit}, e.g. {example}")
            return None
        if value < minimum:
            self.error(path, f"{value} must be at least {minimum}{unit}")
            return None
        return value

    def number(
        self, value: Any, path: str, *, minimum: float, exclusive: bool = False
    ) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(path, f"{show(value)} must be a number, e.g. 0.5, 1 or 2")
            return None
        if value < minimum or (exclusive and value == minimum):
            relation = "greater than" if exclusive else "at least"
            self.error(path, f"{show(value)} must be {relation} {minimum:g}")
            return None
        return float(value)

    def size(self, value: Any, path: str, *, minimum: int = 1) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool):
            num_bytes = value  # a bare number is bytes
        elif isinstance(value, str):
            try:
                num_bytes = parse_size(value)
            except ValueError:
                self.error(path, f"{show(value)} is not a size; use e.g. {SIZE_EXAMPLES}")
                return None
        else:
            self.error(path, f"{show(value)} is not a size; use e.g. {SIZE_EXAMPLES}")
            return None
        if num_bytes < minimum:
            least = f"{minimum // 1024**2}m" if minimum >= 1024**2 else f"{minimum} byte"
            self.error(path, f"{show(value)} is too small; the minimum is {least}")
            return None
        return num_bytes

    def cron(self, value: Any, path: str) -> str | None:
        text = self.string(value, path)
        if text is None:
            return None
        try:
            return normalize_cron(text)
        except ValueError as exc:
            self.error(path, f"{show(value)} {exc}; use e.g. {CRON_EXAMPLES}")
            return None

    def timezone(self, value: Any, path: str) -> str | None:
        text = self.string(value, path, allow_empty=False)
        if text is None:
            return None
        try:
            ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            self.error(path, f"{show(value)} is not a time zone; use e.g. 'UTC', 'Europe/Berlin'")
            return None
        return text

    def moment(self, value: Any, path: str, tz_name: str) -> datetime | None:
        text = self.string(value, path)
        if text is None:
            return None
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            self.error(
                path,
                f"{show(value)} is not an ISO date-time; use e.g. '2026-01-31T08:00:00' "
                "(the instance's time zone) or '2026-01-31T08:00:00+01:00'",
            )
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=ZoneInfo(tz_name))
        return moment

    def env_map(self, value: Any, path: str, *, encrypted: bool) -> dict[str, str]:
        if not isinstance(value, dict):
            self.error(path, f"{show(value)} must be an object of NAME: value pairs")
            return {}
        result: dict[str, str] = {}
        for name, item in value.items():
            item_path = f"{path}.{name}"
            if not ENV_NAME.match(name):
                self.error(
                    item_path,
                    "is not a valid environment variable name; use letters, digits and _ "
                    "(not starting with a digit)",
                )
                continue
            if name.upper().startswith(RESERVED_ENV_PREFIX):
                self.error(item_path, f"names starting with {RESERVED_ENV_PREFIX} are reserved")
                continue
            if encrypted:
                token = self.fernet_token(item, item_path)
                if token is not None:
                    result[name] = token
            elif isinstance(item, str):
                result[name] = item
            elif isinstance(item, bool | int | float):
                # Environment values are text; say what the pipeline will actually receive.
                text = ("true" if item else "false") if isinstance(item, bool) else str(item)
                self.warn(item_path, f"{show(item)} is not a string; the run gets '{text}'")
                result[name] = text
            else:
                self.error(item_path, f"{show(item)} must be a string")
        return result

    def fernet_token(self, value: Any, path: str) -> str | None:
        hint = 'encrypt the value with this instance\'s ENCRYPTION_KEY ("encrypt a value")'
        if not isinstance(value, str):
            self.error(path, f"must be a Fernet token string; {hint}")
            return None
        try:
            raw = base64.urlsafe_b64decode(value.strip().encode())
        except (binascii.Error, ValueError):
            raw = b""
        # version byte 0x80, timestamp, IV, at least one AES block, HMAC
        if len(raw) < 1 + 8 + 16 + 16 + 32 or raw[0] != 0x80:
            self.error(path, f"is not a Fernet token; {hint}")
            return None
        return value.strip()


# --- Parsing -------------------------------------------------------------------------------


def parse_config(data: Any, *, file: str = "pipeline.json", tz_name: str = "UTC") -> ParseResult:
    """Validate a decoded pipeline.json; never raises for bad content."""
    reader = _Reader(file, tz_name)
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
        if data["type"] in ("script", "notebook"):
            values["type"] = data["type"]
        else:
            reader.error("type", f'{show(data["type"])} must be "script" or "notebook"')
    if "python_version" in data:
        values["python_version"] = _python_version(reader, data["python_version"])
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

    config = PipelineConfig(**{k: v for k, v in values.items() if v is not None})
    return ParseResult(config, reader.errors, reader.warnings)


def _tags(reader: _Reader, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        reader.error("tags", f'{show(value)} must be a list of strings, e.g. ["nightly", "etl"]')
        return ()
    tags: list[str] = []
    for index, item in enumerate(value):
        tag = reader.string(item, f"tags[{index}]", allow_empty=False)
        if tag is not None and tag.strip() not in tags:
            tags.append(tag.strip())
    return tuple(tags)


def _python_version(reader: _Reader, value: Any) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        reader.error(
            "python_version",
            f'{show(value)} must be a string such as "3.12" (in quotes: as a number 3.10 is 3.1)',
        )
        return None
    text = reader.string(value, "python_version", allow_empty=False)
    if text is not None and not PYTHON_VERSION.match(text.strip()):
        reader.error("python_version", f'{show(value)} is not a Python version; use e.g. "3.12"')
        return None
    return text.strip() if text else None


def _run_settings(reader: _Reader, data: dict[str, Any], prefix: str) -> RunSettings:
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


def _retry_strategy(reader: _Reader, value: Any, prefix: str) -> RetryStrategy | None:
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


def _delays(reader: _Reader, value: Any, path: str) -> tuple[float, ...] | None:
    if not isinstance(value, list) or not value:
        reader.error(path, f"{show(value)} must be a non-empty list of seconds, e.g. [10, 60, 300]")
        return None
    delays = [reader.number(item, f"{path}[{i}]", minimum=0) for i, item in enumerate(value)]
    return None if None in delays else tuple(d for d in delays if d is not None)


def _schedule_fields(
    reader: _Reader, data: dict[str, Any], prefix: str, tz_name: str
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


def _schedules(reader: _Reader, data: dict[str, Any], tz_name: str) -> tuple[ScheduleSpec, ...]:
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


def _triggers(reader: _Reader, value: Any) -> tuple[DownstreamTrigger, ...]:
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
        if not PIPELINE_NAME.match(target):
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


def _cells(reader: _Reader, value: Any) -> tuple[CellPolicy, ...]:
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
