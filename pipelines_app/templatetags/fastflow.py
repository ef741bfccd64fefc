"""Small display helpers shared by all pages."""

from __future__ import annotations

from django import template

from pipelines_app.sizes import format_size

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
