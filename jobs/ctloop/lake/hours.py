"""Time as the jobs see it: UTC instants and half-open intervals of whole hours.

Every job interval is ``[start, end)`` on whole hours (the raw lake's partitions); the Spark jobs
rebuild the whole days such an interval touches (their partitions).
Times given on the command line or by a client are parsed here, once, with the same rules.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def parse_time(value: str | datetime) -> datetime:
    """An ISO date or datetime (``Z`` accepted) as an aware UTC datetime; no zone means UTC."""
    if isinstance(value, datetime):
        moment = value
    else:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_flag(flag: str, value: str) -> datetime:
    """``parse_time`` for a command-line flag: a bad value is an error that names the flag."""
    try:
        return parse_time(value)
    except ValueError:
        raise ValueError(f"{flag}: expected an ISO date or datetime like 2026-01-03 or 2026-01-03T14:00Z, "
                         f"got {value!r}") from None


def parse_interval(start: str, end: str) -> tuple[datetime, datetime]:
    """Parse ``--start/--end`` (ISO dates or datetimes, UTC when no zone) into whole UTC hours."""
    parsed = []
    for flag, value in (("--start", start), ("--end", end)):
        moment = parse_flag(flag, value)
        if moment.minute or moment.second or moment.microsecond:
            raise ValueError(f"{flag}: the jobs work on whole hours, got {value!r}")
        parsed.append(moment)
    if parsed[0] >= parsed[1]:
        raise ValueError(f"--start {start!r} must be before --end {end!r}")
    return parsed[0], parsed[1]


def hours(start: datetime, end: datetime) -> list[datetime]:
    """Every whole hour in ``[start, end)``."""
    out, at = [], start
    while at < end:
        out.append(at)
        at += HOUR
    return out


def day_start(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def days(start: datetime, end: datetime) -> list[datetime]:
    """The start of every day that ``[start, end)`` touches."""
    out, at = [], day_start(start)
    while at < end:
        out.append(at)
        at += DAY
    return out
