"""The dependency audit: a pinned package with a known advisory is reported (on the
pipeline page, the dashboard, the admin, and told once); a vulnerability service that
cannot be reached is shown as such, never as "no vulnerabilities".

OSV's servers cannot be reached from here: a local server answers its API with the real
advisory of requests 2.19.1 (PYSEC-2018-28, CVE-2018-18074)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import requests
from django.urls import reverse

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.executors.base import MarkerReader, Outcome
from runs_app.logs import LogWriter
from runs_app.models import Channel as NotifyChannel
from runs_app.models import DependencyCheck, Notification, Rule, Vulnerability
from runs_app.worker import vulnerabilities

pytestmark = pytest.mark.django_db

ADVISORY = {
    "id": "PYSEC-2018-28",
    "summary": "",
    "details": "The Requests package before 2.20.0 for Python sends an HTTP Authorization "
    "header to an http URI upon receiving a same-hostname https-to-http redirect, which "
    "makes it easier for remote attackers to discover credentials by sniffing the network.",
    "aliases": ["CVE-2018-18074", "GHSA-x84v-xcm2-53pg"],
    "affected": [
        {
            "package": {"name": "requests", "ecosystem": "PyPI", "purl": "pkg:pypi/requests"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.20.0"}]}],
        }
    ],
}


class OSV(BaseHTTPRequestHandler):
    vulnerable = {("requests", "2.19.1"): ["PYSEC-2018-28"]}

    def do_POST(self):
        queries = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["queries"]
        results = [
            {"vulns": [{"id": i, "modified": "2024-01-01T00:00:00Z"} for i in ids]}
            if (ids := self.vulnerable.get((q["package"]["name"].lower(), q["version"])))
            else {}
            for q in queries
        ]
        self.answer({"results": results})

    def do_GET(self):
        self.answer(ADVISORY if self.path == "/v1/vulns/PYSEC-2018-28" else None)

    def answer(self, body) -> None:
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body or {"message": "not found"}).encode())

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def osv(settings):
    server = HTTPServer(("127.0.0.1", 0), OSV)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.VULNERABILITY_API_URL = f"http://127.0.0.1:{server.server_port}"
    yield
    server.shutdown()


@pytest.fixture
def pinned(make_pipeline):
    make_pipeline("old_requests", requirements="requests==2.19.1\n")
    discover()
    pipeline = Pipeline.objects.get(name="old_requests")
    # what its warm-up installed (runs_app.worker.warming records it from the environment)
    pipeline.resolved_requirements = ["certifi==2024.2.2", "idna==2.7", "requests==2.19.1"]
    pipeline.save()
    return pipeline


def test_a_pinned_package_with_a_known_advisory_is_reported(
    osv, pinned, admin_client, hooks_channel
):
    check = vulnerabilities.check(pinned)
    assert check.status == DependencyCheck.Status.VULNERABLE and check.packages == 3
    (finding,) = Vulnerability.objects.all()
    assert (finding.package, finding.version, finding.advisory_id) == (
        "requests", "2.19.1", "PYSEC-2018-28",
    )  # fmt: skip
    assert finding.fixed_versions == ["2.20.0"] and "CVE-2018-18074" in finding.aliases
    page = admin_client.get(pinned.get_absolute_url()).content.decode()
    assert 'id="vulnerabilities"' in page and "PYSEC-2018-28" in page and "2.20.0" in page
    dashboard = admin_client.get(reverse("home")).content.decode()
    attention = dashboard.split('id="needs-attention"')[1].split("</section>")[0]
    assert "1 known vulnerability in its packages" in attention
    listing = admin_client.get(reverse("admin:runs_app_vulnerability_changelist")).content
    assert b"PYSEC-2018-28" in listing
    (told,) = Notification.objects.filter(event="cve_found")
    assert "requests 2.19.1: PYSEC-2018-28" in told.body and "fixed in 2.20.0" in told.body
    vulnerabilities.check(pinned)  # the same finding again: not told twice
    assert Notification.objects.filter(event="cve_found").count() == 1


def test_a_fixed_pin_clears_the_finding(osv, pinned):
    vulnerabilities.check(pinned)
    pinned.resolved_requirements = ["requests==2.32.3"]
    pinned.save()
    assert vulnerabilities.check(pinned).status == DependencyCheck.Status.CLEAN
    assert not Vulnerability.objects.exists()


def test_an_unreachable_service_is_never_no_vulnerabilities(pinned, settings, admin_client):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        settings.VULNERABILITY_API_URL = f"http://127.0.0.1:{probe.getsockname()[1]}"
    check = vulnerabilities.check(pinned)
    assert check.status == DependencyCheck.Status.UNREACHABLE and "127.0.0.1" in check.error
    page = admin_client.get(pinned.get_absolute_url()).content.decode()
    assert "could not be reached" in page and "no known vulnerabilities" not in page
    # In plain words, never the exception's text.
    assert "could not be reached from the worker" in check.error
    assert "Max retries" not in page and "HTTPConnectionPool" not in page
    assert "Not checked for vulnerabilities" in admin_client.get(reverse("home")).content.decode()


def test_what_the_service_did_is_said_in_plain_words():
    from requests.models import Response

    answered = Response()
    answered.status_code, answered.reason = 503, "Service Unavailable"
    said = vulnerabilities.in_plain_words
    assert said(requests.HTTPError(response=answered)) == (
        "the vulnerability service answered 503 Service Unavailable"
    )
    assert "did not answer within 20 s" in said(requests.ReadTimeout("read timed out"))
    assert "not its JSON" in said(ValueError("Expecting value: line 1"))


def test_a_pipeline_not_warmed_yet_is_said_so(osv, make_pipeline):
    make_pipeline("cold", requirements="requests==2.19.1\n")
    make_pipeline("plain")
    discover()
    cold = vulnerabilities.check(Pipeline.objects.get(name="cold"))
    assert cold.status == DependencyCheck.Status.NOT_WARMED
    assert vulnerabilities.check(Pipeline.objects.get(name="plain")).status == "clean"


def test_the_daily_audit_runs_once_across_workers(osv, pinned):
    assert vulnerabilities.check_all_daily() == 1
    assert vulnerabilities.check_all_daily() is None


def test_a_warm_up_reports_what_it_installed(tmp_path):
    outcome = Outcome()
    reader = MarkerReader(LogWriter(tmp_path / "warm.log"), outcome)
    reader.line("E", '\x1efastflow:resolved ["idna==2.7", "requests==2.19.1"]', None, None)
    reader.line("E", "\x1efastflow:resolved not-json", None, None)
    assert outcome.resolved == ["idna==2.7", "requests==2.19.1"]


@pytest.fixture
def hooks_channel():
    channel = NotifyChannel(name="ops")
    channel.set_url("json://127.0.0.1:9/x")
    channel.save()
    Rule.objects.create(name="cves", events=["cve_found"]).channels.add(channel)
    return channel
