"""The one way in for people and callers: starting a run and cancelling one.

Every entry point — the run button and its form, the JSON API, the admin's actions,
`runpipeline` and `cancelrun`, webhooks, "Run again" — calls `PipelineRun.start` or
`run.cancel` and only renders the outcome: the rules (a pipeline that cannot run, a disabled
one without confirmation, run values no pipeline or not this one takes, the limits of
`enqueue`) are applied here once, and the audit entry is written for each start and cancel
(`run_started`/`run_cancelled`: the audit log, a part of the site above this app, listens).
Schedules, chains, retries and daemons queue their runs directly (`enqueue`): no person or
caller is behind them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runs_app.run_values import conflicting_parameters, refused_parameters
from runs_app.signals import run_cancelled, run_started

if TYPE_CHECKING:
    from pipelines_app.models import Pipeline
    from runs_app.models.run import PipelineRun


class RunRefused(Exception):
    """A run cannot be started; the message says why, for people.

    `kind` tells entry points how to answer: "not_runnable" (its folder is gone, its
    pipeline.json is wrong), "disabled" (it may run once confirmed), "refused" (run values
    no pipeline takes), "conflict" (values this pipeline does not take), "limit"."""

    def __init__(self, message: str, *, kind: str = "not_runnable", problems=()) -> None:
        super().__init__(message)
        self.kind = kind
        self.problems = list(problems)

    def describe(self) -> str:
        """The reason in one line, with each problem."""
        return "; ".join(self.problems) if self.problems else str(self)


class EntryPoints:
    """PipelineRun's entry points (a mixin of the model)."""

    @classmethod
    def start(
        cls,
        pipeline: Pipeline,
        *,
        by=None,
        via: str = "",
        trigger: str = "",
        parameters: dict[str, str] | None = None,
        confirm_disabled: bool = False,
        schedule=None,
        rerun_of: PipelineRun | None = None,
    ) -> PipelineRun:
        """Start a run for `by` (a person, or None for a webhook's caller) coming `via` an
        entry point ("" lets the audit log tell: web, admin, api or command)."""
        parameters = dict(parameters or {})
        if not pipeline.is_runnable:
            cls.enqueue(pipeline, trigger=trigger or cls.Trigger.MANUAL)  # raises, saying why
        if not pipeline.enabled and not confirm_disabled:
            raise RunRefused(
                f"{pipeline.name} is disabled in its pipeline.json; confirm to run it anyway",
                kind="disabled",
            )
        if problems := refused_parameters(parameters):
            raise RunRefused("The run values were refused.", kind="refused", problems=problems)
        if problems := conflicting_parameters(pipeline, parameters):
            raise RunRefused(
                "The run values conflict with the pipeline.", kind="conflict", problems=problems
            )
        run = cls.enqueue(
            pipeline,
            trigger=trigger or cls.Trigger.MANUAL,
            user=by,
            parameters=parameters,
            schedule=schedule,
        )
        run_started.send(
            sender=cls, run=run, by=by, via=via, parameters=sorted(parameters), rerun_of=rerun_of
        )
        return run

    def cancel(self, *, by=None, via: str = "") -> str:
        """Cancel (`request_cancel`) and tell the audit log unless it had already ended:
        "cancelled", "stopping" or "finished"."""
        outcome = self.request_cancel()
        if outcome != "finished":
            run_cancelled.send(sender=type(self), run=self, by=by, via=via, outcome=outcome)
        return outcome

    def rerun(self, by=None, via: str = "") -> PipelineRun:
        """A new manual run of the same pipeline with the same parameters."""
        return self.start(
            self.pipeline,
            by=by,
            via=via,
            parameters=self.parameters,
            schedule=self.schedule,
            rerun_of=self,
        )
