"""Size strings and cron expressions: the two little languages of pipeline.json."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from pipelines_app.cron import next_fire_times, normalize_cron
from pipelines_app.sizes import format_duration, format_size, parse_size

UTC = ZoneInfo("UTC")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.5k", 512),
        ("1K", 1024),
        ("1kb", 1024),
        ("1Ki", 1024),
        ("1.5g", 1610612736),
        ("1.5G", 1610612736),
        ("2Gi", 2147483648),
        ("1t", 1024**4),
        ("123", 123),
        ("7b", 7),
        (".5m", 524288),
        (" 64 m ", 64 * 1024**2),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (12.34, "12.3 s"),
        (59.94, "59.9 s"),
        (59.96, "1 min 0 s"),
        (599.999, "10 min 0 s"),  # ten minutes as SQLite's julianday reads them back
        (3599.6, "1 h 0 min"),
        (2 * 86400 + 5, "2 d 0 h"),
    ],
)
def test_durations_read_to_the_nearest_unit_shown(seconds, expected):
    assert format_duration(seconds) == expected


@pytest.mark.parametrize("text", ["", "m", "1.5x", "1e6", "-3m", "1,5g", "1 g b", "0x10"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [
        (None, "—"),
        (512, "512 B"),
        (1024, "1 KiB"),
        (1536 * 1024, "1.5 MiB"),
        (2 * 1024**3, "2 GiB"),
    ],
)
def test_format_size(num_bytes, text):
    assert format_size(num_bytes) == text


SATURDAY = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("weekday", ["0", "7", "SUN", "sun"])
def test_day_of_week_0_and_7_are_sunday(weekday):
    (fire,) = next_fire_times(normalize_cron(f"0 9 * * {weekday}"), SATURDAY, UTC)
    assert fire == datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    assert fire.strftime("%A") == "Sunday"


def test_day_of_week_1_is_monday():
    (fire,) = next_fire_times("0 9 * * 1", SATURDAY, UTC)
    assert fire.strftime("%A %d") == "Monday 23"


def test_day_of_month_and_day_of_week_are_ored_like_standard_cron():
    fires = next_fire_times("0 0 1 * 1", SATURDAY, UTC, count=3)
    # Monday the 23rd and 30th come before the 1st of December.
    assert [f.day for f in fires] == [23, 30, 1]


def test_next_fire_times_are_in_the_schedules_time_zone():
    berlin = ZoneInfo("Europe/Berlin")
    fires = next_fire_times("30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=UTC), berlin, count=2)
    # 02:30 does not exist on 2026-03-29 in Berlin: like cron, the job runs once, at 03:00.
    assert [f.isoformat() for f in fires] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]


def test_a_fixed_time_in_the_repeated_hour_fires_once_when_clocks_go_back():
    berlin = ZoneInfo("Europe/Berlin")
    fires = next_fire_times("30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=UTC), berlin, count=2)
    assert [f.isoformat() for f in fires] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_next_fire_times_is_strictly_after():
    fires = next_fire_times("*/5 * * * *", datetime(2026, 1, 1, 10, 5, tzinfo=UTC), UTC, count=2)
    assert fires == [
        datetime(2026, 1, 1, 10, 10, tzinfo=UTC),
        datetime(2026, 1, 1, 10, 15, tzinfo=UTC),
    ]
