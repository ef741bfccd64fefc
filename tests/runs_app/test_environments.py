"""Pipelines' environments as people declare them, in real containers (fresh and pooled):
what a warm-up resolves becomes a lock that every run installs exactly, offline, from the
read-only shared cache — wheels built from source included — and records."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from uv import find_uv_bin

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.models import EnvironmentLock, PipelineRun
from runs_app.worker.warming import warm
from secrets_app.models import Variable
from tests.runs_app.conftest import execute, log_text, output_lines, require
from tests.runs_app.package_index import PRIVATE_WHEEL, PrivateIndex, wheel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("runs_setup")]
Status = PipelineRun.Status

# Published only as a source archive (dbt-core 1.7 depends on it): uv must build it.
SOURCE_ONLY = "minimal-snowplow-tracker==0.0.2\n"
USES_SOURCE_ONLY = "import snowplow_tracker\nprint('tracker', snowplow_tracker.__name__)\n"


def warmed(name: str) -> Pipeline:
    pipeline = Pipeline.objects.get(name=name)
    Pipeline.objects.filter(pk=pipeline.pk).update(warm_status=Pipeline.WarmStatus.WARMING)
    warm(pipeline.pk)
    pipeline.refresh_from_db()
    assert pipeline.warm_status == Pipeline.WarmStatus.READY, pipeline.warm_error
    return pipeline


def failed_warm_up(name: str) -> str:
    """Warm the pipeline, which must fail; its error."""
    pipeline = Pipeline.objects.get(name=name)
    warm(pipeline.pk)
    pipeline.refresh_from_db()
    assert pipeline.warm_status == Pipeline.WarmStatus.FAILED
    return pipeline.warm_error


@pytest.fixture(params=["fresh", "pooled"])
def containers(request):
    if request.param == "pooled":
        request.getfixturevalue("pooled")
    return request.param


def test_a_source_only_package_is_built_once_and_runs_offline(make_pipeline, containers):
    make_pipeline("tracker", main=USES_SOURCE_ONLY, requirements=SOURCE_ONLY)
    discover()
    pipeline = warmed("tracker")
    run = execute(PipelineRun.enqueue(pipeline, trigger="manual"))
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert "tracker snowplow_tracker" in log_text(run)
    assert "Building" not in log_text(run) and "Built" not in log_text(run)


def test_every_run_installs_and_records_its_warm_ups_lock(make_pipeline, containers, viewer_client):
    make_pipeline("unpinned", main="import iniconfig\nprint('ok')\n", requirements="iniconfig\n")
    discover()
    pipeline = warmed("unpinned")
    lock = EnvironmentLock.current(pipeline)
    assert lock is not None and len(lock.packages) == 1
    assert lock.packages[0].startswith("iniconfig==")
    runs = [execute(PipelineRun.enqueue(pipeline, trigger="manual")) for _ in range(2)]
    for run in runs:
        assert run.status == Status.SUCCEEDED, log_text(run)
        assert run.environment_lock == lock  # the identical environment, recorded
        assert f"environment: 1 package(s), lock {lock.short_hash}" in log_text(run)
    # Shown on the run's page and in the API.
    page = viewer_client.get(runs[0].get_absolute_url()).content.decode()
    assert lock.short_hash in page and lock.packages[0] in page
    answer = viewer_client.get(f"/api/v1/runs/{runs[0].public_id}").json()
    assert answer["environment"] == {"lock": lock.sha256, "packages": lock.packages}


# --- as people declare their dependencies --------------------------------------------------

VERSIONS = (
    "import importlib.metadata as m, importlib.util as u, sys\n"
    "for name in ('iniconfig', 'six', 'pytest'):\n"
    "    print(name, m.version(name) if u.find_spec(name) else 'absent')\n"
    "print('python', '%d.%d' % sys.version_info[:2])\n"
)


def uv(*args: str, cwd, input_text: str | None = None) -> str:
    """The uv of this machine (as a pipeline's author runs it on their laptop)."""
    result = subprocess.run(
        [find_uv_bin(), *args],
        cwd=cwd,
        input=input_text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_of(name: str) -> PipelineRun:
    return execute(PipelineRun.enqueue(Pipeline.objects.get(name=name), trigger="manual"))


def printed(run: PipelineRun) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in output_lines(run) if " " in line)


def test_a_uv_project_runs_as_locked_with_its_extras_but_no_dev_group(make_pipeline, containers):
    folder = make_pipeline("locked", main=VERSIONS, config={"environment": {"extras": ["s3"]}})
    (folder / "pyproject.toml").write_text(
        '[project]\nname = "locked"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        'dependencies = ["iniconfig"]\n\n[project.optional-dependencies]\ns3 = ["six"]\n\n'
        '[dependency-groups]\ndev = ["pytest"]\n\n'
        # The lock pins an older release than the newest one (iniconfig 2.0.0, 2023).
        '[tool.uv]\nexclude-newer = "2023-06-01T00:00:00Z"\n'
    )
    uv("lock", "--quiet", cwd=folder)
    discover()
    warmed("locked")
    run = run_of("locked")
    assert run.status == Status.SUCCEEDED, log_text(run)
    seen = printed(run)
    assert seen["iniconfig"] == "2.0.0"  # as locked, not the newest
    assert seen["six"] != "absent" and seen["pytest"] == "absent"


def test_a_stale_uv_lock_fails_its_warm_up_in_plain_words(make_pipeline):
    folder = make_pipeline("stale")
    (folder / "pyproject.toml").write_text(
        '[project]\nname = "stale"\nversion = "0.1.0"\ndependencies = ["iniconfig"]\n'
    )
    uv("lock", "--quiet", cwd=folder)
    (folder / "pyproject.toml").write_text(
        '[project]\nname = "stale"\nversion = "0.1.0"\ndependencies = ["iniconfig", "six"]\n'
    )
    discover()
    error = failed_warm_up("stale")
    assert error.startswith("uv.lock does not match pyproject.toml"), error


def test_a_script_with_inline_metadata_runs_as_uv_run_would(make_pipeline, containers):
    make_pipeline(
        "inline",
        main='# /// script\n# requires-python = ">=3.11"\n# dependencies = ["iniconfig==2.0.0"]\n'
        "# ///\n" + VERSIONS,
    )
    discover()
    warmed("inline")
    run = run_of("inline")
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert printed(run)["iniconfig"] == "2.0.0"


def test_requirements_with_an_include_a_constraint_markers_and_hashes(
    make_pipeline, tmp_path, containers
):
    hashed = uv(
        "pip", "compile", "--quiet", "--no-header", "--generate-hashes", "-",
        "--python-version", "3.11", cwd=tmp_path, input_text="iniconfig==2.0.0\nsix==1.16.0\n",
    )  # fmt: skip
    folder = make_pipeline(
        "hashes",
        main=VERSIONS,
        requirements="--require-hashes\n-r base.txt\n-c constraints.txt\n",
    )
    (folder / "base.txt").write_text(
        hashed.replace("six==1.16.0", 'six==1.16.0 ; python_version < "3"')
    )
    (folder / "constraints.txt").write_text("iniconfig==2.0.0\n")  # pinned: --require-hashes
    discover()
    warmed("hashes")
    run = run_of("hashes")
    assert run.status == Status.SUCCEEDED, log_text(run)
    seen = printed(run)
    assert seen["iniconfig"] == "2.0.0" and seen["six"] == "absent"  # the marker left it out


def test_the_python_of_python_version_file_chooses_the_image(make_pipeline, docker_engine):
    from django.conf import settings

    image = settings.PYTHON_IMAGES["3.13"]
    try:
        docker_engine.images.get(image)
    except Exception:
        require(False, f"the worker image {image}")
    folder = make_pipeline("newer", main=VERSIONS)
    (folder / ".python-version").write_text("3.13\n")
    discover()
    warmed("newer")
    run = run_of("newer")
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert printed(run)["python"] == "3.13"


# --- a private package index ---------------------------------------------------------------

INDEX_PASSWORD = "s3cr3t-index-pass"


@pytest.fixture
def private_index(docker_engine, settings):
    """Served on the run network's gateway: the address of this host that containers reach."""
    from runs_app.executors.layout import ensure_run_network

    ensure_run_network(docker_engine.api)
    network = docker_engine.api.inspect_network(settings.RUN_NETWORK)
    gateway = network["IPAM"]["Config"][0]["Gateway"]
    index = PrivateIndex(gateway, "deploy", INDEX_PASSWORD)
    secret = Variable(name="PRIVATE_INDEX_PASSWORD", kind=Variable.Kind.SECRET)
    secret.set_value(INDEX_PASSWORD)
    secret.save()
    yield index
    index.close()


def indexed(make_pipeline, name: str, index: PrivateIndex, requirement: str, main: str = ""):
    make_pipeline(
        name,
        main=main or "print('hi')\n",
        requirements=f"--extra-index-url {index.url}\n{requirement}\n",
        config={
            "environment": {
                "indexes": [
                    {
                        "url": index.url,
                        "username": "deploy",
                        "password_secret": "PRIVATE_INDEX_PASSWORD",
                    }
                ]
            }
        },
    )
    discover()
    return Pipeline.objects.get(name=name)


def test_a_private_index_signs_in_with_a_secret_that_no_one_sees(
    make_pipeline, private_index, settings, viewer_client, containers
):
    uses = "import fastflow_private_demo, os\nprint(fastflow_private_demo.VALUE)\n"
    uses += "print('password given to the run:', 'PRIVATE_INDEX_PASSWORD' in os.environ)\n"
    pipeline = indexed(make_pipeline, "private", private_index, "fastflow-private-demo==1.0", uses)
    warm(pipeline.pk)
    pipeline.refresh_from_db()
    assert pipeline.warm_status == Pipeline.WarmStatus.READY, pipeline.warm_error
    run = run_of("private")
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert "from the private index" in log_text(run)
    assert "password given to the run: False" in log_text(run)  # warm-ups only
    # Nowhere: not the warm-up's log, the run's log, the run row, the pages, the API.
    warm_log = (Path(settings.DATA_DIR) / "warmups" / "private.log").read_text()
    assert "index.url" not in warm_log
    places = [
        warm_log,
        log_text(run),
        json.dumps(PipelineRun.objects.filter(pk=run.pk).values().get(), default=str),
        viewer_client.get(run.get_absolute_url()).content.decode(),
        viewer_client.get(pipeline.get_absolute_url()).content.decode(),
        viewer_client.get(f"/api/v1/runs/{run.public_id}").content.decode(),
    ]
    for place in places:
        assert INDEX_PASSWORD not in place


def test_a_wrong_password_is_told_in_plain_words(make_pipeline, private_index):
    indexed(make_pipeline, "refused", private_index, "fastflow-private-demo==1.0")
    Variable.objects.filter(name="PRIVATE_INDEX_PASSWORD").delete()
    wrong = Variable(name="PRIVATE_INDEX_PASSWORD", kind=Variable.Kind.SECRET)
    wrong.set_value("not-the-password")
    wrong.save()
    error = failed_warm_up("refused")
    assert "refused the warm-up" in error, error
    assert private_index.refused


def test_a_source_package_that_needs_a_compiler_fails_its_warm_up_saying_so(
    make_pipeline, private_index
):
    indexed(make_pipeline, "compiled", private_index, "needs-compiler==1.0")
    error = failed_warm_up("compiled")
    assert error.startswith("needs-compiler==1.0 is built from source here and needs a compiler"), (
        error
    )


def test_a_git_requirement_out_of_reach_is_told_before_any_run(make_pipeline):
    make_pipeline("gitdep", requirements="demo @ git+https://127.0.0.1:9/nothing.git\n")
    discover()
    error = failed_warm_up("gitdep")
    assert error.startswith("A git requirement could not be fetched"), error


def test_find_links_to_a_folder_of_the_pipeline(make_pipeline, containers):
    folder = make_pipeline(
        "wheels",
        main="import fastflow_private_demo\nprint(fastflow_private_demo.VALUE)\n",
        requirements="--find-links ./wheels\nfastflow-private-demo==1.0\n",
    )
    (folder / "wheels").mkdir()
    (folder / "wheels" / PRIVATE_WHEEL).write_bytes(wheel())
    discover()
    warmed("wheels")
    run = run_of("wheels")
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert "from the private index" in log_text(run)
