"""The claim order's rules (runs_app.slots), without a database: the queue is walked oldest
first (PipelineRun.claim_runs); a run starts when its kind of slot is free and its pipeline
is below its max_instances; a run passed over holds up no one behind it."""

from __future__ import annotations

from runs_app.slots import Slots

# (run, pipeline id, daemon?, the pipeline's max_instances), oldest first.
Queued = tuple[str, int, bool, int | None]


def walk(queue: list[Queued], slots: Slots) -> list[str]:
    """The runs claimed, in the order claim_runs claims them (every claim succeeding)."""
    claimed = []
    for run, pipeline, is_daemon, max_instances in queue:
        if slots.full:
            break
        if slots.admits(pipeline, is_daemon, max_instances):
            slots.take(pipeline, is_daemon)
            claimed.append(run)
    return claimed


def test_the_oldest_runs_start_first_up_to_the_free_slots():
    queue = [("a1", 1, False, None), ("b1", 2, False, None), ("c1", 3, False, None)]
    assert walk(queue, Slots(ordinary=2, daemons=0)) == ["a1", "b1"]


def test_a_pipeline_at_its_max_instances_is_passed_over_and_younger_runs_start():
    queue = [("a1", 1, False, 1), ("a2", 1, False, 1), ("b1", 2, False, None)]
    assert walk(queue, Slots(ordinary=3, daemons=0)) == ["a1", "b1"]


def test_runs_in_flight_count_against_max_instances():
    slots = Slots.free(in_flight={1: 2}, daemons_in_flight=0, max_runs=10, max_daemons=0)
    queue = [("a3", 1, False, 2), ("a4", 1, False, 3)]
    assert walk(queue, slots) == ["a4"]


def test_daemons_have_slots_of_their_own():
    # Two ordinary runs and one daemon in flight; 3 ordinary and 2 daemon slots in all.
    slots = Slots.free(in_flight={1: 2, 9: 1}, daemons_in_flight=1, max_runs=3, max_daemons=2)
    assert (slots.ordinary, slots.daemons) == (1, 1)
    queue = [
        ("a1", 1, False, None),
        ("b1", 2, False, None),  # no ordinary slot left
        ("d1", 8, True, None),  # a daemon still starts
        ("d2", 7, True, None),  # daemon slots full too
    ]
    assert walk(queue, slots) == ["a1", "d1"]
    assert slots.full


def test_ordinary_runs_never_take_a_daemon_slot():
    slots = Slots(ordinary=0, daemons=5)
    assert not slots.full
    assert walk([("a1", 1, False, None), ("d1", 2, True, None)], slots) == ["d1"]


def test_no_free_slot_is_full():
    assert Slots.free(in_flight={1: 4}, daemons_in_flight=0, max_runs=4, max_daemons=0).full
    assert Slots(ordinary=-1, daemons=0).full  # a lowered MAX_CONCURRENT_RUNS
