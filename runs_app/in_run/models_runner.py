"""Runs a models project (dbt or FastFlowTransform) inside a run, model by model in view.

Started by the launcher when the run is a models run (FASTFLOW_MODELS holds pipeline.json's
"models", engine settled); standard library only, like the launcher, and run by the
Python of the run's own environment, where the engine is installed.

- The project is copied to a writable folder first: the pipeline folder is read-only, and
  both engines write next to the project (dbt: target/, logs/; FFT: .fastflowtransform/).
- Each command runs as the engine's own CLI, its output passed through as the log (dbt's
  JSON log lines shown as their message); each node's progress becomes a `step` marker:
  live from dbt's events and FFT's progress lines, then completed from the engine's
  artifacts (run_results.json, manifest.json, test_results.json) after each command.
- Commands run in order and stop at the first that fails; the run exits with the engine's
  exit code (dbt: 1, FFT's failing data test: 2).
- After a run where every command succeeded, the project's docs are generated and sent to
  Fast-Flow as one self-contained HTML file (artifact "docs.html"), with the model graph
  (artifact "dag.json"). Artifacts travel as `artifact` markers in pieces, each with its
  offset, so a follower that reads the log twice writes the same bytes twice.

Per-run values FASTFLOW_SELECT, FASTFLOW_EXCLUDE and FASTFLOW_FULL_REFRESH (validated by
Fast-Flow before the run was queued) replace pipeline.json's select, exclude, full_refresh.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fastflow_markers import tell  # beside this file, in every run

ARTIFACT_PIECE = 8192  # bytes per marker: well below the engine's 16 KiB log line split
NODE_TYPES = ("model", "seed", "snapshot", "test")
GRAPH_TYPES = ("model", "seed", "snapshot")
SKIP_COPY = ("target", "logs", ".fastflowtransform", "__pycache__", ".git")


def report_step(**fields):
    tell("step", json.dumps({k: v for k, v in fields.items() if v is not None}))


def send_artifact(name, data):
    """A file for Fast-Flow, in pieces that each say where they go (repeatable)."""
    total = len(data)
    for offset in range(0, max(total, 1), ARTIFACT_PIECE):
        piece = base64.b64encode(data[offset : offset + ARTIFACT_PIECE]).decode("ascii")
        tell("artifact", json.dumps({"name": name, "size": total, "at": offset, "data": piece}))


def settings():
    config = json.loads(os.environ["FASTFLOW_MODELS"])
    select = os.environ.get("FASTFLOW_SELECT")
    exclude = os.environ.get("FASTFLOW_EXCLUDE")
    full_refresh = os.environ.get("FASTFLOW_FULL_REFRESH")
    if select is not None:
        config["select"] = select.split()
    if exclude is not None:
        config["exclude"] = exclude.split()
    if full_refresh is not None:
        config["full_refresh"] = full_refresh.strip().lower() in ("true", "1", "yes")
    return config


def copy_project(source, work):
    """A copy the engine may write in (its target folder): the code itself is read-only, and
    so are the modes a plain copy would keep."""
    project = Path(work) / "project"
    shutil.copytree(
        source,
        project,
        symlinks=True,
        ignore=lambda folder, names: [n for n in names if n in SKIP_COPY],
    )
    for folder, _folders, files in os.walk(project):
        os.chmod(folder, 0o700)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o200)
    return project


def stream(argv, cwd, on_line):
    """Run one command, each output line through on_line (which prints what is shown)."""
    tell("note", " ".join(argv))
    if shutil.which(argv[0]) is None:
        print(
            f"{argv[0]} is not installed in the run's environment: name it in requirements.txt "
            + ("(dbt-core and its adapter)" if argv[0] == "dbt" else "(fastflowtransform)"),
            file=sys.stderr,
        )
        return 127
    process = subprocess.Popen(  # noqa: S603 - the engine's own CLI, arguments validated
        argv,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
    )
    for line in process.stdout:
        on_line(line.rstrip("\n"))
    return process.wait()


def read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def inline_site(index):
    """A docs site (index.html with local CSS, JS and JSON) as one file that needs nothing
    else: Fast-Flow serves it sandboxed, where it may not load anything."""
    site = index.parent
    html = index.read_text(encoding="utf-8")

    def local(reference):
        path = (site / reference).resolve()
        return path if path.is_relative_to(site.resolve()) and path.is_file() else None

    def stylesheet(match):
        path = local(match.group(1))
        return f"<style>{path.read_text(encoding='utf-8')}</style>" if path else match.group(0)

    def script(match):
        path = local(match.group(2))
        if not path:
            return match.group(0)
        code = path.read_text(encoding="utf-8").replace("</script", "<\\/script")
        return f"<script{match.group(1)}>{code}</script>"

    def data_url(match):
        path = local(match.group(2))
        if not path:
            return match.group(0)
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'{match.group(1)}"data:application/json;base64,{encoded}"'

    html = re.sub(r'<link rel="stylesheet" href="([^"]+)"\s*/?>', stylesheet, html)
    html = re.sub(r'<script([^>]*?) src="([^"]+)"></script>', script, html)
    html = re.sub(r'(window\.__FFT_[A-Z_]+__ = )"([^"]+\.json)"', data_url, html)
    return html.encode("utf-8")


class Dbt:
    """dbt-core with any adapter: `dbt <command> --log-format json`."""

    SELECTS = ("seed", "snapshot", "run", "test", "build")
    REFRESHES = ("seed", "run", "build")

    def __init__(self, config, project):
        self.config = config
        self.project = project
        self.manifest = {}

    def flags(self):
        flags = ["--log-format", "json", "--no-use-colors"]
        flags += ["--project-dir", str(self.project), "--profiles-dir", str(self.project)]
        if self.config.get("target"):
            flags += ["--target", self.config["target"]]
        return flags

    def argv(self, command):
        argv = ["dbt", command, *self.flags()]
        if command in self.SELECTS:
            if self.config.get("select"):
                argv += ["--select", *self.config["select"]]
            if self.config.get("exclude"):
                argv += ["--exclude", *self.config["exclude"]]
        if command in self.REFRESHES and self.config.get("full_refresh"):
            argv.append("--full-refresh")
        return argv

    def on_line(self, line):
        try:
            event = json.loads(line)
            info = event["info"]
        except (ValueError, TypeError, KeyError):
            print(line)
            return
        message = info.get("msg") or ""
        if message:
            print(message)
        node = (event.get("data") or {}).get("node_info") or {}
        if node.get("unique_id") and node.get("resource_type") in NODE_TYPES:
            status = node.get("node_status") or ""
            report_step(
                id=node["unique_id"],
                name=node.get("node_name"),
                type=node.get("resource_type"),
                status="running" if status in ("started", "compiling", "executing") else status,
                started_at=node.get("node_started_at") or None,
                finished_at=node.get("node_finished_at") or None,
            )

    def finish(self, command):
        target = self.project / "target"
        self.manifest = read_json(target / "manifest.json") or self.manifest
        results = read_json(target / "run_results.json") or {}
        nodes = self.manifest.get("nodes", {})
        for result in results.get("results", []):
            unique_id = result.get("unique_id", "")
            node = nodes.get(unique_id, {})
            execute = next((t for t in result.get("timing", []) if t.get("name") == "execute"), {})
            rows = (result.get("adapter_response") or {}).get("rows_affected")
            model, column = self.tested(node)
            report_step(
                id=unique_id,
                name=node.get("name") or unique_id.split(".")[-1],
                type=node.get("resource_type") or unique_id.split(".")[0],
                status=result.get("status"),
                started_at=execute.get("started_at"),
                finished_at=execute.get("completed_at"),
                seconds=result.get("execution_time"),
                rows=rows if isinstance(rows, int) and rows >= 0 else None,
                failures=result.get("failures"),
                message=result.get("message"),
                depends_on=(node.get("depends_on") or {}).get("nodes"),
                model=model,
                column=column,
            )

    def tested(self, node):
        """The model and column a test is attached to."""
        if node.get("resource_type") != "test":
            return None, None
        attached = node.get("attached_node") or next(
            iter((node.get("depends_on") or {}).get("nodes") or []), None
        )
        model = self.manifest.get("nodes", {}).get(attached, {}).get("name") if attached else None
        column = node.get("column_name") or (node.get("test_metadata") or {}).get("kwargs", {}).get(
            "column_name"
        )
        return model, column

    def graph(self):
        nodes = self.manifest.get("nodes", {})
        keep = {k for k, n in nodes.items() if n.get("resource_type") in GRAPH_TYPES}
        return [
            {
                "id": key,
                "name": nodes[key].get("name"),
                "type": nodes[key].get("resource_type"),
                "depends_on": [
                    d for d in nodes[key].get("depends_on", {}).get("nodes", []) if d in keep
                ],
            }
            for key in sorted(keep)
        ]

    def docs(self):
        code = stream(
            ["dbt", "docs", "generate", "--static", *self.flags()], self.project, self.on_line
        )
        page = self.project / "target" / "static_index.html"
        return page.read_bytes() if code == 0 and page.is_file() else None


class FastFlowTransform:
    """FastFlowTransform's `fft`: seed, run (fingerprint cache off unless opted in), test."""

    # "▶ L01 [DUCK] orders.ff (shop.orders)", "✓ L01 [DUCK] orders.ff (...)  7 ms"
    PROGRESS = re.compile("(\u25b6|\u2713|\u2716|\u2717)\\s+L\\d+\\s+\\[[^\\]]*\\]\\s+(\\S+)")
    # seed: '✓ "shop"."raw_orders" • 3(times)6 • 144 B' (rows, columns)
    SEEDED = re.compile("\u2713\\s+(\\S+)\\s+\u2022\\s+(\\d+)\u00d7\\d+")

    def __init__(self, config, project):
        self.config = config
        self.project = project
        self.manifest = {}

    def argv(self, command):
        argv = ["fft", command, str(self.project), "--env", self.config.get("target") or "dev"]
        if command == "run":
            argv += ["--cache", "rw" if self.config.get("fingerprint_cache") else "off"]
            for token in self.config.get("exclude") or ():
                argv += ["--exclude", token]
            if self.config.get("full_refresh"):
                argv.append("--rebuild")
        if command in ("run", "test"):
            for token in self.config.get("select") or ():
                argv += ["--select", token]
        return argv

    def on_line(self, line):
        print(line)
        text = line.removeprefix("[FFT]").strip()
        if match := self.SEEDED.search(text):
            relation = match.group(1).replace('"', "")
            name = relation.split(".")[-1]
            report_step(id=f"seed.{name}", name=name, type="seed", status="success",
                        rows=int(match.group(2)))  # fmt: skip
        elif match := self.PROGRESS.match(text):
            name = match.group(2)
            status = {"\u25b6": "running", "\u2713": "success"}.get(match.group(1), "error")
            report_step(id=f"model.{name}", name=name, type="model", status=status)

    def finish(self, command):
        target = self.project / ".fastflowtransform" / "target"
        if command == "run":
            self.manifest = read_json(target / "manifest.json") or self.manifest
            results = read_json(target / "run_results.json") or {}
            nodes = self.manifest.get("nodes", {})
            seen = set()
            for result in results.get("results", []):
                name = result.get("name", "")
                seen.add(name)
                report_step(
                    id=f"model.{name}",
                    name=name,
                    type="model",
                    status=result.get("status"),
                    started_at=result.get("started_at"),
                    finished_at=result.get("finished_at"),
                    seconds=(result.get("duration_ms") or 0) / 1000,
                    rows=result.get("rows"),
                    message=result.get("message"),
                    depends_on=[f"model.{d}" for d in nodes.get(name, {}).get("deps", [])],
                )
            if not self.config.get("select") and not self.config.get("exclude"):
                for name in sorted(set(nodes) - seen):
                    report_step(
                        id=f"model.{name}",
                        name=name,
                        type="model",
                        status="not_run",
                        message="not run: the run stopped before it",
                        depends_on=[f"model.{d}" for d in nodes[name].get("deps", [])],
                    )
        elif command == "test":
            results = read_json(target / "test_results.json") or {}
            relations = {
                node.get("relation"): name for name, node in self.manifest.get("nodes", {}).items()
            }
            for result in results.get("results", []):
                table = (result.get("table") or "").replace('"', "")
                relation = (result.get("relation") or table).replace('"', "")
                tested = relations.get(relation.split(".")[-1])
                column = result.get("column")
                kind = result.get("kind", "test")
                label = f"{kind} {result.get('param_str') or ''}".strip()
                ok = result.get("ok")
                report_step(
                    id="test." + re.sub(r"[^A-Za-z0-9_.]+", "_", f"{label}.{relation}.{column}"),
                    name=label,
                    type="test",
                    status="pass"
                    if ok
                    else ("warn" if result.get("severity") == "warn" else "fail"),
                    seconds=(result.get("duration_ms") or 0) / 1000,
                    message=None if ok else result.get("msg"),
                    model=relation,
                    column=column,
                    depends_on=[f"model.{tested}"] if tested else None,
                )

    def graph(self):
        nodes = self.manifest.get("nodes", {})
        return [
            {
                "id": f"model.{name}",
                "name": name,
                "type": "model",
                "depends_on": [f"model.{d}" for d in node.get("deps", []) if d in nodes],
            }
            for name, node in sorted(nodes.items())
        ]

    def docs(self):
        site = self.project.parent / "site"
        argv = ["fft", "docgen", str(self.project), "--env", self.config.get("target") or "dev"]
        code = stream([*argv, "--out", str(site)], self.project, print)
        index = site / "index.html"
        return inline_site(index) if code == 0 and index.is_file() else None


ADAPTERS = {"dbt": Dbt, "fft": FastFlowTransform}


def prepare_cache(config, project):
    """FFT's fingerprint cache, when the pipeline opted in: kept in its data folder."""
    if config["engine"] != "fft" or not config.get("fingerprint_cache"):
        return
    data = os.environ.get("FASTFLOW_DATA_DIR")
    if not data:
        tell("note", "fingerprint_cache is on but the pipeline has no data_folder: the cache "
             "starts empty in every run")  # fmt: skip
        return
    cache = Path(data) / ".fastflowtransform-cache"
    cache.mkdir(exist_ok=True)
    (project / ".fastflowtransform").mkdir(exist_ok=True)
    (project / ".fastflowtransform" / "cache").symlink_to(cache)
    tell("note", "fingerprint_cache is on: models whose SQL did not change may be skipped")


def main():
    config = settings()
    project = copy_project(os.getcwd(), tempfile.mkdtemp(prefix="models-"))
    prepare_cache(config, project)
    adapter = ADAPTERS[config["engine"]](config, project)
    code = 0
    for command in config["commands"]:
        code = stream(adapter.argv(command), project, adapter.on_line)
        adapter.finish(command)
        if code != 0:
            break
    graph = adapter.graph()
    if graph:
        send_artifact("dag.json", json.dumps(graph).encode("utf-8"))
    if code == 0 and config.get("docs", True):
        page = adapter.docs()
        if page is not None:
            send_artifact("docs.html", page)
        else:
            tell("note", "the project's docs could not be generated (see above)")
    sys.stdout.flush()
    sys.exit(code)
