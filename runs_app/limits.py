"""A run's effective limits, in one place: what pipeline.json (and the schedule that started
it) asks for, within what the instance allows — RUN_MEMORY_LIMIT and RUN_CPU_LIMIT are
every run's limits when pipeline.json sets none, and the most it may ask for;
CONTAINER_TIMEOUT is the timeout when it sets none.

Stored on the run when it is made (PipelineRun.limits), so its page, the live charts, the
API and its container all show and apply the same values; the pipeline page shows what its
next run would get.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from django.conf import settings

from pipelines_app.contract import RunSettings
from pipelines_app.sizes import format_size


@dataclass(frozen=True)
class Limits:
    cpu_hard: float | None = None  # cores; None: no limit
    mem_hard_bytes: int | None = None
    cpu_soft: float | None = None  # watched only: a warning above it
    mem_soft_bytes: int | None = None
    timeout_seconds: int | None = None  # None: no limit
    # Where each hard limit and the timeout come from: "pipeline.json", or the setting.
    cpu_hard_from: str = ""
    mem_hard_from: str = ""
    timeout_from: str = ""
    notes: tuple[str, ...] = ()  # a limit asked for above the instance's, and what it got

    def to_json(self) -> dict:
        return {**asdict(self), "notes": list(self.notes)}

    @classmethod
    def from_json(cls, data: dict) -> Limits:
        return cls(**{**data, "notes": tuple(data.get("notes", ()))})


def effective_limits(asked: RunSettings) -> Limits:
    notes: list[str] = []
    memory, memory_from = _within_instance(
        "mem_hard_limit", asked.mem_hard_limit_bytes, "RUN_MEMORY_LIMIT", format_size, notes
    )
    cpu, cpu_from = _within_instance(
        "cpu_hard_limit", asked.cpu_hard_limit, "RUN_CPU_LIMIT", lambda n: f"{n:g} cores", notes
    )
    if asked.timeout_seconds is None:
        timeout, timeout_from = settings.CONTAINER_TIMEOUT or None, "CONTAINER_TIMEOUT"
    else:
        timeout, timeout_from = asked.timeout_seconds or None, "pipeline.json"  # 0: no limit
    return Limits(
        cpu_hard=cpu,
        mem_hard_bytes=memory,
        cpu_soft=asked.cpu_soft_limit,
        mem_soft_bytes=asked.mem_soft_limit_bytes,
        timeout_seconds=timeout,
        cpu_hard_from=cpu_from,
        mem_hard_from=memory_from,
        timeout_from=timeout_from,
        notes=tuple(notes),
    )


def _within_instance(field, asked, setting: str, show, notes: list[str]):
    """(the limit, where it comes from): the instance's when pipeline.json asks for none or
    for more (then a note); the instance's 0 is no cap."""
    cap = getattr(settings, setting) or None
    if asked is None:
        return cap, setting
    if cap is not None and asked > cap:
        notes.append(
            f"{field} {show(asked)} is above this instance's {setting}: the run gets {show(cap)}"
        )
        return cap, setting
    return asked, "pipeline.json"
