"""Reliability under faults — each scenario prints what it checked and its figures.

    uv run python bench/reliability.py [--only R1,R4] [--outage 60] [--calls 500]
                                       [--database postgres://...] [--redis redis://...]

One throw-away instance (SQLite in a temp folder unless --database; ORM broker unless
--redis) with a real `manage.py worker` and, where needed, daphne:

R1  `kill -9` of the worker with 5 runs in flight, then a new worker: every run re-attached,
    full logs (no gap, no duplicate), the right statuses.
R2  `--calls` webhook calls within 10 s, MAX_CONCURRENT_RUNS=10: one run per accepted call,
    none lost or doubled, never more than 10 containers at once.
R3  dockerd stopped for `--outage` seconds while 3 runs go on (needs root and dockerd's
    live-restore, which keeps containers running without it), then started again: the runs
    finish with their right statuses and full logs; none is failed for the outage.
R4  a secret printed in 6 forms: in no stored log, samples, spool, live stream, download or row.
R5  out of memory, timeout, cancel: the right status and reason; a cancel stays cancelled.
R6  daphne killed and started again while Chromium watches a run live: the page resumes
    after its last line, no gap, no duplicate.
R7  PostgreSQL restarted three times in 60 s (`--database` on this machine's PostgreSQL;
    `--pg-restart` is the command) under a stream of scheduled runs (three pipelines every
    2 s): due times fired/expected, lost (skipped while the database was up), doubled;
    every run ended once with its whole log; the worker healthy afterwards, every thread
    alive; how soon the schedules fired again after each restart.
R8  Redis restarted under 20 live viewers (Chromium pages) of one run: each page's lines
    against the log (gaps, duplicates), and how long the pages went without a new line.
    Runs with a Redis server of its own (on a free port), so REDIS_URL is set.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import CHROMIUM_ARGS, free_port, sign_in, wait_until_answering

WORK = Path(tempfile.mkdtemp(prefix="fastflow-bench-reliability-"))
WEBHOOK_KEY = "bench-reliability-key-0123456789"
PASSWORD = "bench-password"  # noqa: S105 - a throw-away instance
SECRET = 'tok/"bench"+S3CR3T'  # noqa: S105 - the value the bench hunts for
PEM = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEF\n-----END KEY-----"

TICKS = (
    "import sys, time\nfor i in range({n}):\n"
    "    print('tick', i, flush=True)\n    time.sleep({pause})\nsys.exit({code})\n"
)
LEAK = (
    "import base64, json, os, urllib.parse\n"
    "s, k = os.environ['BENCH_TOKEN'], os.environ['BENCH_KEY']\n"
    "print('plain', s)\n"
    "print('base64', base64.b64encode(s.encode()).decode())\n"
    "print('basic', base64.b64encode(('bot:' + s).encode()).decode())\n"
    "print('url', urllib.parse.quote(s, safe=''))\n"
    "print('json', json.dumps({'token': s}))\n"
    "print('pem line', k.splitlines()[1])\n"
    "open(os.environ['FASTFLOW_ROUTE_FILE'], 'w').write(s)\n"
)


class Instance:
    def __init__(self, args) -> None:
        self.env = {
            **os.environ,
            "DATA_DIR": str(WORK / "data"),
            "LOGS_DIR": str(WORK / "logs"),
            "PIPELINES_DIR": str(WORK / "pipelines"),
            "MAX_CONCURRENT_RUNS": "10",
            "WEBHOOK_RATE_LIMIT": "0",
            "LOG_LEVEL": "WARNING",
            "RUN_HEARTBEAT_TIMEOUT": "10",
            "RUN_STOP_GRACE_SECONDS": "2",
        }
        if args.database:
            self.env["DATABASE_URL"] = args.database
        self.redis: subprocess.Popen | None = None
        if args.redis:
            self.env["REDIS_URL"] = args.redis
        elif "R8" in args.only.upper():
            self.redis_port = free_port()
            self.env["REDIS_URL"] = f"redis://127.0.0.1:{self.redis_port}/0"
            self.start_redis()
        os.environ.update(self.env)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fastflow_site.settings")
        self.worker: subprocess.Popen | None = None
        self.web: subprocess.Popen | None = None
        self.port = free_port()

    def pipeline(self, name: str, main: str, config: dict | None = None) -> None:
        folder = WORK / "pipelines" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "main.py").write_text(main)
        (folder / "pipeline.json").write_text(json.dumps(config or {}))

    def start_redis(self) -> None:
        """A Redis of this bench's own, keeping nothing (R8 restarts it)."""
        self.redis = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port),
             "--save", "", "--appendonly", "no", "--dir", str(WORK)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until_answering(self.redis_port)

    def start_worker(self) -> None:
        self.worker = self._spawn([sys.executable, "manage.py", "worker"], "worker.log")

    def start_web(self) -> None:
        command = [sys.executable, "-m", "daphne", "-p", str(self.port)]
        self.web = self._spawn([*command, "fastflow_site.asgi:application"], "web.log")
        wait_until_answering(self.port)

    def _spawn(self, command: list[str], log: str) -> subprocess.Popen:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=open(WORK / log, "a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @staticmethod
    def kill(process: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, sig)
            process.wait(timeout=30)

    def stop(self) -> None:
        self.kill(self.web)
        self.kill(self.worker)
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            self.redis.wait(timeout=10)


def log_text(run_id: int) -> str:
    """A run's stored log (runs_app.stored_logs; imported once Django is set up)."""
    from runs_app.stored_logs import log_text as stored

    return stored(run_id)


def stored_samples(run_id: int) -> list[dict]:
    from runs_app.stored_logs import samples_after

    return samples_after(run_id, 0)[0]


def wait(predicate, timeout: float, what: str) -> float:
    """Seconds until `predicate()` holds; SystemExit naming `what` past the timeout."""
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            raise SystemExit(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - began


def ticks_of(run) -> list[str]:
    lines = log_text(run.pk).split("\n")[:-1]
    return [line.split(" ", 2)[2] for line in lines if line.split(" ", 2)[1] == "O"]


# --- the scenarios ---------------------------------------------------------------------------


def r1_worker_killed(instance: Instance, models) -> None:
    PipelineRun, Pipeline = models
    codes = [0, 0, 3, 0, 5]
    runs = [
        PipelineRun.enqueue(Pipeline.objects.get(name=f"r1_{n}"), trigger="api")
        for n in range(len(codes))
    ]
    wait(
        lambda: (
            all("tick 3" in log_text(r.pk) for r in runs)
            and PipelineRun.objects.filter(pk__in=[r.pk for r in runs], status="running").count()
            == len(runs)
        ),
        60,
        "5 runs in flight",
    )
    instance.kill(instance.worker, signal.SIGKILL)
    killed_at = time.monotonic()
    instance.start_worker()
    reattached = wait(
        lambda: all(
            "re-attached" in log_text(r.pk) or PipelineRun.objects.get(pk=r.pk).is_finished
            for r in runs
        ),
        120,
        "every run re-attached",
    )
    wait(lambda: all(PipelineRun.objects.get(pk=r.pk).is_finished for r in runs), 120, "R1 end")
    right = complete = 0
    for run, code in zip(runs, codes, strict=True):
        run.refresh_from_db()
        expected = "succeeded" if code == 0 else "failed"
        right += run.status == expected and (run.exit_code or 0) == code
        complete += ticks_of(run) == [f"tick {i}" for i in range(25)]
    print(
        f"R1 kill -9 of the worker with {len(runs)} runs in flight: re-attached "
        f"{reattached:.1f} s after the new worker started ({time.monotonic() - killed_at:.1f} s "
        f"after the kill, to all final); right status {right}/{len(runs)}, "
        f"full logs (no gap, no duplicate) {complete}/{len(runs)}"
    )


def r2_webhook_burst(instance: Instance, models, calls: int, docker_client) -> None:
    PipelineRun, _ = models
    url = f"http://127.0.0.1:{instance.port}/hooks/r2/"
    accepted, refused = [], []
    most = {"containers": 0, "in_flight": 0}
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            running = docker_client.api.containers(filters={"label": "fastflow.pipeline=r2"})
            most["containers"] = max(most["containers"], len(running))
            in_flight = PipelineRun.objects.filter(
                pipeline__name="r2", status__in=PipelineRun.IN_FLIGHT_STATUSES
            ).count()
            most["in_flight"] = max(most["in_flight"], in_flight)
            time.sleep(0.05)

    def call(n: int) -> None:
        request = urllib.request.Request(
            url,
            data=json.dumps({"CALL": str(n)}).encode(),
            headers={"X-Fastflow-Key": WEBHOOK_KEY, "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                accepted.append(json.load(response)["run_id"])
        except (urllib.error.URLError, OSError) as problem:
            refused.append(str(problem))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=32) as pool:
        for n in range(calls):
            pool.submit(call, n)
            time.sleep(max(0.0, began + n * 10 / calls - time.monotonic()))
    sent_in = time.monotonic() - began
    total = wait(
        lambda: (
            not PipelineRun.objects.filter(
                pipeline__name="r2", status__in=PipelineRun.ACTIVE_STATUSES
            ).exists()
        ),
        1800,
        "every webhook run to end",
    )
    watching.set()
    runs = PipelineRun.objects.filter(pipeline__name="r2")
    values = [run.parameters.get("CALL") for run in runs]
    succeeded = runs.filter(status="succeeded").count()
    print(
        f"R2 {calls} webhook calls in {sent_in:.1f} s: accepted {len(accepted)}, refused "
        f"{len(refused)}; runs {runs.count()} ({len(set(values))} distinct calls, "
        f"{runs.count() - len(set(values))} doubled), succeeded {succeeded}; most at once: "
        f"{most['containers']} containers, {most['in_flight']} in flight (limit 10); all done "
        f"{total + sent_in:.0f} s after the first call ({runs.count() / (total + sent_in):.1f} "
        "runs/s)"
    )


def r3_ticks(outage: float) -> int:
    """R3's runs print a line a second for twice the outage: they outlive it."""
    return max(30, int(outage * 2))


def r3_engine_outage(instance: Instance, models, outage: float, docker_client) -> None:
    PipelineRun, Pipeline = models
    if not docker_client.info().get("LiveRestoreEnabled"):
        print(
            "R3 skipped: dockerd runs without live-restore, so stopping it would stop every "
            "container (start it with --live-restore; .ci/run does)"
        )
        return
    pid = int(
        subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()[0]
    )
    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    codes = [0, 4, 0]
    ticks = r3_ticks(outage)
    runs = [
        PipelineRun.enqueue(Pipeline.objects.get(name=f"r3_{n}"), trigger="api")
        for n in range(len(codes))
    ]
    wait(
        lambda: all("tick 2" in log_text(r.pk) for r in runs),
        120,
        "3 runs printing",
    )
    os.kill(pid, signal.SIGTERM)
    wait(lambda: not Path(f"/proc/{pid}").exists(), 60, "dockerd to stop")
    stopped_at = time.monotonic()
    time.sleep(outage)  # the outage itself
    subprocess.Popen(
        [part.decode() for part in command],
        stdout=open(WORK / "dockerd.log", "a"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    back_at = time.monotonic()
    wait(
        lambda: subprocess.run(["docker", "info"], capture_output=True).returncode == 0,
        60,
        "dockerd to answer",
    )
    failed_meanwhile = PipelineRun.objects.filter(
        pk__in=[r.pk for r in runs],
        status="failed",
        finished_at__isnull=False,
        failure_reason__in=["internal_error", "lost"],
    ).count()
    done = wait(
        lambda: all(PipelineRun.objects.get(pk=r.pk).is_finished for r in runs),
        600,
        "R3 runs to end",
    )
    right = complete = 0
    for run, code in zip(runs, codes, strict=True):
        run.refresh_from_db()
        right += run.status == ("succeeded" if code == 0 else "failed") and run.exit_code == code
        complete += ticks_of(run) == [f"tick {i}" for i in range(ticks)]
    print(
        f"R3 dockerd stopped {back_at - stopped_at:.0f} s while {len(runs)} runs went on: "
        f"failed for the outage {failed_meanwhile}; right status {right}/{len(runs)}, "
        f"complete logs {complete}/{len(runs)}; all final {done:.1f} s after dockerd was back"
    )


def r4_secret_forms(instance: Instance, models) -> None:
    from asgiref.sync import async_to_sync
    from channels.testing import WebsocketCommunicator
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    from fastflow_site.asgi import application

    PipelineRun, Pipeline = models
    run = PipelineRun.enqueue(Pipeline.objects.get(name="r4"), trigger="api")
    wait(lambda: PipelineRun.objects.get(pk=run.pk).is_finished, 120, "R4 run to end")
    run.refresh_from_db()
    forms = {
        "plain": SECRET,
        "base64": base64.b64encode(SECRET.encode()).decode(),
        "basic auth": base64.b64encode(f"bot:{SECRET}".encode()).decode()[8:-4],
        "URL-encoded": urllib.parse.quote(SECRET, safe=""),
        "JSON-escaped": json.dumps(SECRET)[1:-1],
        "PEM line": PEM.splitlines()[1],
    }
    client = Client(HTTP_HOST="localhost")
    client.force_login(get_user_model().objects.get(username="bench"))
    download = b"".join(client.get(f"{run.get_absolute_url()}log/").streaming_content).decode()
    page = client.get(run.get_absolute_url()).content.decode()

    async def streamed() -> str:
        communicator = WebsocketCommunicator(
            application,
            f"/ws/runs/{run.public_id}/log/",
            headers=[
                (b"origin", b"http://localhost"),
                (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
            ],
        )
        await communicator.connect()
        texts = []
        while (output := await communicator.receive_output(timeout=10))["type"] == "websocket.send":
            message = json.loads(output["text"])
            if message["type"] == "lines":
                texts += [line[3] for line in message["lines"]]
        return "\n".join(texts)

    row = json.dumps(
        {field.name: str(getattr(run, field.name)) for field in PipelineRun._meta.fields}
    )
    places = {
        "stored log": log_text(run.pk),
        "stored samples": json.dumps(stored_samples(run.pk)),
        "spools": "".join(p.read_text() for p in Path(settings.LOGS_DIR).glob("*.log")),
        "live stream": async_to_sync(streamed)(),
        "download": download,
        "run page": page,
        "run row": row,
    }
    leaks = [
        (form, place)
        for form, text in forms.items()
        for place, body in places.items()
        if text in body
    ]
    printed = sum(1 for line in places["log file"].split("\n") if "***" in line)
    print(
        f"R4 a secret printed in {len(forms)} forms ({', '.join(forms)}), looked for in "
        f"{len(places)} places ({', '.join(places)}): found {len(leaks)} times"
        + (f" {leaks}" if leaks else "")
        + f"; {printed} masked lines in the log, route stored as {run.route!r}"
    )


def r5_bad_ends(instance: Instance, models) -> None:
    PipelineRun, Pipeline = models
    runs = {
        name: PipelineRun.enqueue(Pipeline.objects.get(name=f"r5_{name}"), trigger="api")
        for name in ("oom", "timeout", "cancel")
    }
    wait(
        lambda: "O started" in log_text(runs["cancel"].pk),
        120,
        "the run to cancel to start",
    )
    asked = time.monotonic()
    runs["cancel"].request_cancel()
    wait(
        lambda: all(PipelineRun.objects.get(pk=r.pk).is_finished for r in runs.values()),
        180,
        "R5 runs to end",
    )
    cancelled_in = time.monotonic() - asked
    results = []
    for name, run in runs.items():
        run.refresh_from_db()
        results.append(
            f"{name} → {run.status}" + (f" ({run.failure_reason})" if run.failure_reason else "")
        )
    time.sleep(3)  # the cancelled run's container gone, its follower done: nothing changes it
    runs["cancel"].refresh_from_db()
    retried = PipelineRun.objects.filter(retry_of__in=[r.pk for r in runs.values()]).count()
    print(
        f"R5 {'; '.join(results)}; the cancel took {cancelled_in:.1f} s and stays "
        f"{runs['cancel'].status}; retries queued for them: {retried}"
    )


def r6_web_restart(instance: Instance, models) -> None:
    from playwright.sync_api import sync_playwright

    base = f"http://127.0.0.1:{instance.port}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        page = browser.new_page()
        sign_in(page, base, "/pipelines/r6/", password=PASSWORD)
        page.click("main form button[type=submit]")
        page.wait_for_url(f"{base}/runs/**")
        page.wait_for_selector(".log-line:has-text('tick 5')", timeout=60_000)
        instance.kill(instance.web, signal.SIGKILL)
        restarted = time.monotonic()
        instance.start_web()
        page.wait_for_selector(".log-line:has-text('tick 59')", timeout=120_000)
        back = time.monotonic() - restarted
        texts = page.locator(".log-line.stream-O .log-text").all_inner_texts()
        browser.close()
    expected = [f"tick {i}" for i in range(60)]
    print(
        f"R6 daphne killed and started again during a live view: the page showed "
        f"{len(texts)} of {len(expected)} lines, in order: {texts == expected}, gaps "
        f"{len(set(expected) - set(texts))}, duplicates {len(texts) - len(set(texts))}; "
        f"the last line shown {back:.1f} s after the restart"
    )


def r7_database_restarts(instance: Instance, models, restart: str) -> None:
    PipelineRun, _ = models
    if not instance.env.get("DATABASE_URL", "").startswith("postgres"):
        print("R7 skipped: it restarts PostgreSQL (--database postgres://... on this machine)")
        return
    from django.db import close_old_connections

    from pipelines_app.discovery import discover
    from runs_app.models import WorkerProcess

    interval, span, restarts = 2, 60.0, 3
    names = [f"r7_{n}" for n in range(3)]
    for name in names:
        instance.pipeline(name, "print('on time')\n", {"schedule_interval_seconds": interval})
    discover()
    began = time.monotonic()
    outages: list[tuple[float, float]] = []  # (down, up), wall clock
    for k in range(1, restarts + 1):
        time.sleep(max(0.0, began + k * span / (restarts + 1) - time.monotonic()))  # pacing
        down = time.time()
        subprocess.run(restart, shell=True, check=True, capture_output=True)  # noqa: S602
        outages.append((down, time.time()))
    time.sleep(max(0.0, began + span - time.monotonic()))
    close_old_connections()  # the bench's own connection went with the restarts
    for name in names:  # no more due times: the stream ends here
        (WORK / "pipelines" / name / "pipeline.json").write_text("{}")
    discover()
    runs = PipelineRun.objects.filter(pipeline__name__in=names, trigger="schedule")
    wait(lambda: not runs.filter(status__in=PipelineRun.ACTIVE_STATUSES).exists(), 180, "R7 runs")
    fired = expected = lost = doubled = ended_well = 0
    for name in names:
        due = sorted(runs.filter(pipeline__name=name).values_list("scheduled_for", flat=True))
        fired += len(due)
        doubled += len(due) - len(set(due))
        unique = sorted(set(due))
        expected += 1
        for before, after in itertools.pairwise(unique):
            missed = round((after - before).total_seconds() / interval) - 1
            # Due times that fell while the database was away fire once, when it is back.
            across = any(before.timestamp() <= up and after.timestamp() >= down
                         for down, up in outages)  # fmt: skip
            lost += 0 if across else max(missed, 0)
            expected += 1 if across else missed + 1
    queued = sorted(r.queued_at.timestamp() for r in runs)
    refire = [min((t for t in queued if t >= up), default=up) - up for _, up in outages]
    for run in runs:
        text = log_text(run.pk)
        ended_well += (
            run.status == "succeeded" and text.count(" S finished: ") == 1 and "on time" in text
        )
    worker = WorkerProcess.objects.filter(pid=instance.worker.pid).first()
    well = worker is not None and not worker.degraded and all(t["alive"] for t in worker.threads)
    downtime = sum(up - down for down, up in outages)
    print(
        f"R7 PostgreSQL restarted {restarts} times in {span:.0f} s ({downtime:.1f} s down in "
        f"all) under {len(names)} schedules every {interval} s: fired {fired}/{expected} "
        f"expected, lost {lost}, doubled {doubled}; ended once with their whole log "
        f"{ended_well}/{runs.count()}; a schedule fired again "
        f"{', '.join(f'{t:.1f}' for t in refire)} s after each restart; worker healthy "
        f"afterwards (heartbeat, every thread alive, "
        f"nothing degraded): {well}"
    )


def r8_redis_restart(instance: Instance, models, viewers: int = 20) -> None:
    PipelineRun, Pipeline = models
    if instance.redis is None:
        print("R8 skipped: it restarts the Redis it starts itself (do not pass --redis)")
        return
    from playwright.sync_api import sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # the ORM beside Playwright's loop
    lines = 150
    instance.pipeline("r8", TICKS.format(n=lines, pause=0.1, code=0))
    from pipelines_app.discovery import discover

    discover()
    base = f"http://127.0.0.1:{instance.port}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        context = browser.new_context()
        sign_in(context.new_page(), base, "/runs/", password=PASSWORD)
        run = PipelineRun.enqueue(Pipeline.objects.get(name="r8"), trigger="api")
        pages = [context.new_page() for _ in range(viewers)]
        for page in pages:
            page.goto(f"{base}/runs/{run.public_id}/")
        for page in pages:
            page.wait_for_selector(".log-line:has-text('tick 20')", timeout=120_000)
        instance.redis.terminate()
        instance.redis.wait(timeout=10)
        restarted, restarted_wall = time.monotonic(), time.time()
        instance.start_redis()
        for page in pages:
            page.wait_for_selector(f".log-line:has-text('tick {lines - 1}')", timeout=120_000)
        caught_up = time.monotonic() - restarted
        wait(lambda: PipelineRun.objects.get(pk=run.pk).is_finished, 60, "R8 run")
        ended = PipelineRun.objects.get(pk=run.pk).finished_at.timestamp() - restarted_wall
        expected = [f"tick {i}" for i in range(lines)]
        gaps = duplicates = whole = 0
        for page in pages:
            texts = page.locator(".log-line.stream-O .log-text").all_inner_texts()
            gaps += len(set(expected) - set(texts))
            duplicates += len(texts) - len(set(texts))
            whole += texts == expected
        browser.close()
    logged = ticks_of(PipelineRun.objects.get(pk=run.pk))
    print(
        f"R8 Redis restarted under {viewers} live viewers of a run printing 10 lines/s: "
        f"{whole}/{viewers} pages show every line in order, gaps {gaps}, duplicates "
        f"{duplicates} (the log has {len(logged)}/{lines}); every page had its last line "
        f"{caught_up:.1f} s after Redis was started again (the run's own end: "
        f"{ended:.1f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="R1,R2,R3,R4,R5,R6,R7,R8")
    parser.add_argument("--outage", type=float, default=60)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--database", default="")
    parser.add_argument("--redis", default="")
    parser.add_argument(
        "--pg-restart",
        default="pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n 1) "
        "main restart -m fast",
    )
    args = parser.parse_args()
    chosen = set(args.only.upper().split(","))
    instance = Instance(args)
    for n, code in enumerate([0, 0, 3, 0, 5]):
        instance.pipeline(f"r1_{n}", TICKS.format(n=25, pause=0.3, code=code))
    instance.pipeline(
        "r2", "import time\ntime.sleep(1)\nprint('done')\n", {"webhook_key": WEBHOOK_KEY}
    )
    for n, code in enumerate([0, 4, 0]):
        instance.pipeline(f"r3_{n}", TICKS.format(n=r3_ticks(args.outage), pause=1.0, code=code))
    instance.pipeline("r4", LEAK)
    instance.pipeline(
        "r5_oom",
        "hog = []\nwhile True:\n    hog.append(bytearray(16 << 20))\n",
        {"mem_hard_limit": "96m"},
    )
    instance.pipeline(
        "r5_timeout", "import time\nprint('started', flush=True)\ntime.sleep(60)\n", {"timeout": 2}
    )
    instance.pipeline("r5_cancel", "import time\nprint('started', flush=True)\ntime.sleep(120)\n")
    instance.pipeline("r6", TICKS.format(n=60, pause=0.2, code=0))

    import django

    django.setup()
    import docker
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from pipelines_app.discovery import discover
    from pipelines_app.models import Pipeline
    from runs_app.models import PipelineRun
    from secrets_app import crypto
    from secrets_app.models import Variable

    call_command("migrate", verbosity=0)
    discover()
    get_user_model().objects.create_superuser("bench", "bench@example.com", PASSWORD)
    for name, value in (("BENCH_TOKEN", SECRET), ("BENCH_KEY", PEM)):
        variable = Variable(name=name, kind=Variable.Kind.SECRET)
        variable.set_value(value)
        variable.save()
    assert crypto.decrypt(Variable.objects.get(name="BENCH_TOKEN").encrypted_value) == SECRET
    docker_client = docker.from_env()
    models = (PipelineRun, Pipeline)
    print(
        f"instance in {WORK} ({'PostgreSQL' if args.database else 'SQLite'}, "
        f"{'Redis' if instance.env.get('REDIS_URL') else 'ORM'} broker, Docker executor)"
    )
    instance.start_worker()
    instance.start_web()
    try:
        if "R1" in chosen:
            r1_worker_killed(instance, models)
        if "R2" in chosen:
            r2_webhook_burst(instance, models, args.calls, docker_client)
        if "R3" in chosen:
            r3_engine_outage(instance, models, args.outage, docker_client)
        if "R4" in chosen:
            r4_secret_forms(instance, models)
        if "R5" in chosen:
            r5_bad_ends(instance, models)
        if "R6" in chosen:
            r6_web_restart(instance, models)
        if "R7" in chosen:
            r7_database_restarts(instance, models, args.pg_restart)
        if "R8" in chosen:
            r8_redis_restart(instance, models)
    finally:
        instance.stop()


if __name__ == "__main__":
    main()
