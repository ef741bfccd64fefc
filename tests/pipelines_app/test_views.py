"""The pipelines pages: what a person sees, including why a pipeline cannot run."""

from __future__ import annotations

import pytest
from django.urls import reverse

from pipelines_app.discovery import discover

pytestmark = pytest.mark.django_db


def test_pipeline_list_shows_the_catalogue_with_errors(viewer_client, example_pipelines):
    (example_pipelines / "notes").mkdir()
    discover()
    response = viewer_client.get(reverse("pipelines_app:list"))
    assert response.status_code == 200
    html = response.content.decode()
    for name in ("hello_world", "with_requirements", "slow_counter", "broken_config"):
        assert f'id="pipeline-{name}"' in html
    assert "Says hello and exits 0." in html
    assert "requirements.txt" in html
    assert (
        "pipeline.json: mem_hard_limit &#x27;1.5x&#x27; is not a size; use e.g. 512m, 1.5g, 2Gi"
        in html
    )
    assert "1 pipeline cannot run until its configuration is fixed" in html
    assert "✖ invalid" in html and "✔ ok" in html  # an icon and a word, not colour alone
    assert "<code>notes</code> (ignored)" in html


def test_pipeline_list_empty_state(viewer_client, pipelines_dir):
    response = viewer_client.get(reverse("pipelines_app:list"))
    assert response.status_code == 200
    assert "No pipelines yet." in response.content.decode()


def test_pipeline_list_shows_a_missing_directory(viewer_client, pipelines_dir, settings):
    settings.PIPELINES_DIR = pipelines_dir / "gone"
    discover()
    html = viewer_client.get(reverse("pipelines_app:list")).content.decode()
    assert f"The pipelines directory {pipelines_dir / 'gone'} does not exist" in html


def test_pipeline_list_lists_missing_pipelines_apart(viewer_client, make_pipeline):
    import shutil

    folder = make_pipeline("old")
    discover()
    shutil.rmtree(folder)
    discover()
    html = viewer_client.get(reverse("pipelines_app:list")).content.decode()
    assert "Missing pipelines" in html and 'href="/pipelines/old/"' in html
    assert 'id="pipeline-old"' not in html


def test_pipeline_detail_shows_the_parsed_configuration(viewer_client, make_pipeline):
    make_pipeline(
        "etl",
        config={
            "description": "Loads",
            "mem_hard_limit": "512m",
            "cpu_hard_limit": 1.5,
            "timeout": 600,
            "retry_attempts": 2,
            "retry_strategy": {"type": "fixed_delay", "delay": 5},
            "default_env": {"REGION": "eu-west-1"},
            "schedules": [{"id": "nightly", "schedule_cron": "0 3 * * *"}],
            "downstream_triggers": [{"pipeline": "report", "on_route": "full"}],
        },
        requirements="requests==2.32.3\n",
    )
    discover()
    response = viewer_client.get(reverse("pipelines_app:detail", args=["etl"]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "512 MiB" in html and "1.5 cores" in html and "10 min" in html
    assert "2, fixed_delay" in html
    assert "<code>REGION</code>" in html and "eu-west-1" not in html  # names, not values
    assert '<tr id="schedule-nightly">' in html and "cron 0 3 * * * (UTC)" in html
    assert "when route is “full”" in html
    assert "requests==2.32.3" in html


def test_pipeline_detail_shows_instance_defaults_where_the_pipeline_sets_none(
    viewer_client, make_pipeline, settings
):
    settings.CONTAINER_TIMEOUT = 3600
    settings.RETRY_ATTEMPTS = 1
    settings.RUN_CPU_LIMIT, settings.RUN_MEMORY_LIMIT = 2.0, 4 * 1024**3
    make_pipeline("plain")
    discover()
    html = viewer_client.get(reverse("pipelines_app:detail", args=["plain"])).content.decode()
    default = '<span class="muted small">(instance default, {})</span>'
    assert f'<dd class="limit-timeout">1 h {default.format("CONTAINER_TIMEOUT")}</dd>' in html
    assert "<dt>Retries</dt><dd>1 (instance default)</dd>" in html
    # What every run gets when pipeline.json sets no limit: the instance's, never "no limit".
    assert f'<dd class="limit-cpu">2 cores {default.format("RUN_CPU_LIMIT")}</dd>' in html
    assert f'<dd class="limit-memory">4 GiB {default.format("RUN_MEMORY_LIMIT")}</dd>' in html


def test_pipeline_detail_of_a_broken_pipeline_lists_its_errors(viewer_client, make_pipeline):
    make_pipeline("bad", config="{oops")
    discover()
    html = viewer_client.get(reverse("pipelines_app:detail", args=["bad"])).content.decode()
    assert "pipeline.json: line 1 column 2" in html


def test_pipeline_detail_404(viewer_client):
    assert viewer_client.get(reverse("pipelines_app:detail", args=["nope"])).status_code == 404


def test_home_is_the_dashboard(viewer_client, pipelines_dir):
    response = viewer_client.get("/")
    assert response.status_code == 200
    assert "<h1>Dashboard</h1>" in response.content.decode()


def test_htmx_is_served_from_our_static_files(viewer_client, pipelines_dir):
    html = viewer_client.get(reverse("pipelines_app:list")).content.decode()
    assert '<script src="/static/django_htmx/htmx-2.min.js"' in html
    assert "https://" not in html.split("<body")[0]  # no CDN in <head>


def test_logout_is_a_post_and_works(viewer_client):
    response = viewer_client.post(reverse("account_logout"))
    assert response.status_code == 302
    assert viewer_client.get(reverse("pipelines_app:list")).status_code == 302


def test_pipeline_list_search_and_tag_filter(viewer_client, example_pipelines):
    discover()
    url = reverse("pipelines_app:list")
    html = viewer_client.get(url + "?q=memory").content.decode()
    assert 'id="pipeline-memory_hog"' in html and 'id="pipeline-hello_world"' not in html
    html = viewer_client.get(url + "?q=HELLO").content.decode()
    assert 'id="pipeline-hello_world"' in html and html.count('<tr id="pipeline-') == 1
    html = viewer_client.get(url + "?tag=limits").content.decode()
    assert html.split('<tr id="pipeline-')[1].startswith("memory_hog")
    assert html.count('<tr id="pipeline-') == 1
    html = viewer_client.get(url + "?q=nothing-like-this").content.decode()
    assert "No pipeline matches." in html and "show all" in html
