"""The marker protocol (runs_app/in_run/fastflow_markers.py) and the worker's reader of it
(MarkerReader): one spelling for both ends; a marker acts on the run's record only when it
is one, on stderr, with text that makes sense — anything else is the run's output."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from runs_app.executors.base import ROUTE_MAX_BYTES, MarkerReader, Outcome, Watch
from runs_app.in_run import HERE, TOOLS, fastflow_markers
from runs_app.logs import STDERR, STDOUT, SYSTEM, LogWriter, read_lines

MARK = fastflow_markers.MARK
MOMENT = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


@pytest.fixture
def reading(tmp_path):
    """A reader over a log of its own; the log's lines as (stream, text)."""
    path = tmp_path / "run.log"
    log = LogWriter(path, mask=lambda text: text.replace("hunter2", "********"))
    steps: list[dict] = []
    pieces: list[dict] = []
    outcome = Outcome()
    reader = MarkerReader(log, outcome, Watch(on_step=steps.append, on_artifact=pieces.append))

    def lines() -> list[tuple[str, str]]:
        log.file.flush()
        return [(stream, text) for _, stream, text in read_lines(path)]

    yield reader, outcome, lines, steps, pieces
    log.close()


def say(reader: MarkerReader, word: str, text: str = "", stream: str = STDERR) -> None:
    line = fastflow_markers.encode(word, text).decode().rstrip("\n")
    reader.line(stream, line, None, MOMENT)


# --- the protocol ----------------------------------------------------------------------------


@pytest.mark.parametrize("word", sorted(fastflow_markers.WORDS))
def test_every_word_reads_back_as_written(word):
    line = fastflow_markers.encode(word, "some text").decode()
    assert line.startswith(MARK) and line.endswith("\n")
    assert fastflow_markers.parse(line) == (word, "some text")


def test_a_word_without_text_reads_back_empty():
    assert fastflow_markers.encode("started") == (MARK + "started\n").encode()
    assert fastflow_markers.parse(MARK + "started") == ("started", "")


@pytest.mark.parametrize(
    "line",
    [
        "started",  # no MARK
        MARK + "hello world",  # not a word of the protocol
        MARK,  # nothing after it
        "\x1efastflow started",  # a near miss
        " " + MARK + "started",  # MARK not first
    ],
)
def test_what_is_not_a_marker_is_none(line):
    assert fastflow_markers.parse(line) is None


def test_repeatable_markers_are_words_of_the_protocol():
    assert fastflow_markers.REPEATABLE <= fastflow_markers.WORDS
    # Notes and cells would appear twice in the log if read twice.
    assert not {"note", "cell", "resolved"} & fastflow_markers.REPEATABLE


def test_the_in_run_writers_use_only_words_of_the_protocol():
    """Every tell(...) in the tools inside a run names a word the reader knows."""
    said = set()
    for tool in TOOLS:
        if tool.suffix == ".py" and tool.name != "fastflow_markers.py":
            said |= set(re.findall(r'\btell\(\s*"([a-z]+)"', tool.read_text()))
    assert said and said <= fastflow_markers.WORDS
    assert {"started", "handover", "route", "cell", "step", "artifact", "resolved"} <= said


def test_prepare_sh_spells_the_uv_marker_as_the_protocol_does():
    """prepare.sh is sh and cannot import the protocol: its markers are held to it here."""
    script = (HERE / "prepare.sh").read_text()
    spelled = re.findall(r"printf '(\\036fastflow:[a-z]+) ", script)
    assert [word.replace("\\036", "\x1e") for word in spelled] == [MARK + "uv", MARK + "note"]


def test_every_tool_the_runs_need_is_copied():
    """(A Swarm run's first process is delivered on its own, before the tools.)"""
    names = {tool.name for tool in TOOLS}
    assert names == {path.name for path in HERE.iterdir() if path.suffix in (".py", ".sh")} - {
        "__init__.py",
        "swarm_boot.py",
    }


# --- the reader ----------------------------------------------------------------------------


def test_setup_markers_fill_the_outcome_and_never_the_log(reading):
    reader, outcome, lines, _, _ = reading
    say(reader, "handover")
    say(reader, "uv", "uv 0.9.5 (abc 2025-10-01)")
    say(reader, "started")
    say(reader, "oom")
    assert outcome.started_at == MOMENT
    assert outcome.user_code_started_at == MOMENT
    assert outcome.uv_version == "uv 0.9.5"
    assert outcome.oom_killed
    assert lines() == []


def test_a_route_is_a_json_string_cut_to_its_limit(reading):
    reader, outcome, lines, _, _ = reading
    say(reader, "route", json.dumps("x" * (ROUTE_MAX_BYTES + 50)))
    assert outcome.route == "x" * ROUTE_MAX_BYTES
    say(reader, "route", json.dumps({"not": "a string"}))
    say(reader, "route", "not json")
    assert outcome.route == "x" * ROUTE_MAX_BYTES
    # Markers whose text makes no sense are the run's output, as printed.
    assert [text for _, text in lines()] == [
        MARK + 'route {"not": "a string"}',
        MARK + "route not json",
    ]


def test_a_note_is_a_line_of_fast_flow_in_the_log(reading):
    reader, _, lines, _, _ = reading
    say(reader, "note", "skip cell 2: %pip install x (IPython syntax is not run)")
    assert lines() == [(SYSTEM, "skip cell 2: %pip install x (IPython syntax is not run)")]


def test_a_marker_on_stdout_is_output(reading):
    reader, outcome, lines, _, _ = reading
    say(reader, "started", stream=STDOUT)
    assert outcome.user_code_started_at is None
    assert lines() == [(STDOUT, MARK + "started")]


def test_stderr_keeps_its_last_lines_masked_for_the_error_message(reading):
    reader, outcome, lines, _, _ = reading
    for number in range(25):
        reader.line(STDERR, f"line {number} hunter2", None, MOMENT)
    assert outcome.last_stderr == [f"line {n} ********" for n in range(5, 25)]
    assert lines()[-1] == (STDERR, "line 24 ********")


def test_resolved_pins_are_a_list_of_strings(reading):
    reader, outcome, _, _, _ = reading
    say(reader, "resolved", json.dumps(["idna==3.10", 7]))
    assert outcome.resolved == ["idna==3.10", "7"]


def test_cells_become_log_lines_and_a_summary(reading):
    reader, outcome, lines, _, _ = reading
    cell = {"cell": 2, "of": 3, "attempts": 2}
    say(reader, "cell", json.dumps({**cell, "attempt": 1, "event": "start"}))
    say(reader, "cell", json.dumps({**cell, "attempt": 1, "event": "retry", "seconds": 0.5}))
    say(reader, "cell", json.dumps({**cell, "attempt": 2, "event": "start"}))
    say(reader, "cell", json.dumps({**cell, "attempt": 2, "event": "ok", "seconds": 0.25}))
    say(reader, "cell", json.dumps({**cell, "attempt": 2, "event": "exploded"}))
    assert outcome.cells == {
        2: {"cell": 2, "status": "succeeded", "attempts": 2, "seconds": 0.75},
    }
    assert [text for _, text in lines()] == [
        "cell 2/3 starts (attempt 1 of 2)",
        "cell 2/3 failed (attempt 1 of 2); again in 0 s, in the same namespace",
        "cell 2/3 starts (attempt 2 of 2)",
        "cell 2/3 succeeded (attempt 2 of 2) in 0.25 s",
        MARK + 'cell {"cell": 2, "of": 3, "attempts": 2, "attempt": 2, "event": "exploded"}',
    ]


def test_steps_and_artifacts_go_to_the_watch(reading):
    reader, _, lines, steps, pieces = reading
    say(reader, "step", json.dumps({"id": "model.shop.orders", "status": "running"}))
    say(reader, "artifact", json.dumps({"name": "dag.json", "size": 2, "at": 0, "data": "e30="}))
    say(reader, "step", json.dumps(["not", "a", "report"]))
    assert steps == [{"id": "model.shop.orders", "status": "running"}]
    assert pieces == [{"name": "dag.json", "size": 2, "at": 0, "data": "e30="}]
    assert lines() == [(STDERR, MARK + 'step ["not", "a", "report"]')]
