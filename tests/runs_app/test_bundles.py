"""Code bundles: a pipeline folder's content as one deterministic archive, stored once per
content; each run names the bundle it runs; a worker without the folder runs it from the
database; the cache on a node is bounded; bundles nothing names are removed."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from pipelines_app.bundles import archive, bundle_folder, fingerprint, safe_extract
from pipelines_app.discovery import discover
from pipelines_app.models import CodeBundle, Pipeline
from runs_app.models import PipelineRun, RunRefused
from runs_app.worker import code, retention
from runs_app.worker.code import code_folder
from tests.runs_app.conftest import every_executor, execute, output_lines

Status = PipelineRun.Status


def write_folder(folder: Path) -> Path:
    (folder / "lib").mkdir(parents=True)
    (folder / "main.py").write_text("from lib import x\nprint(x.VALUE)\n")
    (folder / "lib" / "__init__.py").write_text("")
    (folder / "lib" / "x.py").write_text("VALUE = 'from the bundle'\n")
    (folder / "run.sh").write_text("#!/bin/sh\n")
    (folder / "run.sh").chmod(0o755)
    (folder / "alias.py").symlink_to("main.py")  # a link inside: kept
    (folder / "passwd").symlink_to("/etc/passwd")  # a link out: left out
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    return folder


def test_an_archive_holds_the_code_and_nothing_else_the_same_every_time(tmp_path):
    first = write_folder(tmp_path / "one")
    data, files = archive(first)
    time.sleep(0.01)
    second = write_folder(tmp_path / "two")  # the same content, written later
    assert archive(second) == (data, files)  # deterministic: no times, owners or paths
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {member.name: member for member in tar.getmembers()}
    assert sorted(members) == ["alias.py", "lib/__init__.py", "lib/x.py", "main.py", "run.sh"]
    assert members["run.sh"].mode == 0o755 and members["main.py"].mode == 0o644
    assert members["alias.py"].issym() and members["alias.py"].linkname == "main.py"
    assert {member.mtime for member in members.values()} == {0}
    before = fingerprint(first)
    (first / "main.py").write_text("print('changed')\n")
    assert fingerprint(first) != before


@pytest.mark.django_db
def test_a_folder_over_the_limit_is_an_error_on_its_pipeline(make_pipeline, settings):
    settings.BUNDLE_MAX_MB = 1
    folder = make_pipeline("big")
    (folder / "data.bin").write_bytes(os.urandom(1024 * 1024 + 1))
    discover()
    pipeline = Pipeline.objects.get(name="big")
    assert not pipeline.is_valid
    assert "holds more than BUNDLE_MAX_MB (1 MB) of files" in " ".join(pipeline.error_messages)
    assert pipeline.bundle is None


@pytest.mark.django_db
def test_each_run_names_the_code_it_was_queued_with(make_pipeline, settings):
    folder = make_pipeline("etl", main="print('one')\n")
    make_pipeline("twin", main="print('one')\n")
    discover()
    etl = Pipeline.objects.get(name="etl")
    assert CodeBundle.objects.count() == 1  # the same content is stored once
    first = PipelineRun.enqueue(etl, trigger="manual")
    assert first.bundle == etl.bundle
    (folder / "main.py").write_text("print('two')\n")  # changed, not discovered again
    second = PipelineRun.enqueue(etl, trigger="manual")
    assert second.bundle != first.bundle and CodeBundle.objects.count() == 2
    retry = PipelineRun.enqueue(etl, trigger="retry", retry_of=first)
    assert retry.bundle == first.bundle  # a retry runs the very code that failed
    settings.WORKER_NAME = "elsewhere"  # another node's folder at that path: another copy
    (folder / "main.py").write_text("print('a copy on another node')\n")
    assert PipelineRun.enqueue(etl, trigger="manual").bundle == second.bundle
    settings.WORKER_NAME = etl.bundle_node
    Pipeline.objects.filter(pk=etl.pk).update(bundle_commit="0" * 40)
    etl.refresh_from_db()  # from git: its code changes only by a sync
    assert PipelineRun.enqueue(etl, trigger="manual").bundle == second.bundle
    shutil.rmtree(folder)  # not on this node: the stored bundle serves
    assert PipelineRun.enqueue(etl, trigger="manual").bundle == second.bundle
    Pipeline.objects.filter(pk=etl.pk).update(bundle=None)
    etl.refresh_from_db()
    with pytest.raises(RunRefused, match="its code was never bundled"):
        PipelineRun.enqueue(etl, trigger="manual")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("runs_setup")
@every_executor
def test_a_node_without_the_folder_runs_the_code_from_the_database(make_pipeline, executor):
    folder = write_folder(make_pipeline("far", main=None))
    discover()
    run = PipelineRun.enqueue(Pipeline.objects.get(name="far"), trigger="manual")
    shutil.rmtree(folder)  # this worker node has no pipelines folder at all
    run = execute(run)
    assert run.status == Status.SUCCEEDED, run.error_message
    assert output_lines(run) == ["from the bundle"]
    unpacked = code.cache_root() / run.bundle.sha256 / "code"
    assert (unpacked / "lib" / "x.py").stat().st_mode & 0o777 == 0o444  # read-only


@pytest.mark.django_db
def test_the_nodes_cache_keeps_what_runs_and_drops_the_least_used(
    make_pipeline, settings, tmp_path
):
    settings.DATA_DIR = tmp_path / "data"
    settings.BUNDLE_CACHE_MB = 1
    bundles = []
    for number in range(3):
        folder = make_pipeline(f"p{number}")
        (folder / "blob").write_bytes(os.urandom(400 * 1024))
    discover()
    for number in range(3):
        pipeline = Pipeline.objects.get(name=f"p{number}")
        bundles.append(pipeline.bundle)
    running = PipelineRun.enqueue(Pipeline.objects.get(name="p0"), trigger="manual")
    PipelineRun.objects.filter(pk=running.pk).update(
        status=Status.RUNNING, worker_id=f"{os.uname().nodename}:1:t"
    )
    old = time.time() - 3600
    for bundle in bundles[:2]:
        code_folder(bundle.pk)
        os.utime(code.cache_root() / bundle.sha256 / code.COMPLETE, (old, old))
    code_folder(bundles[2].pk)  # over 1 MB now: the least used that no run runs goes
    cached = {home.name for home in code.cache_root().iterdir()}
    assert cached == {bundles[0].sha256, bundles[2].sha256}


@pytest.mark.django_db
def test_bundles_nothing_names_are_removed_daily(make_pipeline):
    folder = make_pipeline("etl", main="print('one')\n")
    discover()
    etl = Pipeline.objects.get(name="etl")
    run = PipelineRun.enqueue(etl, trigger="manual")
    (folder / "main.py").write_text("print('two')\n")
    bundle_folder(etl)
    (folder / "main.py").write_text("print('three')\n")
    bundle_folder(etl)  # 'two' is named by nothing now
    assert CodeBundle.objects.count() == 3
    assert retention.apply().bundles_removed == 1
    assert set(CodeBundle.objects.all()) == {run.bundle, Pipeline.objects.get(pk=etl.pk).bundle}


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        (("../escape.py", tarfile.REGTYPE, ""), "leaves the folder"),
        (("/etc/cron.d/x", tarfile.REGTYPE, ""), "leaves the folder"),
        (("out", tarfile.SYMTYPE, "/etc/passwd"), "leads out of the folder"),
        (("up", tarfile.SYMTYPE, "../../etc"), "leads out of the folder"),
        (("null", tarfile.CHRTYPE, ""), "is not a file, a folder or a link"),
    ],
)
def test_an_archive_that_would_leave_its_folder_is_refused(tmp_path, member, problem):
    name, kind, link = member
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar, pytest.raises(tarfile.TarError, match=problem):
        safe_extract(tar, tmp_path / "into")
    assert not (tmp_path / "escape.py").exists()
