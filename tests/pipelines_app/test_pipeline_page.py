"""A pipeline's page in the order people need it (overview, runs, schedules and webhooks,
configuration, dependencies, code, models), and its deployed code, highlighted."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.utils import timezone

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun

pytestmark = pytest.mark.django_db


def test_sections_come_in_order(viewer_client, make_pipeline):
    make_pipeline("nightly", config={"schedule_cron": "0 3 * * *"}, requirements="six\n")
    discover()
    html = viewer_client.get("/pipelines/nightly/").content.decode()
    order = [
        'id="overview"',
        'id="recent-runs"',
        'id="schedules-and-webhooks"',
        'id="configuration"',
        'id="dependencies"',
        'id="code"',
    ]
    places = [html.index(marker) for marker in order]
    assert places == sorted(places)
    for anchor in ["#overview", "#recent-runs", "#schedules-and-webhooks", "#configuration"]:
        assert f'href="{anchor}"' in html  # the section bar jumps to each
    assert 'href="/pipelines/nightly/code/"' in html


def test_overview_success_rate_trend_and_next_run(viewer_client, make_pipeline):
    make_pipeline("nightly", config={"schedule_cron": "0 3 * * *"})
    discover()
    pipeline = Pipeline.objects.get(name="nightly")
    now = timezone.now()
    for status in ["succeeded", "succeeded", "succeeded", "failed"]:
        PipelineRun.objects.create(
            pipeline=pipeline,
            status=status,
            started_at=now - timedelta(seconds=40),
            finished_at=now - timedelta(seconds=10),
        )
    PipelineRun.objects.create(pipeline=pipeline, status="queued")
    html = viewer_client.get("/pipelines/nightly/").content.decode()
    assert 'id="success-rate">75 %' in html  # 3 of the 4 that ended
    assert html.count('<rect class="bar-') == 5  # a bar per run, the queued one too
    assert "succeeded, 30.0 s" in html
    next_run = html[html.index('id="next-run"') :][:300]
    assert "<time datetime=" in next_run


def test_overview_without_runs_or_schedules(viewer_client, make_pipeline):
    make_pipeline("idle")
    discover()
    html = viewer_client.get("/pipelines/idle/").content.decode()
    assert 'id="success-rate">—' in html
    assert "No runs yet." in html
    assert "no schedule" in html


def test_code_page_shows_the_entry_point_highlighted(viewer_client, make_pipeline):
    folder = make_pipeline("tidy", main='import os\n\ndef main():\n    print("<hi>")  # say it\n')
    (folder / "lib").mkdir()
    (folder / "lib" / "helpers.py").write_text("VALUE = 42\n")
    discover()
    html = viewer_client.get("/pipelines/tidy/code/").content.decode()
    assert 'href="?file=main.py" aria-current="page"' in html
    assert 'href="?file=lib/helpers.py"' in html
    assert '<span class="kn">import</span>' in html  # tokens marked by Pygments
    assert "&lt;hi&gt;" in html and "<hi>" not in html  # the code is escaped
    assert 'href="#line-4"' in html  # lines can be linked to
    html = viewer_client.get("/pipelines/tidy/code/", {"file": "lib/helpers.py"}).content.decode()
    assert '<span class="mi">42</span>' in html


def test_code_page_reads_only_the_stored_version(viewer_client, make_pipeline, tmp_path):
    folder = make_pipeline("sly")
    outside = tmp_path / "outside.txt"
    outside.write_text("the host's secret\n")
    os.symlink(outside, folder / "leak.txt")  # leads out: never bundled
    os.symlink("main.py", folder / "alias.py")  # stays inside: listed as a link
    (folder / "blob.bin").write_bytes(b"\x00\x01binary")
    discover()
    client = viewer_client
    html = client.get("/pipelines/sly/code/").content.decode()
    assert "leak.txt" not in html
    for path, words in [
        ("alias.py", "a link to main.py"),
        ("blob.bin", "not text"),
        ("../outside.txt", "This version has no file ../outside.txt"),
        ("/etc/passwd", "This version has no file /etc/passwd"),
        ("leak.txt", "This version has no file leak.txt"),
    ]:
        response = client.get("/pipelines/sly/code/", {"file": path})
        assert response.status_code == 200
        assert words in response.content.decode()
        assert "the host's secret" not in response.content.decode()
    (folder / "main.py").write_text("print('changed on disk')\n")  # not deployed yet
    assert "changed on disk" not in client.get("/pipelines/sly/code/").content.decode()


def test_code_page_of_a_pipeline_without_a_stored_version(viewer_client, make_pipeline):
    make_pipeline("broken", config="{not json")
    discover()
    response = viewer_client.get("/pipelines/broken/code/")
    assert response.status_code == 200
    assert "No version of its code is stored yet" in response.content.decode()


def test_code_page_needs_a_login(client, make_pipeline):
    make_pipeline("tidy")
    discover()
    response = client.get("/pipelines/tidy/code/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_a_big_version_is_read_each_time_not_kept(viewer_client, make_pipeline, monkeypatch):
    from pipelines_app import deployed_code

    monkeypatch.setattr(deployed_code, "KEPT_UP_TO", 0)
    deployed_code._kept.cache_clear()
    make_pipeline("big", main="print('a big one')\n")
    discover()
    html = viewer_client.get("/pipelines/big/code/").content.decode()
    assert "a big one" in html
    assert deployed_code._kept.cache_info().currsize == 0


def test_the_configuration_says_which_executor_runs_it_and_its_network(
    viewer_client, make_pipeline, settings
):
    settings.FASTFLOW_EXECUTOR, settings.PIPELINE_EXECUTORS = "docker", ["sandbox"]
    make_pipeline("plain")
    make_pipeline("boxed", config={"executor": "sandbox", "network": False})
    make_pipeline("refused", config={"executor": "docker"})
    settings.FASTFLOW_EXECUTOR = "sandbox"  # docker is not among PIPELINE_EXECUTORS
    discover()

    def shown(name: str, field: str) -> str:
        html = viewer_client.get(f"/pipelines/{name}/").content.decode()
        start = html.index(f'id="pipeline-{field}">') + len(f'id="pipeline-{field}">')
        return html[start : html.index("</dd>", start)]

    assert shown("plain", "executor") == "sandbox (this instance's)"
    assert shown("plain", "network") == "yes"
    assert shown("boxed", "executor") == "sandbox (its pipeline.json)"
    assert shown("boxed", "network").startswith("none: its runs have only their own loopback")
    refused = shown("refused", "executor")
    assert refused.startswith("docker (its pipeline.json)")
    assert "its runs cannot start: its pipeline.json asks for the docker executor" in refused
    assert "PIPELINE_EXECUTORS: sandbox; runs here take sandbox" in refused
