"""The dependency audit: each pipeline's installed packages (what its last warm-up put in
its environment, `Pipeline.resolved_requirements`) checked against the OSV database — the
advisories pip-audit's `osv` service reads (PyPA's advisory database, GitHub's, …) —
after each warm-up and once a day. New findings are told (notify.cve_found). A service that
cannot be reached is recorded as such, never as "no vulnerabilities".

OSV's API: POST /v1/querybatch with {package, version} queries answers the advisory ids
per query; GET /v1/vulns/<id> the advisory (aliases, summary, the versions that fix it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from pipelines_app.models import Pipeline
from runs_app import notify
from runs_app.models import Chore, DependencyCheck, Vulnerability

logger = logging.getLogger(__name__)
CHORE = "dependency-audit"
TIMEOUT_SECONDS = 20
BATCH = 500  # OSV's querybatch takes up to 1,000 queries


class ServiceUnreachable(Exception):
    """The vulnerability service did not answer (or not sensibly); says why."""


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    advisory_id: str
    aliases: tuple[str, ...]
    fixed_versions: tuple[str, ...]
    summary: str

    def line(self) -> str:
        fixed = ", ".join(self.fixed_versions) or "no fixed version yet"
        also = f" ({', '.join(self.aliases)})" if self.aliases else ""
        return f"{self.package} {self.version}: {self.advisory_id}{also}, fixed in {fixed}"


def parse_requirement(pin: str) -> tuple[str, str] | None:
    name, separator, version = pin.partition("==")
    return (name.strip(), version.strip()) if separator and name and version else None


def query(pins: list[str]) -> list[Finding]:
    """The known vulnerabilities of these "name==version" pins (ServiceUnreachable if the
    service does not answer)."""
    packages = [p for pin in pins if (p := parse_requirement(pin))]
    session = requests.Session()
    found: list[tuple[str, str, str]] = []
    for start in range(0, len(packages), BATCH):
        chunk = packages[start : start + BATCH]
        body = {"queries": [{"package": {"name": n, "ecosystem": "PyPI"}, "version": v}
                            for n, v in chunk]}  # fmt: skip
        answer = _call(session, "post", "/v1/querybatch", json=body)
        results = answer.get("results")
        if not isinstance(results, list) or len(results) != len(chunk):
            raise ServiceUnreachable("the service answered something that is not OSV's querybatch")
        for (name, version), result in zip(chunk, results, strict=True):
            for vuln in (result or {}).get("vulns", []):
                found.append((name, version, str(vuln["id"])))
    advisories: dict[str, dict] = {}
    findings = []
    for name, version, advisory_id in found:
        if advisory_id not in advisories:
            advisories[advisory_id] = _call(session, "get", f"/v1/vulns/{advisory_id}")
        advisory = advisories[advisory_id]
        findings.append(
            Finding(
                package=name,
                version=version,
                advisory_id=advisory_id,
                aliases=tuple(advisory.get("aliases", []))[:10],
                fixed_versions=_fixed_versions(advisory, name),
                summary=str(advisory.get("summary") or advisory.get("details", ""))[:500],
            )
        )
    return findings


def _call(session: requests.Session, method: str, path: str, **kwargs) -> dict:
    url = settings.VULNERABILITY_API_URL + path
    try:
        response = session.request(method, url, timeout=TIMEOUT_SECONDS, **kwargs)
        response.raise_for_status()
        return response.json()
    except (requests.RequestException, ValueError) as problem:
        # People read this on the pipeline page and the dashboard; the worker's log keeps
        # the exception as it was.
        logger.warning(
            "the vulnerability service at %s: %r", settings.VULNERABILITY_API_URL, problem
        )
        raise ServiceUnreachable(
            f"{in_plain_words(problem)} ({settings.VULNERABILITY_API_URL})"
        ) from None


def in_plain_words(problem: Exception) -> str:
    """What went wrong with the vulnerability service, in words a person acts on."""
    if isinstance(problem, requests.Timeout):
        return f"the vulnerability service did not answer within {TIMEOUT_SECONDS} s"
    if isinstance(problem, requests.ConnectionError):
        return (
            "the vulnerability service could not be reached from the worker (no network "
            "route, a name that does not resolve, or a proxy or firewall in the way)"
        )
    if isinstance(problem, requests.HTTPError) and problem.response is not None:
        return (
            f"the vulnerability service answered {problem.response.status_code} "
            f"{problem.response.reason or ''}".rstrip()
        )
    if isinstance(problem, ValueError):
        return "the vulnerability service answered with something that is not its JSON"
    return "the vulnerability service could not be asked"


def _normalised(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _fixed_versions(advisory: dict, package: str) -> tuple[str, ...]:
    fixed = []
    for affected in advisory.get("affected", []):
        if _normalised(affected.get("package", {}).get("name", "")) != _normalised(package):
            continue
        for version_range in affected.get("ranges", []):
            for event in version_range.get("events", []):
                if "fixed" in event and event["fixed"] not in fixed:
                    fixed.append(event["fixed"])
    return tuple(fixed)


def check(pipeline: Pipeline) -> DependencyCheck:
    """Audit one pipeline now; record the outcome and tell people of new findings."""
    pins = list(pipeline.resolved_requirements)
    if not pins:
        status = (DependencyCheck.Status.NOT_WARMED if pipeline.needs_environment
                  else DependencyCheck.Status.CLEAN)  # fmt: skip
        return _record(pipeline, status, 0)
    try:
        findings = query(pins)
    except ServiceUnreachable as problem:
        logger.warning("dependency audit of %s: %s", pipeline.name, problem)
        return _record(pipeline, DependencyCheck.Status.UNREACHABLE, len(pins), str(problem))
    new = _store(pipeline, findings)
    if new:
        notify.cve_found(pipeline, [finding.line() for finding in new])
    status = DependencyCheck.Status.VULNERABLE if findings else DependencyCheck.Status.CLEAN
    return _record(pipeline, status, len(pins))


def _record(pipeline: Pipeline, status: str, packages: int, error: str = "") -> DependencyCheck:
    check_row, _ = DependencyCheck.objects.update_or_create(
        pipeline=pipeline,
        defaults={"status": status, "checked_at": timezone.now(), "packages": packages,
                  "error": error},
    )  # fmt: skip
    return check_row


@transaction.atomic
def _store(pipeline: Pipeline, findings: list[Finding]) -> list[Finding]:
    """Keep the current findings (gone ones are deleted); the new ones are returned."""
    now = timezone.now()
    known = {
        (v.package, v.version, v.advisory_id): v
        for v in Vulnerability.objects.select_for_update().filter(pipeline=pipeline)
    }
    current = {(f.package, f.version, f.advisory_id): f for f in findings}
    Vulnerability.objects.filter(
        pk__in=[v.pk for key, v in known.items() if key not in current]
    ).delete()
    new = []
    for key, finding in current.items():
        fields = {"aliases": list(finding.aliases), "fixed_versions": list(finding.fixed_versions),
                  "summary": finding.summary, "last_seen_at": now}  # fmt: skip
        if key in known:
            Vulnerability.objects.filter(pk=known[key].pk).update(**fields)
        else:
            Vulnerability.objects.create(pipeline=pipeline, package=finding.package,
                                         version=finding.version,
                                         advisory_id=finding.advisory_id, **fields)  # fmt: skip
            new.append(finding)
    return new


def check_pipeline(pipeline_pk: int) -> None:
    """The worker's task after a warm-up."""
    pipeline = Pipeline.objects.filter(pk=pipeline_pk).first()
    if pipeline is not None:
        check(pipeline)


def check_all_daily() -> int | None:
    """Once a day across workers: audit every present pipeline; how many were checked."""
    if not settings.DEPENDENCY_AUDIT or not Chore.claim(CHORE, every=timedelta(hours=23)):
        return None
    checked = 0
    counts: dict[str, int] = {}
    for pipeline in Pipeline.objects.filter(state=Pipeline.State.PRESENT):
        status = check(pipeline).status
        counts[status] = counts.get(status, 0) + 1
        checked += 1
    Chore.done(CHORE, counts)
    return checked
