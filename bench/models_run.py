"""Issue 16: a models run's cost beside the engine's own, on a generated 200-model dbt
project (dbt-duckdb, one seed, 200 SQL models in a tree of refs), in real run containers.

    uv run python bench/models_run.py                 # 3 measured runs after a warm-up run
    uv run python bench/models_run.py --models 200 --runs 3 --docs
    uv run python bench/models_run.py --database-url postgres://postgres@127.0.0.1:5432/ffmodels

The database named by --database-url is emptied first (it is the bench's own).

For each run, from its own record and log:
- total: queued → final (what a person waits for);
- engine: the dbt commands' own wall time (from the start of `dbt build`, said in the log
  just before it, to the last output line of dbt, docs generation included with --docs;
  dbt's own start-up, ~2 s of imports, is the engine's);
- Fast-Flow's share: total - engine, split into queued → container started, environment
  (uv, from the warm cache), started → engine (copying the project), engine end → final
  (the last steps from run_results.json, graph, docs if asked, the run's end);
- steps: rows stored, and how many per second of engine time they were stored at.

Then the step recorder alone: reports of a 2,000-model run (a start and a result each, then
the result again from run_results.json) fed as fast as a log could carry them, until every
row is stored — steps recorded per second, without dbt in the way.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import percentiles, throwaway_instance

WORK = Path(tempfile.mkdtemp(prefix="fastflow-bench-models-"))


def log_text(run_id: int) -> str:
    """A run's stored log (runs_app.stored_logs; imported once Django is set up)."""
    from runs_app.stored_logs import log_text as stored

    return stored(run_id)


def generate(folder: Path, models: int, docs: bool) -> None:
    """dbt-duckdb: seed `numbers`, model_0 reads it, model_i refs model_((i-1)//2)."""
    (folder / "models").mkdir(parents=True)
    (folder / "seeds").mkdir()
    (folder / "dbt_project.yml").write_text(
        "name: generated\nversion: '1.0.0'\nconfig-version: 2\nprofile: generated\n"
        "models:\n  generated:\n    +materialized: table\n"
    )
    (folder / "profiles.yml").write_text(
        "generated:\n  target: duckdb\n  outputs:\n    duckdb:\n      type: duckdb\n"
        "      path: \"{{ env_var('FASTFLOW_DATA_DIR') }}/generated.duckdb\"\n      threads: 2\n"
    )
    (folder / "requirements.txt").write_text("dbt-core>=1.10,<1.12\ndbt-duckdb>=1.10,<1.12\n")
    (folder / "pipeline.json").write_text(
        '{"type": "models", "data_folder": true, "max_instances": 1, '
        f'"models": {{"docs": {"true" if docs else "false"}}}}}'
    )
    (folder / "seeds" / "numbers.csv").write_text("n\n" + "".join(f"{n}\n" for n in range(100)))
    (folder / "models" / "model_0.sql").write_text("select n from {{ ref('numbers') }}\n")
    for index in range(1, models):
        parent = (index - 1) // 2
        (folder / "models" / f"model_{index}.sql").write_text(
            f"select n + {index} as n from {{{{ ref('model_{parent}') }}}}\n"  # noqa: S608
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--docs", action="store_true", help="generate the docs in each run")
    parser.add_argument("--database-url", default=f"sqlite:///{WORK / 'db.sqlite3'}")
    args = parser.parse_args()
    (WORK / "pipelines").mkdir(parents=True)
    generate(WORK / "pipelines" / "generated", args.models, args.docs)
    throwaway_instance(
        WORK,
        {},
        flush="postgres" in args.database_url,
        RUN_POOL_SIZE="0",
        DATABASE_URL=args.database_url,
    )

    from pipelines_app.models import Pipeline
    from runs_app.models import PipelineRun
    from runs_app.worker.execution import execute_run

    pipeline = Pipeline.objects.get(name="generated")
    assert pipeline.status == "ok", pipeline.error_messages
    print(f"{args.models} models + 1 seed, dbt-duckdb, docs {'on' if args.docs else 'off'}")
    rows: list[dict[str, float]] = []
    for attempt in range(args.runs + 1):
        run = PipelineRun.enqueue(pipeline, trigger=PipelineRun.Trigger.CLI)
        PipelineRun.claim_runs()
        execute_run(run.pk)
        final_seen = datetime.now().astimezone()
        run.refresh_from_db()
        if run.status != PipelineRun.Status.SUCCEEDED:
            raise SystemExit(f"run failed: {run.error_message}\n{log_text(run.pk)}")
        if attempt == 0:
            print("  (warm-up run: fills the uv cache)")
            continue
        rows.append(measure(run, final_seen))
    print(f"  {len(rows)} measured runs (median, max):")
    for key in rows[0]:
        values = [row[key] for row in rows]
        p50, _, most = percentiles(values)
        unit = "" if key.startswith("steps") else " s"
        print(f"    {key:<42} {p50:8.2f}{unit}   {most:8.2f}{unit}")
    recorder_throughput(10 * args.models)


def measure(run, final_seen: datetime) -> dict[str, float]:
    from runs_app.stored_logs import all_lines

    lines = [line[1:] for line in all_lines(run.pk)]
    command_at = next(t for t, s, text in lines if s == "S" and text.startswith("dbt build"))
    engine_lines = [t for t, s, _ in lines if s == "O" and t > command_at]
    engine_start, engine_end = parse(command_at), parse(engine_lines[-1])
    total = (final_seen - run.queued_at).total_seconds()
    engine = (engine_end - engine_start).total_seconds()
    user_code = run.started_at + run.setup_duration
    steps = run.steps.count()
    return {
        "total (queued → final)": total,
        "engine (its own commands)": engine,
        "Fast-Flow's share": total - engine,
        "  queued → container started": (run.started_at - run.queued_at).total_seconds(),
        "  environment (uv, warm cache)": run.setup_duration.total_seconds(),
        "  started → engine (runner, project copy)": (engine_start - user_code).total_seconds(),
        "  engine end → final": (final_seen - engine_end).total_seconds(),
        "steps stored": steps,
        "steps per second of engine time": steps / engine,
    }


def parse(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp[:26] + "+00:00")


def recorder_throughput(models: int) -> None:
    from django.db import connection

    from pipelines_app.models import Pipeline
    from runs_app.models import PipelineRun
    from runs_app.steps import StepRecorder

    run = PipelineRun.enqueue(Pipeline.objects.get(name="generated"), trigger="cli")
    recorder = StepRecorder(run, lambda text: text)
    reports = []
    for index in range(models):
        node = {"id": f"model.generated.model_{index}", "name": f"model_{index}", "type": "model"}
        reports.append({**node, "status": "running", "started_at": "2026-11-30T10:00:00Z"})
        reports.append({**node, "status": "success", "finished_at": "2026-11-30T10:00:01Z"})
    for index in range(models):  # completed from run_results.json
        reports.append(
            {"id": f"model.generated.model_{index}", "type": "model", "status": "success",
             "seconds": 0.01, "rows": 100, "depends_on": [f"model.generated.model_{index // 2}"]}
        )  # fmt: skip
    began = time.perf_counter()
    for report in reports:
        recorder.report(report)
    recorder.close()
    took = time.perf_counter() - began
    assert run.steps.count() == models
    print(
        f"  step recorder alone ({connection.vendor}): {models} steps from {len(reports)} reports "
        f"in {took:.2f} s — {models / took:,.0f} steps/s, {len(reports) / took:,.0f} reports/s"
    )


if __name__ == "__main__":
    main()
