"""Search across runs: the runs whose log holds a text, newest first, by pipeline and time.

Every stored chunk of log lines has its text in LogText (runs_app.stored_logs), indexed by
the database itself: a trigram index (pg_trgm) that an ILIKE '%…%' uses on PostgreSQL, an
FTS5 table with the trigram tokenizer on SQLite (migration 0023). Both find a substring of
three characters or more, case-insensitively, without reading every log. The newest matches
are read first and the read stops after a page of runs, so a text found in half a million
logs costs no more than a rare one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from django.db import connection

from runs_app.models import PipelineRun

SHORTEST = 3  # a trigram index cannot narrow a shorter text
PAGE = 25  # runs per page
# Matching chunks read per query: a run with a long log can match in many chunks, so a
# page of runs takes a few more rows than runs.
ROWS_PER_READ = 200
MOST_ROWS_PER_READ = 12_800  # reads grow fourfold while few rows are of the runs asked for
ID_WINDOW = 20_000  # PostgreSQL: how common a text is, judged in the newest chunks
# Reads per page at most: with a pipeline chosen, a common text can match thousands of
# other pipelines' chunks first; the page then ends early and offers to go on from there.
MOST_READS = 10
LONGEST_LINE_SHOWN = 300


class SearchError(ValueError):
    """The text cannot be searched (too short); the message says why."""


@dataclass
class Match:
    run: PipelineRun
    seq: int  # the first matching line's number: the run page's #L<seq>
    before: str  # the line cut around the match: before, the match, after
    found: str
    after: str


@dataclass
class Page:
    matches: list[Match]
    older: int | None  # the cursor of the next page (a LogText id), None at the end
    cut_short: bool = False  # the reads ran out before the page filled: more may be older


def search(
    text: str,
    pipeline_id: int | None = None,
    since: datetime | None = None,
    before: int | None = None,
) -> Page:
    """A page of runs whose log contains `text`, newest first; `before` is the cursor
    a previous page gave (its `older`)."""
    text = text.strip()
    if len(text) < SHORTEST:
        raise SearchError(
            f"Type at least {SHORTEST} characters: the index matches pieces of three."
        )
    lowest = None
    if since is not None:
        lowest = _first_row_since(since)
        if lowest is None:  # no run since then has a log
            return Page(matches=[], older=None)
    query = _Query(text, pipeline_id, since, lowest)
    # run id → the oldest matching chunk read of it: (LogText id, first_seq, text)
    runs: dict[int, tuple[int, int, str]] = {}
    # PostgreSQL leaves out other runs' rows itself: a page's runs (two rows each, to
    # begin with) are enough to ask for; SQLite's index reads them all.
    limit = ROWS_PER_READ if connection.vendor == "sqlite" else min(ROWS_PER_READ, 2 * PAGE + 2)
    cursor = before
    full = exhausted = False
    for _ in range(MOST_READS):
        rows = query.rows(before=cursor, limit=limit)
        for row_id, run_id, first_seq, chunk_text, wanted in rows:
            if wanted and run_id not in runs and len(runs) == PAGE:
                full = True  # a run beyond the page: the next page starts at this row
                cursor = row_id + 1
                break
            if wanted:
                runs[run_id] = (row_id, first_seq, chunk_text)
            cursor = row_id
        exhausted = len(rows) < limit
        if full or exhausted:
            break
        limit = min(limit * 4, MOST_ROWS_PER_READ)  # few were wanted: read further ahead
    more = full or not exhausted
    found = PipelineRun.objects.select_related("pipeline").in_bulk(list(runs))
    matches = [
        _match(found[run_id], first_seq, chunk_text, text)
        for run_id, (_, first_seq, chunk_text) in runs.items()
        if run_id in found
    ]
    return Page(matches=matches, older=cursor if more else None, cut_short=more and not full)


@dataclass
class _Query:
    text: str
    pipeline_id: int | None
    since: datetime | None
    lowest: int | None  # no row below this id belongs to a run queued since `since`

    def rows(self, before: int | None, limit: int) -> list[tuple[int, int, int, str, int]]:
        """(id, run id, first_seq, text, wanted) of the newest LogText rows holding the
        text below `before`; `wanted` is 0 for rows of runs not asked for (PostgreSQL
        leaves those out)."""
        runs, run_params = [], []
        if self.pipeline_id is not None:
            runs.append("r.pipeline_id = %s")
            run_params.append(self.pipeline_id)
        if self.since is not None:
            runs.append("r.queued_at >= %s")
            run_params.append(self.since)
        run_filter = "".join(f" AND {condition}" for condition in runs)
        if connection.vendor == "sqlite":
            return self._sqlite_rows(before, limit, run_filter, run_params)
        return self._postgresql_rows(before, limit, run_filter, run_params)

    # The SQL fragments put together below are this module's own; values go as parameters.

    def _id_bounds(self, column: str, before: int | None) -> tuple[list[str], list[int]]:
        """Conditions on a LogText id: below the cursor, and not below the window's first."""
        bounds, params = [], []
        if before is not None:
            bounds.append(f"{column} < %s")
            params.append(before)
        if self.lowest is not None:
            bounds.append(f"{column} >= %s")
            params.append(self.lowest)
        return bounds, params

    def _sqlite_rows(self, before, limit, run_filter, run_params) -> list:
        """The FTS5 table hands out its matches newest first, stopping at the limit; the
        runs' filter is a column, so the cursor moves past rows it leaves out."""
        bounds, params = self._id_bounds("rowid", before)
        inner = " AND ".join(["runs_app_logtext_search MATCH %s", *bounds])
        wanted = f"1 = 1{run_filter}"
        sql = (
            "SELECT t.id, t.run_id, t.first_seq, "  # noqa: S608
            f"CASE WHEN {wanted} THEN t.text END, CASE WHEN {wanted} THEN 1 ELSE 0 END FROM "
            f"(SELECT rowid AS id FROM runs_app_logtext_search WHERE {inner} "
            "ORDER BY rowid DESC LIMIT %s) m "
            "JOIN runs_app_logtext t ON t.id = m.id "
            "JOIN runs_app_pipelinerun r ON r.id = t.run_id ORDER BY t.id DESC"
        )
        phrase = '"' + self.text.replace('"', '""') + '"'
        return _fetch(sql, [*run_params, *run_params, phrase, *params, limit])

    def _postgresql_rows(self, before, limit, run_filter, run_params) -> list:
        """Newest first. How is chosen here, not left to the planner's guess of how many
        rows the text is in (a guess that read a rare text backwards through a million
        rows: 100 ms): a text in the newest ids often enough is read walking the newest
        ids; a rarer one is asked of the trigram index, all its matches sorted (few)."""
        bounds, params = self._id_bounds("t.id", before)
        # `t.id + 0`: not the primary key's order, so the trigram index is read instead.
        order = "t.id DESC" if self._common else "t.id + 0 DESC"
        sql = (
            "SELECT t.id, t.run_id, t.first_seq, t.text, 1 FROM runs_app_logtext t "  # noqa: S608
            "JOIN runs_app_pipelinerun r ON r.id = t.run_id "
            f"WHERE t.text ILIKE %s{''.join(f' AND {b}' for b in bounds)}{run_filter} "
            f"ORDER BY {order} LIMIT %s"
        )
        return _fetch(sql, [self._pattern(), *params, *run_params, limit])

    def _pattern(self) -> str:
        return f"%{_escape_like(self.text)}%"

    @cached_property
    def _common(self) -> bool:
        """Whether the text is in at least 1% of the newest ID_WINDOW chunks."""
        sql = (
            "SELECT COUNT(*) FROM (SELECT 1 FROM runs_app_logtext "
            "WHERE text ILIKE %s AND id > (SELECT MAX(id) FROM runs_app_logtext) - %s "
            "LIMIT %s) found"
        )
        enough = ID_WINDOW // 100
        return _fetch(sql, [self._pattern(), ID_WINDOW, enough])[0][0] >= enough


def _fetch(sql: str, params: list) -> list:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _first_row_since(since: datetime) -> int | None:
    """The lowest LogText id of the runs queued since `since` (runs' ids grow with their
    queue times), or None when there are none."""
    first_run = (
        PipelineRun.objects.filter(queued_at__gte=since)
        .order_by("queued_at", "id")
        .values_list("id", flat=True)
        .first()
    )
    if first_run is None:
        return None
    # `id + 0`: read from the run_id index, over the window's rows only (a plain MIN(id)
    # walks the table from its first row until it meets one: measured 80 vs 2 ms for the
    # last 7 days of a million runs on SQLite).
    with connection.cursor() as cursor:
        cursor.execute("SELECT MIN(id + 0) FROM runs_app_logtext WHERE run_id >= %s", [first_run])
        return cursor.fetchone()[0]


def _match(run: PipelineRun, first_seq: int, chunk_text: str, text: str) -> Match:
    """The first line of the chunk holding `text`, cut around it."""
    at = chunk_text.lower().find(text.lower())
    if at < 0:  # the index matched what Python's lower() does not (rare Unicode cases)
        at = 0
    line_start = chunk_text.rfind("\n", 0, at) + 1
    line_end = chunk_text.find("\n", at)
    line = chunk_text[line_start : line_end if line_end >= 0 else None]
    offset = at - line_start
    keep = (LONGEST_LINE_SHOWN - len(text)) // 2
    start = max(0, offset - keep)
    return Match(
        run=run,
        seq=first_seq + chunk_text.count("\n", 0, at),
        before=("…" if start else "") + line[start:offset],
        found=line[offset : offset + len(text)],
        after=line[offset + len(text) : offset + len(text) + keep]
        + ("…" if len(line) > offset + len(text) + keep else ""),
    )
