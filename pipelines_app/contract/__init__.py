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
from pipelines_app.contract.selection import (
    RUN_SELECTION_NAMES,
    is_true,
    run_selection_problem,
    selection_problem,
    selection_tokens,
)
from pipelines_app.contract.types import (
    DEFAULT_MODELS_COMMANDS,
    MODELS_COMMANDS,
    MODELS_ENGINES,
    MODELS_PROJECT_FILES,
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

__all__ = [
    "DEFAULT_MODELS_COMMANDS",
    "MIN_MEMORY_LIMIT",
    "MODELS_COMMANDS",
    "MODELS_ENGINES",
    "MODELS_PROJECT_FILES",
    "NOTIFY_EVENTS",
    "PIPELINE_NAME",
    "RUN_SELECTION_NAMES",
    "CellPolicy",
    "DownstreamTrigger",
    "ModelsSpec",
    "NotifyPolicy",
    "ParseResult",
    "PipelineConfig",
    "Problem",
    "RetryStrategy",
    "RunSettings",
    "ScheduleSpec",
    "is_pipeline_name",
    "is_true",
    "parse_config",
    "run_selection_problem",
    "selection_problem",
    "selection_tokens",
    "show",
]
