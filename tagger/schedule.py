"""Cron expressions for the beat schedule. Pure apart from Celery's crontab class."""

from __future__ import annotations

from celery.schedules import crontab

FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


def parse_cron(expr: str) -> crontab:
    """A five-field cron expression (``m h dom mon dow``, UTC) as a Celery crontab.

    Raises ValueError naming the expression and the field that is wrong.
    """
    parts = expr.split()
    if len(parts) != len(FIELDS):
        raise ValueError(
            f"cron expression {expr!r} must have 5 fields (minute hour day month weekday), "
            f"got {len(parts)}"
        )
    kwargs = dict(zip(FIELDS, parts, strict=True))
    try:
        schedule = crontab(**kwargs)
    except Exception as exc:  # celery raises ValueError or its own ParseException
        raise ValueError(f"cron expression {expr!r}: {exc}") from None
    return schedule
