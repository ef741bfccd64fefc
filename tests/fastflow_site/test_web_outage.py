"""The web process through a database outage, for real (daphne on PostgreSQL): a page or
an API call met while the database is away is a 503 that says so and when to try again —
never a 500 — and everything works again once it is back, without a restart."""

from __future__ import annotations

import pytest
import requests

from fastflow_site.models import ApiToken
from runs_app.follow import wait_for
from tests.runs_app.test_worker import Worker, kill_group, start_web_server

pytestmark = pytest.mark.django_db(transaction=True)


def test_pages_and_the_api_answer_503_while_the_database_is_away(
    postgresql_outage, settings, tmp_path, viewer
):
    settings.DATA_DIR, settings.LOGS_DIR = tmp_path / "data", tmp_path / "logs"
    _, token = ApiToken.make(viewer, "outage", ApiToken.Scope.READ)
    web, base = start_web_server(Worker(settings, tmp_path).environment(), tmp_path / "web.log")
    bearer = {"Authorization": f"Bearer {token}"}
    try:
        assert requests.get(f"{base}/accounts/login/", timeout=10).status_code == 200
        assert requests.get(f"{base}/api/v1/pipelines", headers=bearer, timeout=10).ok
        with postgresql_outage:
            page = requests.get(f"{base}/accounts/login/", timeout=10)
            assert page.status_code == 503, page.text
            assert page.headers["Retry-After"] == "5"
            assert "cannot reach its database" in page.text
            api = requests.get(f"{base}/api/v1/pipelines", headers=bearer, timeout=10)
            assert api.status_code == 503
            assert "cannot reach its database" in api.json()["detail"]

        def page_works() -> bool:
            return requests.get(f"{base}/accounts/login/", timeout=10).status_code == 200

        assert wait_for(page_works, timeout=15), (tmp_path / "web.log").read_text()[-3000:]
        assert requests.get(f"{base}/api/v1/pipelines", headers=bearer, timeout=10).ok
    finally:
        kill_group(web)
