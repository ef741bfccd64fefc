"""The typed values of a pipeline.json, stored on the Pipeline row as JSON and read back.

`to_json()` output is already normalised (sizes in bytes, cron in 5-field form, datetimes
with their offset); `from_json()` trusts it and does not validate again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit


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


# What a pipeline's runs and upkeep can notify about (pipeline.json "notify", and rules).
NOTIFY_EVENTS = ("failed", "timed_out", "recovered", "crash_loop", "warmup_failed", "cve_found")


@dataclass(frozen=True)
class NotifyPolicy:
    """pipeline.json "notify": channels (by name) told of this pipeline's events."""

    channels: tuple[str, ...] = ()
    events: tuple[str, ...] = NOTIFY_EVENTS


# Models pipelines (pipeline.json "type": "models"): the engines, and what each may run.
MODELS_ENGINES = ("dbt", "fft")
MODELS_COMMANDS = {
    "dbt": ("deps", "seed", "snapshot", "run", "test", "build"),
    "fft": ("seed", "run", "test"),
}
DEFAULT_MODELS_COMMANDS = {"dbt": ("build",), "fft": ("seed", "run", "test")}
# The file that marks a project of each engine (and that a models run "enters").
MODELS_PROJECT_FILES = {"dbt": "dbt_project.yml", "fft": "project.yml"}


@dataclass(frozen=True)
class ModelsSpec:
    """pipeline.json "models": which engine runs the project, what it runs, and how."""

    engine: Literal["dbt", "fft"] | None = None  # None: discovery finds it from the folder
    commands: tuple[str, ...] = ()  # empty: the engine's DEFAULT_MODELS_COMMANDS
    select: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    full_refresh: bool = False
    target: str | None = None  # dbt's --target, FFT's --env
    docs: bool = True  # generate the project's docs after a successful run
    fingerprint_cache: bool = False  # FFT only: reuse results of unchanged SQL (off: safe)

    @property
    def effective_commands(self) -> tuple[str, ...]:
        return self.commands or DEFAULT_MODELS_COMMANDS.get(self.engine or "", ())

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


@dataclass(frozen=True)
class PackageIndex:
    """A private package index a warm-up signs in to: its password is a Fast-Flow secret."""

    url: str
    username: str = ""
    password_secret: str = ""  # the name of the secret holding the password or token

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""


@dataclass(frozen=True)
class EnvironmentSpec:
    """pipeline.json `environment`: what of a uv project to install, and the credentials of
    private package indexes (used by warm-ups only)."""

    extras: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    indexes: tuple[PackageIndex, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


@dataclass(frozen=True)
class PipelineConfig:
    description: str = ""
    tags: tuple[str, ...] = ()
    enabled: bool = True
    type: Literal["script", "notebook", "models"] = "script"
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
    notify: NotifyPolicy = field(default_factory=NotifyPolicy)
    models: ModelsSpec = field(default_factory=ModelsSpec)
    # A folder of its own that persists between runs (DATA_DIR/pipeline-data/<name>),
    # mounted at /data in its runs only (a DuckDB file, downloads kept for the next run).
    data_folder: bool = False
    environment: EnvironmentSpec = field(default_factory=EnvironmentSpec)
    # Labels a worker must have to take its runs (name, value), sorted: WORKER_LABELS.
    placement: tuple[tuple[str, str], ...] = ()
    # False: its runs get no network at all, only their own loopback.
    network: bool = True
    # The executor its runs take ("docker", "sandbox"); "": the instance's FASTFLOW_EXECUTOR.
    # Only those PIPELINE_EXECUTORS allows (runs_app.placement says why a run cannot start).
    executor: str = ""

    @property
    def entry_point(self) -> str:
        """The file a run starts from: main.py, main.ipynb, or the models project's file."""
        if self.type == "models":
            return MODELS_PROJECT_FILES.get(self.models.engine or "", "dbt_project.yml")
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
        data["placement"] = tuple(tuple(pair) for pair in data.get("placement", ()))
        notify = data.get("notify") or {}
        data["notify"] = NotifyPolicy(
            channels=tuple(notify.get("channels", ())),
            events=tuple(notify.get("events", NOTIFY_EVENTS)),
        )
        models = dict(data.get("models") or {})
        for key in ("commands", "select", "exclude"):
            models[key] = tuple(models.get(key, ()))
        data["models"] = ModelsSpec(**models)
        environment = dict(data.get("environment") or {})
        data["environment"] = EnvironmentSpec(
            extras=tuple(environment.get("extras", ())),
            groups=tuple(environment.get("groups", ())),
            indexes=tuple(PackageIndex(**index) for index in environment.get("indexes", ())),
        )
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
