"""Run logs into the database and back out of it.

    DATABASE_URL=postgres://postgres@127.0.0.1/fastflow uv run python bench/log_ingest.py
    uv run python bench/log_ingest.py                       # SQLite file in a temp folder

Ingest: --runs runs print as fast as they can for --seconds, each through its own LogWriter
(in one process, as a worker's followers are threads of one process) and the process's
shipper — the code path of a real run. Printed: lines per second written and stored, how
far storing lagged behind writing (in lines, sampled every 0.5 s), and the database's
growth per million lines (PostgreSQL: the chunk table's size with its index and TOAST).

Reading: one run's log of --read-lines lines served from the database — the download, the
API's cursor (pages of 1,000 lines), the live viewer's first read, and the run page.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_queries import connection, test_database  # noqa: I001

from bench.common import percentiles

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import close_old_connections
from django.test import Client
from django.utils import timezone

from pipelines_app.models import Pipeline
from runs_app.logs import STDOUT, LogWriter, spool_path
from runs_app.models import LogChunk, PipelineRun
from runs_app.stored_logs import LogTail, extent

PAYLOAD = "processed batch {n:>9}: rows=1000 ok=998 skipped=2 elapsed=0.0421s"


def chunk_table_bytes() -> int:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_total_relation_size('runs_app_logchunk')")
            return cursor.fetchone()[0]
    # SQLite: what the rows hold (its pages are shared by every table of the file)
    return sum(len(bytes(d)) + 64 for d in LogChunk.objects.values_list("data", flat=True))


def make_runs(count: int) -> list[PipelineRun]:
    now = timezone.now()
    pipeline = Pipeline.objects.create(
        name="ingest", folder_path="/p/ingest", discovered_at=now, last_seen_at=now
    )
    return [
        PipelineRun.objects.create(
            pipeline=pipeline, status="running", worker_id="bench:1:t", started_at=now
        )
        for _ in range(count)
    ]


def ingest(runs: list[PipelineRun], seconds: float) -> None:
    writers = [LogWriter(spool_path(run.public_id), run_id=run.pk) for run in runs]
    stop = threading.Event()
    written = [0] * len(runs)

    def print_lines(index: int) -> None:
        writer = writers[index]
        while not stop.is_set():
            for _ in range(100):
                writer.write(STDOUT, PAYLOAD.format(n=written[index]))
                written[index] += 1

    threads = [threading.Thread(target=print_lines, args=(i,)) for i in range(len(runs))]
    size_before = chunk_table_bytes()
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    lags = []
    while time.perf_counter() - began < seconds:
        time.sleep(0.5)
        stored = sum(extent(run.pk)[0] for run in runs)
        lags.append(sum(written) - stored)
    stop.set()
    for thread in threads:
        thread.join()
    writing = time.perf_counter() - began
    for writer in writers:
        writer.close()  # the rest stored now
    total_time = time.perf_counter() - began
    lines = sum(written)
    stored = sum(extent(run.pk)[0] for run in runs)
    assert stored == lines, (stored, lines)
    growth = chunk_table_bytes() - size_before
    chunks = LogChunk.objects.count()
    p50, p95, _ = percentiles([float(lag) for lag in lags])
    print(
        f"  ingest: {len(runs)} runs wrote {lines:,} lines in {writing:.1f} s "
        f"({lines / writing:,.0f} lines/s); all stored after {total_time:.1f} s "
        f"({lines / total_time:,.0f} lines/s stored)"
    )
    print(f"  storing lagged behind writing by p50 {p50:,.0f} / p95 {p95:,.0f} lines")
    print(
        f"  database: {growth / 1024**2:.1f} MiB for {lines:,} lines in {chunks:,} chunks "
        f"= {growth / lines * 1e6 / 1024**2:.1f} MiB per million lines "
        f"(the lines themselves: {len(PAYLOAD) + 34} B each, "
        f"{(len(PAYLOAD) + 34) / 1.024**2:.0f} MiB per million)"
    )


def reading(run: PipelineRun, lines: int, repeat: int) -> None:
    writer = LogWriter(spool_path(run.public_id), run_id=run.pk, background=False)
    for number in range(lines):
        writer.write(STDOUT, PAYLOAD.format(n=number))
    writer.close()
    user = get_user_model().objects.create_superuser("bench", "bench@example.com", "x")
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)

    def download() -> None:
        response = client.get(f"/runs/{run.public_id}/log/")
        assert b"".join(response.streaming_content).count(b"\n") == lines

    def api_pages() -> None:
        after = 0
        while True:
            page = client.get(f"/api/v1/runs/{run.public_id}/log", {"after": after}).json()
            if not page["lines"]:
                break
            after = page["next"]
        assert after == lines

    def first_read() -> None:
        assert LogTail(run.pk).read()

    def run_page() -> None:
        assert client.get(f"/runs/{run.public_id}/").status_code == 200

    print(f"  reading one run's log of {lines:,} lines from the database:")
    for label, action in {
        "download (whole log)": download,
        "API cursor, pages of 1,000": api_pages,
        "live viewer's first read": first_read,
        "run page": run_page,
    }.items():
        samples = []
        for _ in range(repeat):
            began = time.perf_counter()
            action()
            samples.append((time.perf_counter() - began) * 1000)
        p50, p95, _ = percentiles(samples)
        print(f"    {label:<28} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--read-lines", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    settings.LOGS_DIR = Path(tempfile.mkdtemp(prefix="fastflow-bench-spool-"))
    with test_database():
        print(f"{connection.vendor}:")
        runs = make_runs(args.runs + 1)
        ingest(runs[:-1], args.seconds)
        close_old_connections()
        reading(runs[-1], args.read_lines, args.repeat)


if __name__ == "__main__":
    main()
