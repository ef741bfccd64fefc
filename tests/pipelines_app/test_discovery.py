"""Discovery reads folders people made, mistakes included, and never lets one hide another."""

from __future__ import annotations

import json

import pytest

from pipelines_app.discovery import discover, scan_pipelines
from pipelines_app.models import DiscoveryScan, Pipeline

pytestmark = pytest.mark.django_db


def statuses(scan) -> dict[str, str]:
    return {folder.name: folder.status for folder in scan.folders}


def messages_of(pipeline_or_report) -> list[str]:
    errors = getattr(pipeline_or_report, "errors", None)
    if errors is not None:
        return [problem.message for problem in errors]
    return pipeline_or_report.error_messages


def test_a_folder_with_main_py_is_a_pipeline(make_pipeline):
    make_pipeline("hello", config=None)
    _scan, record = discover()
    pipeline = Pipeline.objects.get(name="hello")
    assert pipeline.status == "ok"
    assert pipeline.entry_type == "script"
    assert pipeline.config_file == ""
    assert pipeline.spec.entry_point == "main.py"
    assert record.created_count == 1 and record.invalid_count == 0


def test_every_stored_field_comes_from_the_folder(make_pipeline):
    make_pipeline(
        "etl",
        config={
            "description": "Loads things",
            "tags": ["nightly"],
            "enabled": False,
            "mem_hard_limit": "256m",
            "schedule_cron": "0 3 * * *",
        },
        requirements="requests==2.32.3\n",
    )
    discover()
    pipeline = Pipeline.objects.get(name="etl")
    assert pipeline.description == "Loads things"
    assert pipeline.tags == ["nightly"]
    assert pipeline.enabled is False
    assert pipeline.status == "disabled"
    assert pipeline.is_runnable  # a disabled pipeline can still be run by hand
    assert pipeline.config_file == "pipeline.json"
    assert pipeline.has_requirements and pipeline.requirements_file == "requirements.txt"
    assert pipeline.requirements_text == "requests==2.32.3\n"
    assert len(pipeline.requirements_hash) == 64
    assert pipeline.spec.run.mem_hard_limit_bytes == 256 * 1024**2
    assert pipeline.spec.schedules[0].cron == "0 3 * * *"


def test_requirements_lock_wins_over_requirements_txt(make_pipeline):
    folder = make_pipeline("locked", requirements="requests\n")
    (folder / "requirements.txt.lock").write_text("requests==2.32.3\n")
    discover()
    pipeline = Pipeline.objects.get(name="locked")
    assert pipeline.requirements_file == "requirements.txt.lock"
    assert pipeline.requirements_text == "requests==2.32.3\n"


def test_requirements_hash_changes_with_the_content(make_pipeline):
    folder = make_pipeline("deps", requirements="requests\n")
    discover()
    first = Pipeline.objects.get(name="deps").requirements_hash
    (folder / "requirements.txt").write_text("requests\npandas\n")
    discover()
    assert Pipeline.objects.get(name="deps").requirements_hash != first


def test_named_json_is_read_and_pipeline_json_wins_over_it(make_pipeline):
    make_pipeline("alt", config={"description": "from alt.json"}, config_name="alt.json")
    both = make_pipeline("both", config={"description": "from pipeline.json"})
    (both / "both.json").write_text(json.dumps({"description": "from both.json"}))
    _scan, _ = discover()
    assert Pipeline.objects.get(name="alt").description == "from alt.json"
    assert Pipeline.objects.get(name="alt").config_file == "alt.json"
    winner = Pipeline.objects.get(name="both")
    assert winner.description == "from pipeline.json"
    assert winner.warning_messages == [
        "both.json: is ignored because pipeline.json exists; delete one of them"
    ]


def test_notebook_pipeline(make_pipeline):
    folder = make_pipeline("nb", config={"type": "notebook"}, main=None)
    (folder / "main.ipynb").write_text('{"cells": []}')
    discover()
    pipeline = Pipeline.objects.get(name="nb")
    assert pipeline.status == "ok"
    assert pipeline.entry_type == "notebook"


def test_notebook_without_type_says_how_to_fix_it(make_pipeline):
    folder = make_pipeline("nb", main=None)
    (folder / "main.ipynb").write_text('{"cells": []}')
    scan = scan_pipelines(folder.parent)
    assert messages_of(scan.folders[0]) == [
        'main.py is missing; set "type": "notebook" in pipeline.json'
    ]


def test_notebook_type_without_the_notebook_file(make_pipeline):
    folder = make_pipeline("nb", config={"type": "notebook"})
    scan = scan_pipelines(folder.parent)
    assert messages_of(scan.folders[0]) == [
        'main.ipynb is missing; set "type": "script" in pipeline.json'
    ]


def test_folder_without_entry_point_is_listed_as_ignored(make_pipeline, pipelines_dir):
    make_pipeline("notes", main=None, config={"description": "just docs"})
    make_pipeline("real")
    scan, record = discover()
    assert statuses(scan) == {"notes": "ignored", "real": "ok"}
    assert record.skipped_folders == [
        {
            "name": "notes",
            "status": "ignored",
            "reason": 'has no main.py (nor main.ipynb with "type": "notebook", nor a dbt or '
            "FastFlowTransform project), so it is not a pipeline",
        }
    ]
    assert list(Pipeline.objects.values_list("name", flat=True)) == ["real"]


def test_hidden_folders_and_plain_files_are_not_candidates(make_pipeline, pipelines_dir):
    make_pipeline(".git")
    (pipelines_dir / "README.md").write_text("# my pipelines")
    make_pipeline("real")
    assert statuses(scan_pipelines(pipelines_dir)) == {"real": "ok"}


@pytest.mark.parametrize(
    "name", ["with space", "ümlaut", "semi;colon", "$money", "a" * 101, "trailing\n"]
)
def test_folder_names_outside_the_allowed_characters_are_rejected(
    make_pipeline, pipelines_dir, name
):
    make_pipeline(name)
    make_pipeline("fine.name-1_x")
    scan = scan_pipelines(pipelines_dir)
    assert statuses(scan) == {name: "rejected", "fine.name-1_x": "ok"}
    assert (
        "has a name Fast-Flow cannot use"
        in scan.folders[[f.name for f in scan.folders].index(name)].reason
    )


def test_symlinked_folder_outside_the_directory_is_rejected(make_pipeline, pipelines_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "main.py").write_text("print('escaped')")
    (pipelines_dir / "escape").symlink_to(outside)
    make_pipeline("inside")
    (pipelines_dir / "alias").symlink_to(pipelines_dir / "inside")
    scan = scan_pipelines(pipelines_dir)
    assert statuses(scan) == {"alias": "ok", "escape": "rejected", "inside": "ok"}
    escape = next(f for f in scan.folders if f.name == "escape")
    assert escape.reason == f"is a symlink to {outside}, outside the pipelines directory"


def test_symlinked_files_that_leave_the_directory_are_refused(make_pipeline, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("db-password")
    folder = make_pipeline("sneaky", main=None)
    (folder / "main.py").symlink_to(secret)
    (folder / "pipeline.json").symlink_to(secret)
    (folder / "requirements.txt").symlink_to(secret)
    scan = scan_pipelines(folder.parent)
    report = scan.folders[0]
    assert report.status == "invalid"
    assert messages_of(report) == [
        "pipeline.json: is a symlink that leaves the pipelines directory; it is not read",
        "main.py: is a symlink that leaves the pipelines directory",
        "requirements.txt: is a symlink that leaves the pipelines directory; it is not read",
    ]
    assert "db-password" not in repr(report)


def test_json_syntax_error_names_line_and_column(make_pipeline):
    folder = make_pipeline("typo", config='{\n  "timeout": 10,\n  "tags": ["a",]\n}')
    report = scan_pipelines(folder.parent).folders[0]
    assert report.status == "invalid"
    (message,) = messages_of(report)
    assert message.startswith("pipeline.json: line 3 column 16: Expecting value")
    assert "not valid JSON" in message


def test_empty_json_file(make_pipeline):
    folder = make_pipeline("empty", config="  \n")
    (message,) = messages_of(scan_pipelines(folder.parent).folders[0])
    assert (
        message
        == 'pipeline.json: is empty; write {} (or {"description": "..."}) or delete the file'
    )


def test_json_that_is_not_an_object(make_pipeline):
    folder = make_pipeline("list", config="[1, 2]")
    (message,) = messages_of(scan_pipelines(folder.parent).folders[0])
    assert message.startswith("pipeline.json: must hold a JSON object ({...}), not list")


def test_non_utf8_file(make_pipeline):
    folder = make_pipeline("latin1")
    (folder / "pipeline.json").write_bytes('{"description": "Größe"}'.encode("latin-1"))
    (message,) = messages_of(scan_pipelines(folder.parent).folders[0])
    assert message == (
        "pipeline.json: is not UTF-8 text (byte 0xf6 at position 19); save it as UTF-8"
    )


def test_utf8_with_byte_order_mark_is_fine(make_pipeline):
    folder = make_pipeline("bom")
    (folder / "pipeline.json").write_bytes('\ufeff{"description": "Größe"}'.encode())
    report = scan_pipelines(folder.parent).folders[0]
    assert report.status == "ok" and report.config.description == "Größe"


def test_unreadable_file(make_pipeline, monkeypatch):
    """CI runs as root, who reads everything: the permission error is raised where it occurs."""
    from pathlib import Path

    folder = make_pipeline("locked", config={})
    real_read_bytes = Path.read_bytes

    def deny(path):
        if path.name == "pipeline.json":
            raise PermissionError(13, "Permission denied")
        return real_read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", deny)
    (message,) = messages_of(scan_pipelines(folder.parent).folders[0])
    assert message == "pipeline.json: cannot be read (permission denied); make it readable"


def test_gigantic_files_are_not_read(make_pipeline, settings):
    settings.PIPELINE_CONFIG_MAX_BYTES = 4096
    folder = make_pipeline("huge", config='{"description": "' + "x" * 10_000 + '"}')
    (folder / "requirements.txt").write_text("requests\n" * 1000)
    report = scan_pipelines(folder.parent).folders[0]
    assert messages_of(report) == [
        "pipeline.json: is 10 KiB; files of pipelines are read up to 4 KiB",
        "requirements.txt: is 9 KiB; files of pipelines are read up to 4 KiB",
    ]


def test_deeply_nested_json(make_pipeline):
    folder = make_pipeline("deep", config="[" * 100_000 + "]" * 100_000)
    (message,) = messages_of(scan_pipelines(folder.parent).folders[0])
    assert message == "pipeline.json: is nested too deeply to be read"


def test_duplicate_keys_warn_and_the_last_wins(make_pipeline):
    folder = make_pipeline("dup", config='{"timeout": 5, "timeout": 10}')
    report = scan_pipelines(folder.parent).folders[0]
    assert report.config.run.timeout_seconds == 10
    assert [w.message for w in report.warnings] == [
        "pipeline.json: timeout appears twice; the last one wins"
    ]


def test_main_py_that_is_a_directory(make_pipeline):
    folder = make_pipeline("odd", main=None)
    (folder / "main.py").mkdir()
    assert messages_of(scan_pipelines(folder.parent).folders[0]) == [
        "main.py: is not a regular file"
    ]


def test_one_broken_folder_never_hides_the_others(make_pipeline, pipelines_dir):
    make_pipeline("a_good")
    make_pipeline("b_broken", config="{not json")
    make_pipeline("c_bad_name!")
    make_pipeline("d_good", config={"mem_hard_limit": "1.5x", "timeout": -1})
    make_pipeline("e_good")
    scan, record = discover()
    assert statuses(scan) == {
        "a_good": "ok",
        "b_broken": "invalid",
        "c_bad_name!": "rejected",
        "d_good": "invalid",
        "e_good": "ok",
    }
    assert Pipeline.objects.count() == 4
    assert record.invalid_count == 2
    broken = Pipeline.objects.get(name="d_good")
    assert not broken.is_runnable
    assert broken.error_messages == [
        "pipeline.json: mem_hard_limit '1.5x' is not a size; use e.g. 512m, 1.5g, 2Gi",
        "pipeline.json: timeout -1 must be at least 0 of seconds (0 = no limit)",
    ]


def test_an_unexpected_failure_in_one_folder_becomes_its_error(make_pipeline, monkeypatch):
    import pipelines_app.discovery as discovery

    make_pipeline("fine")
    make_pipeline("cursed")
    real = discovery._inspect_pipeline

    def explode(folder, *args):
        if folder.name == "cursed":
            raise RuntimeError("disk on fire")
        return real(folder, *args)

    monkeypatch.setattr(discovery, "_inspect_pipeline", explode)
    scan, _ = discover()
    assert statuses(scan) == {"cursed": "invalid", "fine": "ok"}
    assert Pipeline.objects.get(name="cursed").error_messages == [
        "Fast-Flow could not read this folder (RuntimeError: disk on fire)"
    ]


def test_a_fixed_folder_becomes_valid_again(make_pipeline):
    folder = make_pipeline("flaky", config={"timeout": "x"})
    discover()
    assert Pipeline.objects.get(name="flaky").status == "invalid"
    (folder / "pipeline.json").write_text('{"timeout": 5}')
    discover()
    pipeline = Pipeline.objects.get(name="flaky")
    assert pipeline.status == "ok" and pipeline.config_errors == []


def test_a_removed_folder_becomes_missing_and_keeps_its_history(make_pipeline, pipelines_dir):
    import shutil

    from runs_app.models import PipelineRun

    folder = make_pipeline("gone")
    discover()
    pipeline = Pipeline.objects.get(name="gone")
    PipelineRun.objects.create(pipeline=pipeline, status=PipelineRun.Status.SUCCEEDED)
    shutil.rmtree(folder)
    _, record = discover()
    pipeline.refresh_from_db()
    assert record.missing_count == 1
    assert pipeline.state == Pipeline.State.MISSING and pipeline.status == "missing"
    assert pipeline.missing_since is not None
    assert not pipeline.is_runnable
    assert pipeline.runs.count() == 1

    make_pipeline("gone")
    discover()
    pipeline.refresh_from_db()
    assert pipeline.state == Pipeline.State.PRESENT and pipeline.missing_since is None


def test_a_missing_pipelines_directory_marks_nothing_missing(
    make_pipeline, pipelines_dir, settings
):
    make_pipeline("kept")
    discover()
    settings.PIPELINES_DIR = pipelines_dir / "not-there"
    scan, record = discover()
    assert scan.error.startswith(
        f"The pipelines directory {pipelines_dir / 'not-there'} does not exist"
    )
    assert record.root_error == scan.error
    assert Pipeline.objects.get(name="kept").state == Pipeline.State.PRESENT


def test_pipelines_subdir(pipelines_dir, settings):
    (pipelines_dir / "jobs" / "nested").mkdir(parents=True)
    (pipelines_dir / "jobs" / "nested" / "main.py").write_text("print(1)")
    settings.PIPELINES_SUBDIR = "jobs"
    scan, _ = discover()
    assert statuses(scan) == {"nested": "ok"}


def test_a_pipelines_subdir_that_links_out_of_the_tree_is_refused(
    make_pipeline, pipelines_dir, settings, tmp_path
):
    make_pipeline("kept")
    discover()
    outside = tmp_path / "elsewhere"
    (outside / "sneaky").mkdir(parents=True)
    (outside / "sneaky" / "main.py").write_text("print('from outside')")
    (pipelines_dir / "jobs").symlink_to(outside)
    settings.PIPELINES_SUBDIR = "jobs"
    scan, record = discover()
    assert scan.error.startswith(f"The pipelines folder {pipelines_dir / 'jobs'} is a link to")
    assert record.root_error == scan.error
    assert not Pipeline.objects.filter(name="sneaky").exists()
    assert Pipeline.objects.get(name="kept").state == Pipeline.State.PRESENT  # not "missing"


def test_downstream_trigger_to_an_unknown_pipeline_or_config_is_a_warning(make_pipeline):
    make_pipeline("target", config={"schedules": [{"id": "prod"}]})
    make_pipeline(
        "source",
        config={
            "downstream_triggers": [
                {"pipeline": "nowhere"},
                {"pipeline": "target", "run_config_id": "staging"},
                {"pipeline": "target", "run_config_id": "prod"},
            ]
        },
    )
    discover()
    source = Pipeline.objects.get(name="source")
    assert source.status == "ok"
    assert source.warning_messages == [
        "pipeline.json: downstream_triggers[0].pipeline 'nowhere' is not a pipeline here; "
        "this trigger does nothing",
        "pipeline.json: downstream_triggers[1].run_config_id 'staging' is not a schedules[].id "
        "of 'target'; the started run would use that pipeline's defaults",
    ]


def test_discovery_keeps_a_bounded_history_of_scans(make_pipeline, monkeypatch):
    monkeypatch.setattr(DiscoveryScan, "KEEP", 3)
    make_pipeline("p")
    for _ in range(5):
        discover()
    assert DiscoveryScan.objects.count() == 3


def test_the_examples_are_all_valid_but_the_broken_one(example_pipelines):
    scan, _ = discover()
    assert statuses(scan) == {
        "always_fails": "ok",
        "broken_config": "invalid",
        "hello_world": "ok",
        "memory_hog": "ok",
        "print_env": "ok",
        "shop_models": "ok",
        "slow_counter": "ok",
        "with_requirements": "ok",
    }
    broken = Pipeline.objects.get(name="broken_config")
    assert "pipeline.json: mem_hard_limit '1.5x' is not a size; use e.g. 512m, 1.5g, 2Gi" in (
        broken.error_messages
    )


def test_a_rescan_writes_only_what_changed(make_pipeline):
    make_pipeline("same")
    changing = make_pipeline("changing", config={"timeout": 5})
    discover()
    before = Pipeline.objects.get(name="same")
    (changing / "pipeline.json").write_text('{"timeout": 6}')
    _, record = discover()
    assert record.created_count == 0 and record.updated_count == 1
    after = Pipeline.objects.get(name="same")
    assert after.updated_at == before.updated_at
    assert after.last_seen_at > before.last_seen_at
    assert Pipeline.objects.get(name="changing").spec.run.timeout_seconds == 6
