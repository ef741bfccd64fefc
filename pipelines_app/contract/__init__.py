"""The pipeline.json contract (docs/pipeline-format.md), parsed once into typed values.

- `types`: the frozen dataclasses (`PipelineConfig`, `RunSettings`, `ScheduleSpec`, ...)
  stored on the Pipeline row and read back through `pipeline.spec`;
- `reader`: reading one field at a time, collecting `Problem`s instead of raising;
- `parse`: `parse_config()`, which validates a decoded pipeline.json.

Nothing later parses pipeline.json again.
"""

from __future__ import annotations

from pipelines_app.contract.parse import (
    MIN_MEMORY_LIMIT,
    PIPELINE_NAME,
    is_pipeline_name,
    parse_config,
)
from pipelines_app.contract.reader import ParseResult, Problem, show
from pipelines_app.contract.types import (
    NOTIFY_EVENTS,
    CellPolicy,
    DownstreamTrigger,
    NotifyPolicy,
    PipelineConfig,
    RetryStrategy,
    RunSettings,
    ScheduleSpec,
)

__all__ = [
    "MIN_MEMORY_LIMIT",
    "NOTIFY_EVENTS",
    "PIPELINE_NAME",
    "CellPolicy",
    "DownstreamTrigger",
    "NotifyPolicy",
    "ParseResult",
    "PipelineConfig",
    "Problem",
    "RetryStrategy",
    "RunSettings",
    "ScheduleSpec",
    "is_pipeline_name",
    "parse_config",
    "show",
]
