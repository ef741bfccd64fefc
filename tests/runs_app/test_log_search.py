"""Search across runs: the runs whose stored log contains a text (runs_app.log_search), on
the database's own text index (FTS5 trigram on SQLite, pg_trgm on PostgreSQL)."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.apps import apps
from django.utils import timezone

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app import log_search
from runs_app.models import LogChunk, LogText, PipelineRun
from runs_app.models.chunk import pack
from runs_app.stored_logs import store_lines
from runs_app.worker.retention import Report, _remove_logs

pytestmark = pytest.mark.django_db


def _records(*texts: str) -> list[bytes]:
    return [f"2026-12-06T10:00:00.000Z stdout {text}\n".encode() for text in texts]


@pytest.fixture
def two_pipelines(make_pipeline):
    make_pipeline("loader")
    make_pipeline("reporter")
    discover()
    return Pipeline.objects.get(name="loader"), Pipeline.objects.get(name="reporter")


def _run_with_log(pipeline: Pipeline, *texts: str, **fields) -> PipelineRun:
    run = PipelineRun.objects.create(pipeline=pipeline, status="succeeded", **fields)
    store_lines(run.pk, 1, _records(*texts))
    return run


def _found(page: log_search.Page) -> list[PipelineRun]:
    return [match.run for match in page.matches]


def test_finds_runs_by_any_piece_of_a_line_ignoring_case(two_pipelines):
    loader, reporter = two_pipelines
    first = _run_with_log(loader, "starting", "ConnectionRefusedError: [Errno 111]", "bye")
    second = _run_with_log(reporter, "all fine", "rows: 12")
    third = _run_with_log(loader, "connectionrefusederror again")
    assert _found(log_search.search("ConnectionRefused")) == [third, first]
    assert _found(log_search.search("nrefusede")) == [third, first]  # inside a word
    assert _found(log_search.search("rows: 12")) == [second]
    assert _found(log_search.search("nowhere to be seen")) == []
    match = log_search.search("errno 111").matches[0]
    assert (match.seq, match.found) == (2, "Errno 111")
    assert match.before == "ConnectionRefusedError: [" and match.after == "]"


def test_colours_and_links_are_searched_as_people_see_them(two_pipelines):
    run = _run_with_log(
        two_pipelines[0],
        "\x1b[32mtick\x1b[0m 7",
        "see \x1b]8;;https://example.com\x07the docs\x1b]8;;\x07 \x1b[1;31mnow\x1b[m",
    )
    assert _found(log_search.search("tick 7")) == [run]
    assert _found(log_search.search("see the docs now")) == [run]
    assert _found(log_search.search("[32m")) == []


def test_a_line_with_nul_bytes_is_stored_and_found(two_pipelines):
    run = _run_with_log(two_pipelines[0], "before\x00after", "\x00\x00")
    assert _found(log_search.search("beforeafter")) == [run]
    assert LogChunk.objects.filter(run=run).exists()  # the log itself keeps every byte


def test_timestamps_and_streams_are_not_searched(two_pipelines):
    _run_with_log(two_pipelines[0], "plain text")
    assert _found(log_search.search("stdout")) == []
    assert _found(log_search.search("2026-12-06")) == []


def test_texts_that_are_hard_for_the_index(two_pipelines):
    run = _run_with_log(two_pipelines[0], 'say "hi" 100% of_the time', "a\\b")
    assert _found(log_search.search('"hi"')) == [run]
    assert _found(log_search.search("100% of_")) == [run]
    assert _found(log_search.search("0%x")) == []  # % is a character, not a wildcard
    assert _found(log_search.search("f_t")) == [run]
    assert _found(log_search.search("fxt")) == []  # _ is a character, not a wildcard
    assert _found(log_search.search("a\\b")) == [run]
    with pytest.raises(log_search.SearchError, match="at least 3"):
        log_search.search(" ab ")


def test_by_pipeline_and_time(two_pipelines):
    loader, reporter = two_pipelines
    old = _run_with_log(loader, "disk full", queued_at=timezone.now() - timedelta(days=10))
    recent = _run_with_log(loader, "disk full")
    other = _run_with_log(reporter, "disk full")
    assert _found(log_search.search("disk full")) == [other, recent, old]
    assert _found(log_search.search("disk full", pipeline_id=loader.pk)) == [recent, old]
    since = timezone.now() - timedelta(days=7)
    assert _found(log_search.search("disk full", since=since)) == [other, recent]
    assert _found(log_search.search("disk full", pipeline_id=loader.pk, since=since)) == [recent]


def test_a_run_with_many_matching_chunks_is_one_result(two_pipelines, monkeypatch):
    monkeypatch.setattr("runs_app.stored_logs.CHUNK_BYTES", 200)  # a chunk per few lines
    run = _run_with_log(two_pipelines[0], *[f"retrying {n}" for n in range(50)])
    assert LogText.objects.filter(run=run).count() > 10
    page = log_search.search("retrying")
    assert _found(page) == [run] and page.older is None
    assert page.matches[0].found == "retrying"


@pytest.mark.parametrize("window", [100, 20_000], ids=["common", "rare"])
def test_pages_go_on_where_the_last_one_ended(two_pipelines, monkeypatch, window):
    # PostgreSQL reads a text found in 1% of the newest chunks walking the newest ids, a
    # rarer one through the trigram index: both orders page alike.
    monkeypatch.setattr(log_search, "ID_WINDOW", window)
    monkeypatch.setattr(log_search, "PAGE", 3)
    monkeypatch.setattr(log_search, "ROWS_PER_READ", 2)  # several reads fill a page
    runs = [_run_with_log(two_pipelines[n % 2], f"tick {n}") for n in range(8)]
    newest_first = runs[::-1]
    seen, before = [], None
    while True:
        page = log_search.search("tick", before=before)
        seen += _found(page)
        if page.older is None:
            break
        before = page.older
    assert seen == newest_first


def test_a_page_stops_early_when_other_pipelines_match_first(two_pipelines, monkeypatch):
    loader, reporter = two_pipelines
    monkeypatch.setattr(log_search, "ROWS_PER_READ", 2)
    monkeypatch.setattr(log_search, "MOST_READS", 2)
    wanted = _run_with_log(loader, "timeout")
    for _ in range(6):
        _run_with_log(reporter, "timeout")
    # SQLite's index reads the other pipeline's matches too (PostgreSQL's query leaves
    # them out): an empty page then says it stopped early, and the next goes on.
    pages = [log_search.search("timeout", pipeline_id=loader.pk)]
    while pages[-1].older and not pages[-1].matches:
        pages.append(log_search.search("timeout", pipeline_id=loader.pk, before=pages[-1].older))
    assert _found(pages[-1]) == [wanted]
    assert all(page.cut_short and not page.matches for page in pages[:-1])


def test_removed_logs_and_runs_leave_the_index(two_pipelines):
    loader = two_pipelines[0]
    kept = _run_with_log(loader, "needle")
    pruned = _run_with_log(loader, "needle")
    deleted = _run_with_log(loader, "needle")
    deleted.delete()
    assert _found(log_search.search("needle")) == [pruned, kept]
    _remove_logs([pruned], Report(), timezone.now())
    assert _found(log_search.search("needle")) == [kept]
    assert not LogText.objects.filter(run=pruned).exists()


def test_logs_stored_before_the_index_are_indexed_by_the_migration(two_pipelines):
    run = PipelineRun.objects.create(pipeline=two_pipelines[0], status="succeeded")
    records = b"".join(_records("old line", "older needle here"))
    LogChunk.objects.create(run=run, first_seq=1, last_seq=2, size=len(records), data=pack(records))
    assert _found(log_search.search("needle")) == []
    migration = importlib.import_module("runs_app.migrations.0023_log_text")
    migration.index_stored_logs(apps, None)
    assert _found(log_search.search("needle")) == [run]
    assert log_search.search("needle").matches[0].seq == 2


def test_search_page(viewer_client, two_pipelines):
    loader = two_pipelines[0]
    run = _run_with_log(loader, "line one", "Traceback: <b>boom</b>")
    html = viewer_client.get("/runs/search/", {"q": "<b>boom"}).content.decode()
    assert f'href="/runs/{run.public_id}/#L2"' in html
    assert "<mark>&lt;b&gt;boom</mark>&lt;/b&gt;" in html
    html = viewer_client.get("/runs/search/", {"q": "zzz-nothing"}).content.decode()
    assert "No run's log contains" in html
    html = viewer_client.get("/runs/search/", {"q": "ab"}).content.decode()
    assert 'id="search-error"' in html and "at least 3" in html
    response = viewer_client.get("/runs/search/", {"q": "boom", "pipeline": "nope"})
    assert response.status_code == 200 and "no pipeline named nope" in response.content.decode()
    response = viewer_client.get("/runs/search/", {"q": "boom", "before": "-4"})
    assert response.status_code == 200 and 'id="search-error"' in response.content.decode()


def test_search_page_needs_a_login(client):
    response = client.get("/runs/search/", {"q": "secret"})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
