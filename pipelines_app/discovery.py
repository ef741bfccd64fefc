"""Discovery: scan the pipelines directory and bring the `Pipeline` rows in step with it.

`scan_pipelines()` only reads the file system and never raises for what it finds there: every
broken folder becomes a report with its reason, so one bad folder never hides the others.
`discover()` applies a scan to the database.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from pipelines_app.bundles import BundleError, bundle_folder, entries
from pipelines_app.checkouts import current_link, live_pipelines_root
from pipelines_app.contract import (
    MODELS_COMMANDS,
    PipelineConfig,
    Problem,
    is_pipeline_name,
    parse_config,
)
from pipelines_app.environments import Unreadable, read_environment
from pipelines_app.models import DiscoveryScan, GitSource, Pipeline
from pipelines_app.projects import detect_engine, project_problems
from pipelines_app.schedules import sync_file_schedules
from pipelines_app.signals import catalogue_changed

logger = logging.getLogger(__name__)

# The Python a FastFlowTransform pipeline gets unless pipeline.json says python_version.
FFT_PYTHON = "3.13"


@dataclass
class FolderReport:
    """What discovery learned about one sub-folder of the pipelines directory."""

    name: str
    path: Path
    status: Literal["ok", "invalid", "ignored", "rejected"]
    reason: str = ""  # why a folder is ignored or rejected
    config_file: str = ""
    config: PipelineConfig = field(default_factory=PipelineConfig)
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    requirements_file: str = ""
    requirements_hash: str = ""
    requirements_text: str = ""
    index_options: list[str] = field(default_factory=list)

    @property
    def is_pipeline(self) -> bool:
        return self.status in ("ok", "invalid")

    def error(self, file: str, message: str, field_name: str = "") -> None:
        self.errors.append(Problem.of(file, field_name, message))

    def warn(self, file: str, message: str, field_name: str = "") -> None:
        self.warnings.append(Problem.of(file, field_name, message))


@dataclass
class Scan:
    root: Path
    folders: list[FolderReport] = field(default_factory=list)
    error: str = ""

    @property
    def pipelines(self) -> list[FolderReport]:
        return [folder for folder in self.folders if folder.is_pipeline]


class _Unreadable(Exception):
    """A file that exists but cannot be used; the message says why, for people."""


def pipelines_location() -> tuple[Path, Path]:
    """(the folder holding the pipelines, the tree it must stay inside): the live checkout
    of the pipeline repository when one is configured (plus its sub-folder), else
    PIPELINES_DIR plus PIPELINES_SUBDIR."""
    source = GitSource.load()
    if source.is_configured:
        return live_pipelines_root(source), current_link()
    base = Path(settings.PIPELINES_DIR)
    return (base / settings.PIPELINES_SUBDIR if settings.PIPELINES_SUBDIR else base), base


def pipelines_root() -> Path:
    return pipelines_location()[0]


def scan_pipelines(root: Path, tz_name: str | None = None, inside: Path | None = None) -> Scan:
    """Read every direct, non-hidden sub-folder of `root` (which must lie in `inside`: a
    sub-folder that is a symlink out of the repository is refused)."""
    tz_name = tz_name or settings.TIME_ZONE
    scan = Scan(root=root)
    if inside is not None and root.exists() and not _inside(root, inside.resolve()):
        scan.error = (
            f"The pipelines folder {root} is a link to {root.resolve()}, outside "
            f"{inside}; point PIPELINES_SUBDIR (or the repository's sub-folder) at a folder "
            "inside it."
        )
        return scan
    try:
        if not root.is_dir():
            what = "is not a directory" if root.exists() else "does not exist"
            scan.error = (
                f"The pipelines directory {root} {what}; create it or point PIPELINES_DIR "
                "(and PIPELINES_SUBDIR) at the folder that holds your pipelines."
            )
            return scan
        real_root = root.resolve()
        entries = sorted(root.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        scan.error = f"The pipelines directory {root} cannot be read: {exc.strerror or exc}"
        return scan

    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            report = _inspect_entry(entry, real_root, tz_name)
        except Exception as exc:  # a bug here must not hide the other pipelines
            logger.exception("discovery failed on %s", entry)
            report = FolderReport(entry.name, entry, "invalid")
            report.error("", f"Fast-Flow could not read this folder ({type(exc).__name__}: {exc})")
        if report is not None:
            scan.folders.append(report)
    _check_cross_references(scan)
    return scan


def _inspect_entry(entry: Path, real_root: Path, tz_name: str) -> FolderReport | None:
    if entry.is_symlink() and not _inside(entry, real_root):
        return FolderReport(
            entry.name,
            entry,
            "rejected",
            reason=f"is a symlink to {entry.resolve()}, outside the pipelines directory",
        )
    if not entry.is_dir():
        return None  # plain files next to pipelines (README.md, ...) are not candidates
    if not is_pipeline_name(entry.name) or len(entry.name) > 100:
        return FolderReport(
            entry.name,
            entry,
            "rejected",
            reason="has a name Fast-Flow cannot use: only letters, digits, '-', '_' and '.' "
            "(not first), at most 100 characters; rename the folder",
        )
    has_script = (entry / "main.py").exists() or (entry / "main.py").is_symlink()
    has_notebook = (entry / "main.ipynb").exists() or (entry / "main.ipynb").is_symlink()
    if (
        not has_script
        and not has_notebook
        and detect_engine(entry) is None
        and not _says_models(entry, real_root)
    ):
        return FolderReport(
            entry.name,
            entry,
            "ignored",
            reason='has no main.py (nor main.ipynb with "type": "notebook", nor a dbt or '
            "FastFlowTransform project), so it is not a pipeline",
        )
    return _inspect_pipeline(entry, real_root, tz_name)


def _inspect_pipeline(folder: Path, real_root: Path, tz_name: str) -> FolderReport:
    report = FolderReport(folder.name, folder, "ok")
    config_name = _config_file_name(folder, report)
    if config_name:
        report.config_file = config_name
        data, duplicate_keys = _read_json(folder / config_name, real_root, report)
        if data is not None:
            result = parse_config(data, file=config_name, tz_name=tz_name)
            report.config = result.config
            report.errors.extend(result.errors)
            report.warnings.extend(result.warnings)
            for key in duplicate_keys:
                report.warn(config_name, "appears twice; the last one wins", key)

    _resolve_models_project(folder, real_root, report)
    entry_point = report.config.entry_point
    entry = folder / entry_point
    if not (entry.exists() or entry.is_symlink()):
        other = "main.py" if entry_point == "main.ipynb" else "main.ipynb"
        hint = (
            f'set "type": "{"script" if other == "main.py" else "notebook"}" in pipeline.json'
            if (folder / other).exists()
            else f"add {entry_point}"
        )
        report.error("", f"{entry_point} is missing; {hint}")
    elif not _inside(entry, real_root):
        report.error(entry_point, "is a symlink that leaves the pipelines directory")
    elif not entry.is_file():
        report.error(entry_point, "is not a regular file")

    _read_environment(folder, real_root, report)
    try:
        entries(folder)  # what its code bundle would hold (a size limit)
    except BundleError as problem:
        report.error("", str(problem))
    except OSError as problem:
        report.error("", f"its files cannot be read ({problem.strerror or problem})")
    if report.errors:
        report.status = "invalid"
    return report


def _says_models(folder: Path, real_root: Path) -> bool:
    """Whether pipeline.json asks for a models pipeline (then a missing project is an error
    shown on the pipeline, not a silently ignored folder)."""
    if not (folder / "pipeline.json").is_file():
        return False
    data, _ = _read_json(folder / "pipeline.json", real_root, FolderReport("", folder, "ok"))
    return isinstance(data, dict) and data.get("type") == "models"


def _resolve_models_project(folder: Path, real_root: Path, report: FolderReport) -> None:
    """A folder without main.py whose project file says dbt or FFT is a models pipeline
    (unless pipeline.json names another type); its engine is settled here, once."""
    config = report.config
    has_code = any((folder / name).exists() for name in ("main.py", "main.ipynb"))
    detected = detect_engine(folder)
    explicit_type = report.config_file and config.type != "script"
    if config.type != "models" and (explicit_type or has_code or detected is None):
        return
    engine = config.models.engine or detected
    if engine is None:
        report.error(
            report.config_file or "",
            '"type": "models" needs a dbt project (dbt_project.yml) or a FastFlowTransform '
            "project (project.yml with models/) in the folder, or models.engine",
            "type",
        )
        return
    models = replace(config.models, engine=engine)
    for command in models.commands:
        if command not in MODELS_COMMANDS[engine]:
            report.error(
                report.config_file,
                f"'{command}' is not a command of {engine}; use "
                + ", ".join(MODELS_COMMANDS[engine]),
                "models.commands",
            )
    python_version = config.python_version
    if engine == "fft" and not python_version:
        python_version = FFT_PYTHON  # FastFlowTransform needs Python 3.12 or newer
    report.config = replace(config, type="models", models=models, python_version=python_version)
    for file, message in project_problems(folder, engine, lambda p: _read_text(p, real_root)):
        report.error(file, message)


def _config_file_name(folder: Path, report: FolderReport) -> str:
    """pipeline.json wins over <folder name>.json."""
    candidates = [
        name for name in ("pipeline.json", f"{folder.name}.json") if (folder / name).exists()
    ]
    if len(candidates) == 2:
        report.warn(candidates[1], "is ignored because pipeline.json exists; delete one of them")
    return candidates[0] if candidates else ""


def _read_json(path: Path, real_root: Path, report: FolderReport) -> tuple[Any, list[str]]:
    duplicate_keys: list[str] = []

    def keep_last_and_note_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                duplicate_keys.append(key)
            seen[key] = value
        return seen

    try:
        text = _read_text(path, real_root)
    except _Unreadable as exc:
        report.error(path.name, str(exc))
        return None, []
    if not text.strip():
        report.error(path.name, 'is empty; write {} (or {"description": "..."}) or delete the file')
        return None, []
    try:
        data = json.loads(text, object_pairs_hook=keep_last_and_note_duplicates)
    except json.JSONDecodeError as exc:
        report.error(
            path.name,
            f"line {exc.lineno} column {exc.colno}: {exc.msg} — this is not valid JSON "
            "(check for a missing comma or quote, or a trailing comma)",
        )
        return None, []
    except RecursionError:
        report.error(path.name, "is nested too deeply to be read")
        return None, []
    return data, duplicate_keys


def _read_environment(folder: Path, real_root: Path, report: FolderReport) -> None:
    """Where its environment comes from (pipelines_app.environments), and its Python."""
    config = report.config

    def read(path: Path) -> str:
        try:
            return _read_text(path, real_root)
        except _Unreadable as problem:
            raise Unreadable(str(problem)) from None

    found = read_environment(
        folder,
        read,
        entry_point=config.entry_point,
        python_version=config.python_version,
        extras=config.environment.extras,
        groups=config.environment.groups,
    )
    for file, message in found.errors:
        report.error(file, message)
    for file, message in found.warnings:
        report.warn(file, message)
    report.requirements_file = found.source
    report.requirements_text = found.text
    report.requirements_hash = found.digest
    report.index_options = found.index_options
    if found.python_version != config.python_version:
        report.config = replace(config, python_version=found.python_version)
    if config.type == "models" and not found.source:
        engine = config.models.engine
        report.error(
            "requirements.txt",
            "is missing: a models run installs its engine from it (or from pyproject.toml), "
            "e.g. "
            + (
                '"dbt-core<1.12" and "dbt-duckdb<1.12"'
                if engine == "dbt"
                else '"fastflowtransform"'
            ),
        )


def _read_text(path: Path, real_root: Path) -> str:
    """A small UTF-8 text file inside the pipelines directory, or _Unreadable saying why."""
    if not _inside(path, real_root):
        raise _Unreadable("is a symlink that leaves the pipelines directory; it is not read")
    try:
        if not path.is_file():
            raise _Unreadable("is not a regular file")
        size = path.stat().st_size
        limit = settings.PIPELINE_CONFIG_MAX_BYTES
        if size > limit:
            raise _Unreadable(
                f"is {size / 1024:.0f} KiB; files of pipelines are read up to {limit // 1024} KiB"
            )
        raw = path.read_bytes()
    except PermissionError:
        raise _Unreadable("cannot be read (permission denied); make it readable") from None
    except OSError as exc:
        raise _Unreadable(f"cannot be read: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        raise _Unreadable(
            f"is not UTF-8 text (byte 0x{bad} at position {exc.start}); save it as UTF-8"
        ) from None


def _inside(path: Path, real_root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(real_root)
    except (OSError, RuntimeError):  # symlink loops
        return False


def _check_cross_references(scan: Scan) -> None:
    """Chaining names other pipelines; say so when they are not there."""
    by_name = {folder.name: folder for folder in scan.pipelines}
    for folder in scan.pipelines:
        for index, trigger in enumerate(folder.config.downstream_triggers):
            path = f"downstream_triggers[{index}]"
            target = by_name.get(trigger.pipeline)
            if target is None:
                folder.warn(
                    folder.config_file,
                    f"'{trigger.pipeline}' is not a pipeline here; this trigger does nothing",
                    f"{path}.pipeline",
                )
            elif trigger.run_config_id and target.config.schedule(trigger.run_config_id) is None:
                folder.warn(
                    folder.config_file,
                    f"'{trigger.run_config_id}' is not a schedules[].id of '{trigger.pipeline}'; "
                    "the started run would use that pipeline's defaults",
                    f"{path}.run_config_id",
                )


# --- Applying a scan to the database --------------------------------------------------------


def discover(root: Path | None = None) -> tuple[Scan, DiscoveryScan]:
    """Scan and update the catalogue; retried once if another process discovered concurrently."""
    inside = None
    if root is None:
        root, inside = pipelines_location()
    started_at = timezone.now()
    began = time.monotonic()
    scan = scan_pipelines(root, inside=inside)
    try:
        record = _apply(scan, started_at, began)
    except IntegrityError:
        record = _apply(scan, started_at, began)
    catalogue_changed.send(sender=DiscoveryScan, scan_record=record)
    return scan, record


@transaction.atomic
def _apply(scan: Scan, started_at, began: float) -> DiscoveryScan:
    now = timezone.now()
    existing = {pipeline.name: pipeline for pipeline in Pipeline.objects.all()}
    created = updated = invalid = missing = 0
    present: list[Pipeline] = []
    for folder in scan.pipelines:
        values = _row_values(folder)
        pipeline = existing.get(folder.name)
        if pipeline is None:
            pipeline = Pipeline.objects.create(
                name=folder.name, discovered_at=now, last_seen_at=now, **values
            )
            created += 1
        else:
            # Rescans are frequent (every sync); only rows whose folder changed are written.
            changed = [name for name, value in values.items() if getattr(pipeline, name) != value]
            if changed:
                for name in changed:
                    setattr(pipeline, name, values[name])
                pipeline.save(update_fields=[*changed, "updated_at"])
                pipeline.__dict__.pop("spec", None)
                updated += 1
        invalid += folder.status == "invalid"
        if folder.status == "ok":
            try:
                bundle_folder(pipeline)  # its code, stored for every worker node
            except (BundleError, OSError) as problem:  # changed since the scan: its runs say
                logger.warning("%s could not be bundled: %s", pipeline.name, problem)
        present.append(pipeline)
    sync_file_schedules(present, now)

    seen = {folder.name for folder in scan.pipelines}
    Pipeline.objects.filter(name__in=seen).update(last_seen_at=now)
    if not scan.error:
        # A directory that cannot be read says nothing about its pipelines: keep them as they are.
        missing = (
            Pipeline.objects.filter(state=Pipeline.State.PRESENT)
            .exclude(name__in=seen)
            .update(state=Pipeline.State.MISSING, missing_since=now, updated_at=now)
        )

    record = DiscoveryScan.objects.create(
        started_at=started_at,
        duration=timedelta(seconds=time.monotonic() - began),
        root=str(scan.root),
        root_error=scan.error,
        skipped_folders=[
            {"name": folder.name, "status": folder.status, "reason": folder.reason}
            for folder in scan.folders
            if not folder.is_pipeline
        ],
        created_count=created,
        updated_count=updated,
        missing_count=missing,
        invalid_count=invalid,
    )
    stale = DiscoveryScan.objects.values_list("pk", flat=True)[DiscoveryScan.KEEP :]
    DiscoveryScan.objects.filter(pk__in=list(stale)).delete()
    return record


def _row_values(folder: FolderReport) -> dict[str, Any]:
    config = folder.config
    return {
        "folder_path": str(folder.path),
        "config_file": folder.config_file,
        "description": config.description,
        "tags": list(config.tags),
        "enabled": config.enabled,
        "entry_type": config.type,
        "config": config.to_json(),
        "config_errors": [problem.to_json() for problem in folder.errors],
        "config_warnings": [problem.to_json() for problem in folder.warnings],
        "has_requirements": bool(folder.requirements_file),
        "requirements_file": folder.requirements_file,
        "requirements_hash": folder.requirements_hash,
        "requirements_text": folder.requirements_text,
        "index_options": folder.index_options,
        "state": Pipeline.State.PRESENT,
        "missing_since": None,
    }
