"""What an attempt's answer decides (SPEC 8): the delivery's next state and its endpoint's
health. Pure: plain data in, plain data out; the dispatcher loads and saves around it.

- A 2xx succeeds. Any other answer, or none, is a failure: it is tried again after the next
  delay of the schedule (with jitter; `Retry-After` on 429/503 within bounds) until the
  schedule is exhausted, then the delivery is failed. A 410 fails it at once and disables
  its endpoint.
- An endpoint's health is when its failures began (`failing_since`): a success clears it.
  An endpoint that has only failed for 5 days is disabled.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.notifications.retry import DISABLE_AFTER, next_delay, retry_after

PENDING = "pending"
SUCCEEDED = "succeeded"
FAILED = "failed"
DELIVERY_STATUSES = (PENDING, SUCCEEDED, FAILED)

GONE = 410
RETRY_AFTER_HONOURED = frozenset({429, 503})
GONE_REASON = "the receiver answered 410 Gone"
FAILING_REASON = "every attempt failed for 5 days"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt got: an HTTP answer, or an error without one."""

    status_code: int | None = None
    error: str | None = None
    excerpt: str | None = None
    latency_ms: int = 0
    retry_after: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True, slots=True)
class NextState:
    """A delivery after an attempt: its status, when it is tried again, the attempt's error."""

    status: str
    next_attempt_at: datetime | None = None
    error: str | None = None


def attempt_error(outcome: Outcome) -> str | None:
    """The error an attempt records: `HTTP <code>` for an answer that is not a success."""
    if outcome.status_code is not None and not outcome.succeeded:
        return f"HTTP {outcome.status_code}"
    return outcome.error


def next_state(
    outcome: Outcome,
    *,
    attempts_made: int,
    schedule: Sequence[float],
    now: datetime,
    rng: random.Random | None = None,
) -> NextState:
    """The delivery's state once `outcome` is in, `attempts_made` attempts counting this one."""
    error = attempt_error(outcome)
    if outcome.succeeded:
        return NextState(SUCCEEDED, None, error)
    if outcome.status_code == GONE:
        return NextState(FAILED, None, error)
    delay = next_delay(schedule, attempts_made, rng=rng)
    if delay is None:
        return NextState(FAILED, None, error)
    if outcome.status_code in RETRY_AFTER_HONOURED:
        delay = retry_after(outcome.retry_after, now) or delay
    return NextState(PENDING, now + delay, error)


@dataclass(slots=True)
class EndpointHealth:
    """An endpoint's answers in one batch, in the order they came."""

    was_failing: bool = False  # failing_since was set when one of its deliveries was claimed
    reset: bool = False  # a success: failing_since starts again from `failed_at`
    failed_at: datetime | None = None  # the first failure after the batch's last success
    last_failure: datetime | None = None
    gone: bool = False  # a 410

    def answered(self, outcome: Outcome, at: datetime, *, failing_at_claim: bool) -> None:
        """Take one more answer into account."""
        if failing_at_claim:
            self.was_failing = True
        if outcome.succeeded:
            self.reset, self.failed_at = True, None
        elif outcome.status_code == GONE:
            self.gone = True
        else:
            if self.failed_at is None:
                self.failed_at = at
            self.last_failure = at

    @property
    def changed(self) -> bool:
        """Whether `failing_since` may change: a failure, or a success that clears it."""
        return self.failed_at is not None or self.reset

    @property
    def may_disable(self) -> bool:
        """A 410, or a failure of an endpoint that was already failing."""
        return self.gone or (self.was_failing and self.failed_at is not None)


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer for `endpoint_health`: whose, what, when, and whether the endpoint was
    failing when the delivery was claimed."""

    endpoint_id: Hashable
    outcome: Outcome
    at: datetime
    failing_at_claim: bool = False


def endpoint_health(answers: Iterable[Answer]) -> dict[Hashable, EndpointHealth]:
    """Each endpoint's health after the answers, as if recorded one by one in that order."""
    health: dict[Hashable, EndpointHealth] = {}
    for answer in answers:
        health.setdefault(answer.endpoint_id, EndpointHealth()).answered(
            answer.outcome, answer.at, failing_at_claim=answer.failing_at_claim
        )
    return health


def disable_reason(health: EndpointHealth, failing_since: datetime | None) -> str | None:
    """Why the endpoint is disabled after these answers (`failing_since` as recorded with
    them), or None: a 410 at once; an endpoint that has only failed for 5 days."""
    if health.gone:
        return GONE_REASON
    if (
        health.failed_at is not None
        and failing_since is not None
        and health.last_failure is not None
        and health.last_failure - failing_since >= DISABLE_AFTER
    ):
        return FAILING_REASON
    return None


def to_disable(
    health: Mapping[Hashable, EndpointHealth], failing_since: Mapping[Hashable, datetime | None]
) -> dict[Hashable, str]:
    """The endpoints to disable and why, in a stable order (by id)."""
    disable = {}
    for endpoint_id in sorted(health, key=str):
        reason = disable_reason(health[endpoint_id], failing_since.get(endpoint_id))
        if reason is not None:
            disable[endpoint_id] = reason
    return disable
