"""Small display helpers shared by all pages."""

from __future__ import annotations

from django import template

from pipelines_app.sizes import format_duration, format_size

register = template.Library()


@register.filter
def filesize(num_bytes: int | None) -> str:
    return format_size(num_bytes)


@register.filter
def seconds(value: float | int | None) -> str:
    """120 -> "2 min", 0 -> "no limit"."""
    if value is None:
        return ""
    if value == 0:
        return "no limit"
    if value % 3600 == 0:
        return f"{value // 3600:g} h"
    if value % 60 == 0:
        return f"{value // 60:g} min"
    return f"{value:g} s"


@register.filter
def took(value: float | None) -> str:
    """Seconds a run took, in words: 4242 -> "1 h 10 min"."""
    return "" if value is None else format_duration(value)
