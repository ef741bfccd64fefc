"""Which queued runs may start now: the slots the instance has free, and each pipeline's own
limit (pipeline.json `max_instances`). PipelineRun.claim_runs walks the queue oldest first
and asks these rules, under the dispatch lock; they need no database.

Daemons have slots of their own (MAX_DAEMON_RUNS): they never take the MAX_CONCURRENT_RUNS
slots ordinary runs need, and ordinary runs never take theirs. A run that may not start
now (its pipeline at its limit, its kind of slot full) is passed over, and younger runs of
other pipelines still start: one busy pipeline never holds up the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Slots:
    ordinary: int  # free MAX_CONCURRENT_RUNS slots
    daemons: int  # free MAX_DAEMON_RUNS slots
    in_flight: dict[int, int] = field(default_factory=dict)  # pipeline id → runs claimed or running

    @classmethod
    def free(
        cls, in_flight: dict[int, int], daemons_in_flight: int, max_runs: int, max_daemons: int
    ) -> Slots:
        """From what is in flight now (daemons included in `in_flight`)."""
        ordinary = sum(in_flight.values()) - daemons_in_flight
        return cls(max_runs - ordinary, max_daemons - daemons_in_flight, dict(in_flight))

    @property
    def full(self) -> bool:
        return self.ordinary <= 0 and self.daemons <= 0

    def admits(self, pipeline_id: int, is_daemon: bool, max_instances: int | None) -> bool:
        """Whether a run of this pipeline (a daemon's or not) may be claimed now."""
        if (self.daemons if is_daemon else self.ordinary) <= 0:
            return False
        return max_instances is None or self.in_flight.get(pipeline_id, 0) < max_instances

    def take(self, pipeline_id: int, is_daemon: bool) -> None:
        """A run of this pipeline was claimed."""
        self.in_flight[pipeline_id] = self.in_flight.get(pipeline_id, 0) + 1
        if is_daemon:
            self.daemons -= 1
        else:
            self.ordinary -= 1
