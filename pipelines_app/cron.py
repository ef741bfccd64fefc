"""Cron expressions with standard semantics (5 fields; day-of-week 0 and 7 are Sunday).

croniter does the evaluation; this module pins down what we accept, so a schedule that was
valid at discovery is evaluated by the same rules everywhere later.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

CRON_EXAMPLES = '"0 * * * *" (hourly), "*/5 * * * *", "30 2 * * 1-5"'

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def normalize_cron(expression: str) -> str:
    """The canonical 5-field form of a cron expression; raises ValueError saying why not."""
    text = " ".join(expression.split())
    text = _ALIASES.get(text.lower(), text)
    fields = text.split(" ")
    if len(fields) != 5:
        raise ValueError(
            f"has {len(fields)} field{'s' if len(fields) != 1 else ''}, "
            "cron needs 5 (minute hour day-of-month month day-of-week)"
        )
    if not croniter.is_valid(text):
        raise ValueError("is not a valid cron expression")
    try:
        croniter(text, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError("never fires (no date matches it)") from None
    return text


def next_fire_times(
    expression: str, after: datetime, tz: ZoneInfo, count: int = 1
) -> list[datetime]:
    """The next `count` moments (aware, in `tz`) strictly after `after` that match.

    When clocks go back, croniter yields a fixed time like 02:30 twice (fold 0 and 1);
    standard cron runs such a job once, so the repeat is skipped.
    """
    iterator = croniter(expression, after.astimezone(tz))
    moments: list[datetime] = []
    while len(moments) < count:
        moment = iterator.get_next(datetime)
        if moments and moment.replace(fold=0) == moments[-1].replace(fold=0, tzinfo=moment.tzinfo):
            continue
        moments.append(moment)
    return moments
