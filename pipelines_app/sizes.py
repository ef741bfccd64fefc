"""Size strings of pipeline.json ("512m", "1.5g", "2Gi", "800M") to bytes and back."""

from __future__ import annotations

import re

SIZE_EXAMPLES = "512m, 1.5g, 2Gi"

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "ki": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "ti": 1024**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Bytes of a size string; units are powers of 1024 and case-insensitive.

    Raises ValueError for anything that is not a size.
    """
    match = _SIZE.match(text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"{text!r} is not a size")
    return round(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_size(num_bytes: int | float | None) -> str:
    """A short human form: 512 MiB, 1.5 GiB."""
    if num_bytes is None:
        return "—"
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return (
                f"{value:.0f} {unit}"
                if unit == "B" or value.is_integer()
                else f"{value:.1f} {unit}"
            )
        value /= 1024
    return f"{value:.1f} TiB"


def format_duration(seconds: float) -> str:
    """How long something took, in the two largest units: "12.3 s", "4 min 5 s", "3 h 12 min"."""
    if seconds < 59.95:  # (what rounds to 60.0 is a minute)
        return f"{seconds:.1f} s"
    # To the nearest second: durations measured by the database come with its rounding
    # (SQLite's julianday keeps milliseconds), and ten minutes read back as 599.999 s.
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s"
