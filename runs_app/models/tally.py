"""Running totals of ended runs, per pipeline and outcome, for /metrics.

Kept as each run ends (in the transaction that ends it), so a scrape reads a few rows
instead of scanning the run history, and the totals never go down when old runs are
pruned (Prometheus counters must only grow)."""

from __future__ import annotations

import bisect

from django.db import IntegrityError, models, transaction

# Upper bounds (seconds) of the histogram buckets; one more bucket holds the rest.
DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)
SETUP_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)


def empty_buckets(bounds: tuple) -> list[int]:
    return [0] * (len(bounds) + 1)


class RunTally(models.Model):
    pipeline_name = models.CharField(max_length=100)  # kept when the pipeline goes
    status = models.CharField(max_length=10)
    count = models.BigIntegerField(default=0)
    # Per bucket (not cumulative) counts of the runs that have a duration, and their sum.
    duration_buckets = models.JSONField(default=list)
    duration_sum = models.FloatField(default=0.0)
    setup_buckets = models.JSONField(default=list)
    setup_sum = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["pipeline_name", "status"], name="one_tally_per_outcome"
            )
        ]

    def __str__(self) -> str:
        return f"{self.pipeline_name} {self.status}: {self.count}"

    @classmethod
    def count_run(cls, pipeline_name: str, status: str, duration=None, setup=None) -> None:
        """Add one ended run (durations as timedeltas, or None); inside its transaction."""
        tally = cls._locked(pipeline_name, status)
        tally.count += 1
        if duration is not None:
            tally.duration_buckets = _observe(tally.duration_buckets, DURATION_BUCKETS, duration)
            tally.duration_sum += duration.total_seconds()
        if setup is not None:
            tally.setup_buckets = _observe(tally.setup_buckets, SETUP_BUCKETS, setup)
            tally.setup_sum += setup.total_seconds()
        tally.save()

    @classmethod
    def _locked(cls, pipeline_name: str, status: str) -> RunTally:
        rows = cls.objects.select_for_update().filter(pipeline_name=pipeline_name, status=status)
        tally = rows.first()
        if tally is None:
            try:
                with transaction.atomic():
                    return cls.objects.create(
                        pipeline_name=pipeline_name,
                        status=status,
                        duration_buckets=empty_buckets(DURATION_BUCKETS),
                        setup_buckets=empty_buckets(SETUP_BUCKETS),
                    )
            except IntegrityError:  # another process made it first
                tally = rows.get()
        return tally


def _observe(buckets: list[int], bounds: tuple, value) -> list[int]:
    seconds = value.total_seconds()
    counts = list(buckets) or empty_buckets(bounds)
    counts[bisect.bisect_left(bounds, seconds)] += 1
    return counts


class RunDay(models.Model):
    """Ended runs per day (the day each was queued, in TIME_ZONE) and outcome: the
    dashboard's calendar reads a year of these (at most a few thousand rows) instead of
    grouping a year of runs. Counted as each run ends, like RunTally, and kept when
    retention removes old runs."""

    day = models.DateField()
    status = models.CharField(max_length=10)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "status"], name="one_count_per_day")]

    def __str__(self) -> str:
        return f"{self.day} {self.status}: {self.count}"

    @classmethod
    def count_run(cls, day, status: str) -> None:
        """Add one ended run; inside the transaction that ends it."""
        if cls.objects.filter(day=day, status=status).update(count=models.F("count") + 1):
            return
        try:
            with transaction.atomic():
                cls.objects.create(day=day, status=status, count=1)
        except IntegrityError:  # another process made the row first
            cls.objects.filter(day=day, status=status).update(count=models.F("count") + 1)
