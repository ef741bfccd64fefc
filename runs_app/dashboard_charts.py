"""The dashboard's charts as inline SVG, drawn on the server: a year of runs as a calendar,
the last 24 hours as bars, the last hours per pipeline as a timeline. No chart library and
no script: they are static pictures of a page that the browser paints at once, each mark
with a <title> for its figures and the same words in text beside it."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from uuid import UUID

from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import SafeString

from pipelines_app.sizes import format_duration
from runs_app.dashboard import LastDay
from runs_app.models import PipelineRun, RunDay
from runs_app.timespans import SecondsBetween

Status = PipelineRun.Status
WEEKS = 53
CELL, GAP = 11, 2
STEP = CELL + GAP
TIMELINE_HOURS = 6
MOST_RUNS = 1500  # of the window: an instance starting more in it shows its newest
MOST_WAITING = 100  # runs queued before the window, still waiting or going
LANE, LABEL_WIDTH, TIMELINE_WIDTH = 18, 170, 1000
FAILED = (Status.FAILED, Status.TIMED_OUT)
NOT_ENDED = (Status.QUEUED, *PipelineRun.IN_FLIGHT_STATUSES)
ANY_RUN = UUID(int=0)


# --- the calendar: a year of ended runs by day ---------------------------------------------


@dataclass
class CalendarDay:
    day: date
    succeeded: int = 0
    failed: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.other

    @property
    def words(self) -> str:
        if not self.total:
            return f"{self.day:%a %-d %b %Y}: no runs"
        parts = [f"{self.succeeded} succeeded", f"{self.failed} failed"]
        if self.other:
            parts.append(f"{self.other} cancelled")
        return f"{self.day:%a %-d %b %Y}: {self.total} run{'s' if self.total != 1 else ''} — " + (
            ", ".join(parts)
        )


def calendar_days(today: date | None = None) -> list[CalendarDay]:
    """53 weeks of days, Monday first, ending with the week of today."""
    today = today or timezone.localdate()
    first = today - timedelta(days=today.weekday() + (WEEKS - 1) * 7)
    days = {
        first + timedelta(days=n): CalendarDay(first + timedelta(days=n))
        for n in range((today - first).days + 1)
    }
    for day, status, count in RunDay.objects.filter(day__gte=first).values_list(
        "day", "status", "count"
    ):
        if day not in days:
            continue  # counted ahead of today (a clock moved back)
        if status == Status.SUCCEEDED:
            days[day].succeeded += count
        elif status in FAILED:
            days[day].failed += count
        else:
            days[day].other += count
    return list(days.values())


def _level(count: int, most: int) -> int:
    return 0 if not count else min(4, 1 + (4 * count - 1) // max(most, 1))


def calendar_svg(days: list[CalendarDay]) -> SafeString:
    most_ok = max((d.succeeded + d.other for d in days), default=0)
    most_bad = max((d.failed for d in days), default=0)
    first = days[0].day
    cells = []
    months = []
    for day in days:
        column, row = (day.day - first).days // 7, day.day.weekday()
        x, y = 30 + column * STEP, 16 + row * STEP
        if day.failed:
            shade = f"day-bad-{_level(day.failed, most_bad)}"
        else:
            shade = f"day-ok-{_level(day.succeeded + day.other, most_ok)}" if day.total else ""
        # Plain formatting: only the words need escaping, and they are ours (fast at 371).
        cells.append(
            f'<rect x="{x}" y="{y}" width="{CELL}" height="{CELL}" class="{shade}">'
            f"<title>{day.words}</title></rect>"
        )
        if (day.day.day == 1 or day is days[0]) and column < WEEKS - 2:
            months.append(format_html('<text x="{}" y="10">{}</text>', x, f"{day.day:%b}"))
    weekdays = format_html_join(
        "",
        '<text x="0" y="{}">{}</text>',
        ((16 + r * STEP + 9, n) for r, n in ((0, "Mon"), (2, "Wed"), (4, "Fri"))),
    )
    total = sum(d.total for d in days)
    failed = sum(d.failed for d in days)
    width = 30 + WEEKS * STEP
    return format_html(
        '<svg viewBox="0 0 {} {}" role="group" aria-label="{}">{}{}{}</svg>',
        width,
        16 + 7 * STEP,
        f"Runs by day over the last year: {total} ended, {failed} failed",
        SafeString("".join(months)),
        weekdays,
        SafeString("".join(cells)),
    )


# --- the last 24 hours: a stacked bar per hour -----------------------------------------------

STACK_ORDER = (
    Status.SUCCEEDED,
    Status.FAILED,
    Status.TIMED_OUT,
    Status.CANCELLED,
    Status.RUNNING,
    Status.CLAIMED,
    Status.QUEUED,
)


def hours_svg(day: LastDay) -> SafeString:
    most = max((sum(counts.values()) for _, counts in day.hours), default=0) or 1
    bars = []
    for index, (hour, counts) in enumerate(day.hours):
        y = 60.0
        local = timezone.localtime(hour)
        words = ", ".join(f"{n} {Status(s).label}" for s, n in counts.items()) or "no runs"
        for status in STACK_ORDER:
            if n := counts.get(status, 0):
                height = max(1.5, 58 * n / most)
                y -= height
                bars.append(
                    format_html(
                        '<rect class="bar-{}" x="{}" y="{}" width="10" height="{}">'
                        "<title>{}:00 to {}:59: {}</title></rect>",
                        status,
                        index * 12.5,
                        f"{y:.1f}",
                        f"{height:.1f}",
                        f"{local:%H}",
                        f"{local:%H}",
                        words,
                    )
                )
    ticks = format_html_join(
        "",
        '<text x="{}" y="72">{}h</text>',
        (
            (index * 12.5, f"{timezone.localtime(hour):%H}")
            for index, (hour, _) in enumerate(day.hours)
            if index % 6 == 0
        ),
    )
    return format_html(
        '<svg class="chart-svg bars" viewBox="0 0 300 74" role="img" aria-label="{}">{}{}</svg>',
        f"Runs per hour over the last 24 hours: {day.total} in all, {day.failed} failed",
        SafeString("".join(bars)),
        ticks,
    )


# --- the timeline: the last hours' runs per pipeline ------------------------------------------


@dataclass
class Bar:
    """A run on the timeline, its moments in seconds from the window's start (negative:
    before it; None: not yet)."""

    public_id: str
    status: str
    queued: float
    started: float | None
    finished: float | None


def timeline_bars(hours: int = TIMELINE_HOURS) -> tuple[datetime, datetime, dict[str, list[Bar]]]:
    """Runs that overlap the last `hours`, by pipeline name: those queued in the window, and
    those queued before it that ended in it or still wait or go."""
    end = timezone.now()
    start = end - timedelta(hours=hours)
    moments = [SecondsBetween(name, start) for name in ("queued_at", "started_at", "finished_at")]
    # Three reads, each on an index of its own (an OR of them would scan the table).
    runs = PipelineRun.objects.values_list("pipeline__name", "public_id", "status", *moments)
    rows = list(runs.filter(queued_at__gte=start).order_by("-queued_at", "-id")[:MOST_RUNS])
    before = runs.filter(queued_at__lt=start)
    ended = before.filter(finished_at__gte=start).order_by("finished_at")[:MOST_RUNS]
    # Ended ones only (the next read has the rest); checked here, as a condition in the
    # query would send the database to the status index instead (measured: 10 → 200 ms).
    rows += [row for row in ended if row[2] in PipelineRun.FINAL_STATUSES]
    rows += before.filter(status__in=NOT_ENDED).order_by("status", "queued_at")[:MOST_WAITING]
    lanes: dict[str, list[Bar]] = defaultdict(list)
    for name, public_id, status, queued, started, finished in rows:
        lanes[name].append(Bar(str(public_id), status, queued, started, finished))
    return start, end, dict(sorted(lanes.items()))


def timeline_svg(start: datetime, end: datetime, lanes: dict[str, list[Bar]]) -> SafeString:
    span = (end - start).total_seconds()
    plot = TIMELINE_WIDTH - LABEL_WIDTH

    def x(seconds: float) -> float:  # from the window's start, to where it is drawn
        return LABEL_WIDTH + max(0.0, min(1.0, seconds / span)) * plot

    parts = []
    first_hour = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    for hour in range(TIMELINE_HOURS):
        moment = first_hour + timedelta(hours=hour)
        at = x((moment - start).total_seconds())
        parts.append(
            format_html(
                '<line class="grid-line" x1="{}" x2="{}" y1="14" y2="{}"></line>'
                '<text x="{}" y="10">{}</text>',
                f"{at:.1f}",
                f"{at:.1f}",
                16 + len(lanes) * LANE,
                f"{at - 12:.1f}",
                f"{timezone.localtime(moment):%H:%M}",
            )
        )
    # A run's address without reverse() per bar (hundreds of bars, every 4 s).
    before_id, after_id = reverse("runs_app:detail", args=[ANY_RUN]).split(str(ANY_RUN))
    for index, (name, bars) in enumerate(lanes.items()):
        top = 16 + index * LANE
        lane_name = escape(name)
        parts.append(
            format_html(
                '<rect class="lane" x="{}" y="{}" width="{}" height="{}"></rect>'
                '<text x="4" y="{}">{}</text>',
                LABEL_WIDTH,
                top + 1,
                plot,
                LANE - 2,
                top + 12,
                name[:26],
            )
        )
        for bar in bars:
            url = f"{before_id}{bar.public_id}{after_id}"
            parts.append(_bar(bar, lane_name, url, top, x, span))
    parts.append(
        format_html(
            '<line class="now-line" x1="{}" x2="{}" y1="14" y2="{}"></line>',
            f"{x(span):.1f}",
            f"{x(span):.1f}",
            16 + len(lanes) * LANE,
        )
    )
    runs = sum(len(bars) for bars in lanes.values())
    return format_html(
        '<svg viewBox="0 0 {} {}" role="group" aria-label="{}">{}</svg>',
        TIMELINE_WIDTH,
        20 + len(lanes) * LANE,
        f"Runs of the last {TIMELINE_HOURS} hours per pipeline: {runs} runs of {len(lanes)} "
        "pipelines",
        SafeString("".join(parts)),
    )


STATUS_WORDS = {status.value: str(status.label) for status in Status}


def _bar(bar: Bar, lane_name: str, url: str, top: int, x, end: float) -> str:
    """The wait (queued → started) thin, the run (started → finished or now) full height.
    Plain formatting: the lane's name comes escaped, everything else is ours (numbers, a
    status, a uuid)."""
    began = next(m for m in (bar.started, bar.finished, end) if m is not None)
    queued_x, began_x = x(bar.queued), x(began)
    wait = ""
    if began_x - queued_x >= 1:
        wait = (
            f'<rect class="bar-{bar.status}" x="{queued_x:.0f}" y="{top + 7}" '
            f'width="{began_x - queued_x:.0f}" height="2" opacity=".6"/>'
        )
    ran = took = ""
    if bar.started is not None:
        finished = end if bar.finished is None else bar.finished
        width = max(2.0, x(finished) - began_x)
        ran = (
            f'<rect class="bar-{bar.status}" x="{began_x:.0f}" y="{top + 3}" '
            f'width="{width:.0f}" height="{LANE - 8}"/>'
        )
        took = ", " + format_duration(finished - bar.started)
    return (
        f'<a href="{url}" tabindex="-1"><title>{lane_name} #{bar.public_id[:8]}: '
        f"{STATUS_WORDS[bar.status]}{took}</title>{wait}{ran}</a>"
    )
