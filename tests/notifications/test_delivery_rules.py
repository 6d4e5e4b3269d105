"""The dispatcher's decisions, without a database: a delivery's next state after an answer,
and when an endpoint is disabled (SPEC 8)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notifications.delivery_rules import (
    FAILED,
    FAILING_REASON,
    GONE_REASON,
    PENDING,
    SUCCEEDED,
    Answer,
    Outcome,
    attempt_error,
    endpoint_health,
    next_state,
    to_disable,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SCHEDULE = (5.0, 300.0, 1800.0)

codes = st.one_of(st.none(), st.integers(min_value=100, max_value=599))
outcomes = st.builds(
    Outcome,
    status_code=codes,
    error=st.one_of(st.none(), st.just("timeout")),
    retry_after=st.one_of(st.none(), st.just("120"), st.just("nonsense")),
)


@pytest.mark.parametrize("code", [200, 201, 204, 299])
def test_a_2xx_succeeds_whatever_the_attempt(code):
    for attempts in (1, 3, 99):
        state = next_state(
            Outcome(status_code=code), attempts_made=attempts, schedule=SCHEDULE, now=NOW
        )
        assert (state.status, state.next_attempt_at, state.error) == (SUCCEEDED, None, None)


def test_a_410_fails_the_delivery_at_once_even_with_retries_left():
    state = next_state(Outcome(status_code=410), attempts_made=1, schedule=SCHEDULE, now=NOW)
    assert (state.status, state.next_attempt_at, state.error) == (FAILED, None, "HTTP 410")


@pytest.mark.parametrize("code", [301, 302, 400, 404, 500, 502])
def test_a_failure_waits_the_next_delay_of_the_schedule_with_jitter(code):
    for attempts, base in enumerate(SCHEDULE, start=1):
        state = next_state(
            Outcome(status_code=code), attempts_made=attempts, schedule=SCHEDULE, now=NOW
        )
        assert state.status == PENDING
        assert state.error == f"HTTP {code}"
        waited = (state.next_attempt_at - NOW).total_seconds()
        assert base * 0.8 <= waited <= base * 1.2


def test_an_error_without_an_answer_is_retried_and_recorded_as_is():
    state = next_state(Outcome(error="timeout"), attempts_made=1, schedule=SCHEDULE, now=NOW)
    assert (state.status, state.error) == (PENDING, "timeout")


def test_the_last_attempt_fails_the_delivery():
    for outcome in (Outcome(status_code=500), Outcome(error="timeout")):
        state = next_state(outcome, attempts_made=len(SCHEDULE) + 1, schedule=SCHEDULE, now=NOW)
        assert (state.status, state.next_attempt_at) == (FAILED, None)


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_is_honoured_on_429_and_503(code):
    state = next_state(
        Outcome(status_code=code, retry_after="120"), attempts_made=1, schedule=SCHEDULE, now=NOW
    )
    assert state.next_attempt_at == NOW + timedelta(seconds=120)


@pytest.mark.parametrize(("value", "waited"), [("0", 1), ("999999", 24 * 3600)])
def test_retry_after_is_kept_within_bounds(value, waited):
    state = next_state(
        Outcome(status_code=503, retry_after=value), attempts_made=1, schedule=SCHEDULE, now=NOW
    )
    assert state.next_attempt_at == NOW + timedelta(seconds=waited)


def test_retry_after_is_ignored_on_other_codes_and_after_the_last_attempt():
    other = next_state(
        Outcome(status_code=500, retry_after="120"),
        attempts_made=1,
        schedule=SCHEDULE,
        now=NOW,
        rng=random.Random(1),
    )
    assert 4 <= (other.next_attempt_at - NOW).total_seconds() <= 6
    last = next_state(
        Outcome(status_code=503, retry_after="120"), attempts_made=4, schedule=SCHEDULE, now=NOW
    )
    assert (last.status, last.next_attempt_at) == (FAILED, None)


def test_an_unreadable_retry_after_falls_back_to_the_schedule():
    state = next_state(
        Outcome(status_code=429, retry_after="soon"), attempts_made=2, schedule=SCHEDULE, now=NOW
    )
    assert 240 <= (state.next_attempt_at - NOW).total_seconds() <= 360


@given(outcome=outcomes, attempts=st.integers(min_value=1, max_value=10))
def test_a_pending_delivery_is_always_due_later_and_a_finished_one_never(outcome, attempts):
    state = next_state(outcome, attempts_made=attempts, schedule=SCHEDULE, now=NOW)
    assert state.status in (PENDING, SUCCEEDED, FAILED)
    assert (state.next_attempt_at is not None) == (state.status == PENDING)
    if state.status == PENDING:
        assert NOW <= state.next_attempt_at <= NOW + timedelta(hours=24)
        assert attempts <= len(SCHEDULE)
    assert (state.status == SUCCEEDED) == outcome.succeeded
    assert state.error == attempt_error(outcome)


def test_a_success_clears_the_failures_before_it_in_the_batch():
    endpoint = uuid4()
    health = endpoint_health(
        [
            Answer(endpoint, Outcome(status_code=500), NOW),
            Answer(endpoint, Outcome(status_code=200), NOW + timedelta(seconds=1)),
        ]
    )[endpoint]
    assert (health.reset, health.failed_at, health.changed) == (True, None, True)
    assert not health.may_disable


def test_failures_after_the_last_success_start_from_the_first_of_them():
    endpoint = uuid4()
    times = [NOW + timedelta(seconds=s) for s in range(4)]
    health = endpoint_health(
        [
            Answer(endpoint, Outcome(status_code=500), times[0]),
            Answer(endpoint, Outcome(status_code=204), times[1]),
            Answer(endpoint, Outcome(error="timeout"), times[2]),
            Answer(endpoint, Outcome(status_code=502), times[3]),
        ]
    )[endpoint]
    assert (health.reset, health.failed_at, health.last_failure) == (True, times[2], times[3])


def test_each_endpoint_keeps_its_own_health():
    good, bad = uuid4(), uuid4()
    health = endpoint_health(
        [Answer(good, Outcome(status_code=200), NOW), Answer(bad, Outcome(status_code=500), NOW)]
    )
    assert health[good].failed_at is None and health[good].reset
    assert health[bad].failed_at == NOW and not health[bad].reset


def test_a_410_disables_its_endpoint_at_once():
    endpoint = uuid4()
    health = endpoint_health([Answer(endpoint, Outcome(status_code=410), NOW)])
    assert health[endpoint].may_disable
    assert not health[endpoint].changed  # a 410 does not start failing_since
    assert to_disable(health, {}) == {endpoint: GONE_REASON}


def test_an_endpoint_that_has_only_failed_for_five_days_is_disabled():
    endpoint = uuid4()
    health = endpoint_health(
        [Answer(endpoint, Outcome(status_code=500), NOW, failing_at_claim=True)]
    )
    assert health[endpoint].may_disable
    since = NOW - timedelta(days=5)
    assert to_disable(health, {endpoint: since}) == {endpoint: FAILING_REASON}
    almost = NOW - timedelta(days=5) + timedelta(seconds=1)
    assert to_disable(health, {endpoint: almost}) == {}


def test_a_success_keeps_an_endpoint_failing_for_days_enabled():
    endpoint = uuid4()
    health = endpoint_health(
        [Answer(endpoint, Outcome(status_code=200), NOW, failing_at_claim=True)]
    )
    assert not health[endpoint].may_disable
    assert to_disable(health, {endpoint: None}) == {}


def test_an_endpoint_not_failing_at_claim_time_cannot_be_disabled_by_failures():
    endpoint = uuid4()
    health = endpoint_health([Answer(endpoint, Outcome(status_code=500), NOW)])
    assert not health[endpoint].may_disable


@given(
    answers=st.lists(
        st.tuples(st.sampled_from(range(3)), outcomes, st.integers(0, 10 * 24 * 3600)),
        max_size=20,
    ),
    failing_days=st.dictionaries(st.sampled_from(range(3)), st.integers(0, 10)),
)
def test_only_a_410_or_five_days_of_failure_disable(answers, failing_days):
    batch = [
        Answer(endpoint, outcome, NOW + timedelta(seconds=s)) for endpoint, outcome, s in answers
    ]
    health = endpoint_health(batch)
    since = {e: NOW - timedelta(days=d) for e, d in failing_days.items()}
    disabled = to_disable(health, since)
    for endpoint, reason in disabled.items():
        mine = [a for a in batch if a.endpoint_id == endpoint]
        if reason == GONE_REASON:
            assert any(a.outcome.status_code == 410 for a in mine)
        else:
            assert reason == FAILING_REASON
            assert health[endpoint].failed_at is not None
            assert health[endpoint].last_failure - since[endpoint] >= timedelta(days=5)
    for endpoint in set(health) - set(disabled):
        assert not health[endpoint].gone
