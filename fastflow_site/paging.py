"""One way to page through a long list (the runs, the audit log): the page asked for, and
the rest of the query string its links keep (templates/_pager.html).

A list is counted up to COUNT_UP_TO rows and then said to be "more than" that: counting a
million runs costs PostgreSQL more than reading the page itself, and the exact number tells
nobody more than "many". Paging goes on past it ("older →"); the filters narrow a list.
"""

from __future__ import annotations

from django.core.paginator import EmptyPage, Page, PageNotAnInteger, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property

COUNT_UP_TO = 10_000


class CappedPaginator(Paginator):
    """Counts up to COUNT_UP_TO; past that, a page is read with one row more than it shows,
    which says whether an older page follows."""

    @cached_property
    def count(self) -> int:
        # Unordered: the database counts from whichever index narrows the list best.
        return self.object_list.order_by()[: COUNT_UP_TO + 1].count()

    @property
    def counted_all(self) -> bool:
        return self.count <= COUNT_UP_TO

    def validate_number(self, number) -> int:
        if self.counted_all:
            return super().validate_number(number)
        try:
            number = int(number)
        except (TypeError, ValueError) as error:
            raise PageNotAnInteger("That page number is not an integer") from error
        if number < 1:
            raise EmptyPage("That page number is less than 1")
        return number

    def page(self, number) -> Page:
        if self.counted_all:
            return super().page(number)
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        rows = list(self.object_list[bottom : bottom + self.per_page + 1])
        if not rows:  # past the end: the last counted page (it has rows: the count is capped)
            return self.page(self.num_pages)
        return UncountedPage(rows[: self.per_page], number, self, more=len(rows) > self.per_page)


class UncountedPage(Page):
    def __init__(self, object_list, number, paginator, more: bool) -> None:
        super().__init__(object_list, number, paginator)
        self.more = more

    def has_next(self) -> bool:
        return self.more

    def next_page_number(self) -> int:
        return self.number + 1


def page_of(request: HttpRequest, items: QuerySet, per_page: int) -> tuple[Page, str]:
    page = CappedPaginator(items, per_page).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return page, query.urlencode()
