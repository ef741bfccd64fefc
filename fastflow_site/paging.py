"""One way to page through a long list (the runs, the audit log): the page asked for, and
the rest of the query string its links keep (templates/_pager.html)."""

from __future__ import annotations

from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest


def page_of(request: HttpRequest, items: QuerySet, per_page: int) -> tuple[Page, str]:
    page = Paginator(items, per_page).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return page, query.urlencode()
