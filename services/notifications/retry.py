"""When to try a webhook again (SPEC 8). Pure."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

JITTER = 0.2
RETRY_AFTER_MAX = timedelta(hours=24)
RETRY_AFTER_MIN = timedelta(seconds=1)
DISABLE_AFTER = timedelta(days=5)


def next_delay(
    schedule: Sequence[float], attempts_made: int, *, rng: random.Random | None = None
) -> timedelta | None:
    """The wait before the next attempt after `attempts_made` attempts, with ±20 % jitter;
    None when the schedule is exhausted."""
    if attempts_made < 1 or attempts_made > len(schedule):
        return None
    base = schedule[attempts_made - 1]
    factor = 1 + (rng or random).uniform(-JITTER, JITTER)
    return timedelta(seconds=max(0.0, base * factor))


def retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A `Retry-After` header (seconds or an HTTP date), clamped to [1 s, 24 h]."""
    if not value:
        return None
    value = value.strip()
    try:
        delay = timedelta(seconds=int(value))
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        delay = when - now
    return min(max(delay, RETRY_AFTER_MIN), RETRY_AFTER_MAX)
