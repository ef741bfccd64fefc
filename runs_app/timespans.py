"""Time spans computed by the database, for the dashboard's hot reads: a chart needs seconds,
not datetimes, and turning a thousand stored timestamps into Python datetimes costs more
than the query (measured at a million runs on SQLite: two thirds of the dashboard's time).
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import DateTimeField, F, FloatField, Func, Value
from django.db.models.expressions import Combinable
from django.db.models.functions import Coalesce


class SecondsBetween(Func):
    """Seconds from `earlier` to `later` (either a field name, an expression or a datetime),
    as a float; NULL when either is NULL."""

    output_field = FloatField()

    def __init__(self, later, earlier) -> None:
        super().__init__(_expression(later), _expression(earlier))

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(
            compiler,
            connection,
            template="((julianday(%(expressions)s)) * 86400.0)",
            arg_joiner=") - julianday(",
            **extra,
        )

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(
            compiler,
            connection,
            template="EXTRACT(EPOCH FROM (%(expressions)s))::float",
            arg_joiner=" - ",
            **extra,
        )


def ended_or(moment: datetime) -> Coalesce:
    """A run's finish, or `moment` while it has not finished."""
    return Coalesce("finished_at", _expression(moment), output_field=DateTimeField())


def _expression(value):
    if isinstance(value, str):
        return F(value)
    if isinstance(value, datetime):
        return Value(value, output_field=DateTimeField())
    assert isinstance(value, Combinable), value
    return value
