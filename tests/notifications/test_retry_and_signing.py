"""The retry schedule and Standard Webhooks signatures, without a database (SPEC 8)."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from services.notifications.retry import next_delay, retry_after
from services.notifications.signing import (
    headers_for,
    new_secret,
    rotate,
    signature_header,
    valid_secrets,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SPEC_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000)


@given(attempts=st.integers(1, len(SPEC_SCHEDULE)), seed=st.integers())
def test_each_delay_is_its_schedule_entry_within_twenty_percent(attempts, seed):
    delay = next_delay(SPEC_SCHEDULE, attempts, rng=random.Random(seed))
    base = SPEC_SCHEDULE[attempts - 1]
    assert base * 0.8 <= delay.total_seconds() <= base * 1.2


@pytest.mark.parametrize("attempts", [0, -1, len(SPEC_SCHEDULE) + 1, 100])
def test_no_delay_outside_the_schedule(attempts):
    assert next_delay(SPEC_SCHEDULE, attempts) is None


def test_retry_after_in_seconds_and_as_an_http_date():
    assert retry_after("120", NOW) == timedelta(seconds=120)
    assert retry_after(" 30 ", NOW) == timedelta(seconds=30)
    assert retry_after("Sun, 01 Mar 2026 12:10:00 GMT", NOW) == timedelta(minutes=10)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", timedelta(seconds=1)),
        ("-5", timedelta(seconds=1)),
        ("9999999", timedelta(hours=24)),
        ("Sun, 01 Mar 2026 11:00:00 GMT", timedelta(seconds=1)),  # in the past
        ("Tue, 01 Mar 2039 12:00:00 GMT", timedelta(hours=24)),
    ],
)
def test_retry_after_is_clamped_between_one_second_and_a_day(value, expected):
    assert retry_after(value, NOW) == expected


@pytest.mark.parametrize("value", [None, "", "soon", "12.5 minutes"])
def test_an_unreadable_retry_after_is_none(value):
    assert retry_after(value, NOW) is None


def test_a_secret_is_whsec_and_32_random_bytes():
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32


def test_rotation_keeps_the_old_secret_signing_for_24_hours():
    old = new_secret()
    stored = [{"secret": old, "created_at": NOW.isoformat(), "expires_at": None}]
    rotated, fresh = rotate(stored, NOW)
    assert [s["secret"] for s in rotated] == [fresh, old]
    assert valid_secrets(rotated, NOW + timedelta(hours=23)) == [fresh, old]
    assert valid_secrets(rotated, NOW + timedelta(hours=24)) == [fresh]
    again, newest = rotate(rotated, NOW + timedelta(hours=25))
    assert [s["secret"] for s in again] == [newest, fresh]


def test_every_valid_secret_signs_and_a_receiver_verifies_with_any():
    old, fresh = new_secret(), new_secret()
    body = '{"type":"referral.created"}'
    now = datetime.now(UTC)  # receivers refuse a stale timestamp
    headers = headers_for([fresh, old], "evt_1", now, body)
    assert headers["content-type"] == "application/cloudevents+json"
    assert headers["webhook-id"] == "evt_1"
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert headers["webhook-signature"] == signature_header([fresh, old], "evt_1", now, body)
    for secret in (old, fresh):
        assert Webhook(secret).verify(body, headers) == {"type": "referral.created"}
    with pytest.raises(Exception, match="signature"):
        Webhook(new_secret()).verify(body, headers)
