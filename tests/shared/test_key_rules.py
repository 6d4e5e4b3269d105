"""The API keys' decisions, without a database: when a key is usable, which expiry may be
asked for, the reserved name, and that the last active admin key cannot be revoked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid4

import pytest

from shared import key_rules as rules
from shared.errors import Conflict, Unprocessable

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def key(role: str = "admin", *, revoked_at=None, expires_at=None) -> rules.KeyState:
    return rules.KeyState(id=uuid4(), role=role, revoked_at=revoked_at, expires_at=expires_at)


# --- usable -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("revoked_at", "expires_at", "expected"),
    [
        (None, None, True),
        (None, NOW + HOUR, True),
        (None, NOW + timedelta(microseconds=1), True),
        (None, NOW, False),  # expired from its expires_at on
        (None, NOW - HOUR, False),
        (NOW - HOUR, None, False),
        (NOW - HOUR, NOW + HOUR, False),
    ],
    ids=["plain", "expires later", "expires next", "expires now", "expired", "revoked", "both"],
)
def test_a_key_is_usable_unless_revoked_or_expired(revoked_at, expires_at, expected):
    assert rules.usable(revoked_at=revoked_at, expires_at=expires_at, at=NOW) is expected
    state = key(revoked_at=revoked_at, expires_at=expires_at)
    assert rules.is_usable(state, NOW) is expected


def test_an_expiry_in_another_offset_is_the_same_instant():
    bamako_noon_in_paris = datetime(2026, 12, 3, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    assert not rules.usable(revoked_at=None, expires_at=bamako_noon_in_paris, at=NOW)
    assert rules.usable(revoked_at=None, expires_at=bamako_noon_in_paris + HOUR, at=NOW)


# --- expires_at requested -----------------------------------------------------------------


@pytest.mark.parametrize(
    "expires_at",
    [
        None,
        NOW + HOUR,
        NOW + timedelta(days=3650),
        datetime(2027, 1, 2, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_an_absent_or_future_aware_expiry_is_accepted_in_utc(expires_at):
    accepted = rules.check_expiry(expires_at, now=NOW)
    assert accepted == expires_at
    assert accepted is None or accepted.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("expires_at", "error_type"),
    [
        (datetime(2027, 1, 1), "timezone_aware"),  # no offset
        (NOW, "future"),
        (NOW - HOUR, "future"),
        (datetime(2000, 1, 1, tzinfo=UTC), "future"),
        # No UTC time: past the largest one.
        (datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))), "datetime_range"),
    ],
    ids=["naive", "now", "an hour ago", "long ago", "after the year 9999 in UTC"],
)
def test_a_naive_or_past_expiry_answers_422_naming_the_field(expires_at, error_type):
    with pytest.raises(Unprocessable) as raised:
        rules.check_expiry(expires_at, now=NOW)
    [error] = raised.value.errors
    assert error.field == "body.expires_at" and error.type == error_type
    assert raised.value.status == 422


# --- the reserved name --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bootstrap", "Bootstrap", " BOOTSTRAP "])
def test_the_bootstrap_name_is_reserved(name):
    with pytest.raises(Unprocessable) as raised:
        rules.check_admin_key_name(name)
    assert [e.field for e in raised.value.errors] == ["body.name"]


@pytest.mark.parametrize("name", ["", "secretariat 2027", "bootstrap 2", "rebootstrap"])
def test_other_names_are_free(name):
    rules.check_admin_key_name(name)


# --- revoking -----------------------------------------------------------------------------


def test_the_last_active_admin_key_cannot_be_revoked():
    only = key()
    with pytest.raises(Conflict) as raised:
        rules.check_revocation(only, admin_keys=[only], at=NOW)
    assert raised.value.status == 409
    assert "POST /admin-keys" in raised.value.detail


def test_an_admin_key_goes_when_another_is_active():
    first, second = key(), key(expires_at=NOW + HOUR)
    rules.check_revocation(first, admin_keys=[first, second], at=NOW)
    rules.check_revocation(second, admin_keys=[first, second], at=NOW)


@pytest.mark.parametrize(
    "other",
    [
        key(expires_at=NOW - HOUR),
        key(expires_at=NOW),
        key(revoked_at=NOW - HOUR),
        key("partner"),
    ],
    ids=["expired", "expiring now", "revoked", "a partner key"],
)
def test_keys_that_do_not_open_the_door_do_not_count_as_another_admin(other):
    only = key()
    with pytest.raises(Conflict):
        rules.check_revocation(only, admin_keys=[only, other], at=NOW)


@pytest.mark.parametrize(
    "target",
    [key("partner"), key(revoked_at=NOW - HOUR), key(expires_at=NOW - HOUR)],
    ids=["partner key", "already revoked", "expired"],
)
def test_revoking_a_key_that_keeps_nobody_out_is_always_allowed(target):
    # Even with no active admin key in the list: nothing changes who can get in.
    rules.check_revocation(target, admin_keys=[target], at=NOW)
    rules.check_revocation(target, admin_keys=[], at=NOW)


def test_key_state_reads_a_row():
    row = {
        "id": uuid4(),
        "role": "admin",
        "revoked_at": None,
        "expires_at": NOW,
        "name": "x",
        "prefix": "rk_abc",
    }
    state = rules.KeyState.of(row)
    assert (state.id, state.role, state.revoked_at, state.expires_at) == (
        row["id"],
        "admin",
        None,
        NOW,
    )
