"""Chaining: what a run's end starts (pipeline.json `downstream_triggers`).

When a run reaches its final outcome (no retry follows), each trigger whose condition holds
starts one run of its pipeline, or is recorded as skipped with the reason: one ChainLink
row per trigger that fired, made in the transaction that ends the upstream run and unique
per (run, trigger), so a chain fires exactly once whatever crashes or races. A timeout
counts as a failure, a cancel fires nothing, `on_route` needs a success that wrote exactly
that route, and a chain longer than CHAIN_DEPTH_LIMIT runs stops (a loop, most likely).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings

from pipelines_app.contract.types import DownstreamTrigger
from pipelines_app.models import Pipeline
from runs_app.models.chain import ChainLink
from runs_app.models.entry import RunRefused
from runs_app.models.status import RunStatus

if TYPE_CHECKING:
    from runs_app.models.run import PipelineRun


def chain_condition(trigger: DownstreamTrigger, status: str, route: str) -> str | None:
    """The condition under which `trigger` fires after a run ended with `status` (and
    `route`), in words; None when it does not fire."""
    if status == RunStatus.SUCCEEDED and trigger.on_success:
        if trigger.on_route is None:
            return "success"
        return f"route '{trigger.on_route}'" if route == trigger.on_route else None
    if status in (RunStatus.FAILED, RunStatus.TIMED_OUT) and trigger.on_failure:
        return "failure" if status == RunStatus.FAILED else "failure (timed out)"
    return None


def chain_refusal(target: Pipeline | None, depth: int) -> str:
    """Why a trigger may not start `target` as the `depth`-th run of a chain ("" when it
    may)."""
    if target is None or target.state == Pipeline.State.MISSING:
        return "no such pipeline (its folder is gone, or was never there)"
    if not target.is_valid:
        return "its pipeline.json has errors"
    if not target.enabled:
        return "it is disabled"
    if depth > settings.CHAIN_DEPTH_LIMIT:
        return (
            f"the chain is {depth} runs long, past CHAIN_DEPTH_LIMIT "
            f"({settings.CHAIN_DEPTH_LIMIT}): a loop?"
        )
    return ""


def fire_downstream_triggers(run: PipelineRun) -> None:
    """Each downstream trigger of `run`'s pipeline whose condition holds starts one run, or
    is recorded as skipped with the reason. Called inside the transaction that ends `run`."""
    for index, trigger in enumerate(run.pipeline.spec.downstream_triggers):
        condition = chain_condition(trigger, run.status, run.route)
        if condition is None:
            continue
        link = ChainLink(
            upstream=run,
            trigger_index=index,
            target_name=trigger.pipeline,
            condition=condition,
            run_config_id=trigger.run_config_id or "",
        )
        target = Pipeline.objects.filter(name=trigger.pipeline).first()
        link.skipped_reason = chain_refusal(target, run.chain_depth + 1)
        if not link.skipped_reason:
            schedule = (
                target.schedules.filter(config_id=trigger.run_config_id).first()
                if trigger.run_config_id
                else None
            )
            try:
                link.downstream = run.enqueue(
                    target,
                    trigger=run.Trigger.CHAIN,
                    schedule=schedule,
                    chain_depth=run.chain_depth + 1,
                )
            except RunRefused as refused:
                link.skipped_reason = str(refused)[:300]
        link.save()
