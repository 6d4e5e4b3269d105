"""API keys: when a key opens the door, which expiry a client may ask for, which key may go.

Pure decisions on plain data (SPEC 4): the stores load the keys and save what is decided.

- A key is **usable** at a time when it is not revoked and not past its `expires_at`.
- A requested `expires_at` carries a UTC offset and lies in the future, else 422.
- The **last active admin key** (usable, role admin) cannot be revoked: nobody could then
  create or revoke keys without a restart. The caller creates another admin key first.
- The name `bootstrap` is the operator's start-up key's (RELAIS_BOOTSTRAP_ADMIN_KEY or
  `.data/admin.key`): a key created through the API cannot take it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from shared.errors import Conflict, FieldError, Unprocessable

BOOTSTRAP_NAME = "bootstrap"
LAST_ADMIN_KEY = (
    "This is the last active admin key: revoking it would leave nobody able to manage the "
    "hub. Create another admin key first (POST /admin-keys), switch to it, then revoke "
    "this one."
)


@dataclass(frozen=True, slots=True)
class KeyState:
    """What the decisions need of a key (a row of `hub.api_keys`)."""

    id: UUID
    role: str
    revoked_at: datetime | None
    expires_at: datetime | None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> KeyState:
        return cls(
            id=row["id"],
            role=row["role"],
            revoked_at=row["revoked_at"],
            expires_at=row["expires_at"],
        )


def usable(*, revoked_at: datetime | None, expires_at: datetime | None, at: datetime) -> bool:
    """Whether a key opens the door at `at`: not revoked, and not expired (a key is
    expired from its `expires_at` on)."""
    return revoked_at is None and (expires_at is None or at < expires_at)


def is_usable(key: KeyState, at: datetime) -> bool:
    return usable(revoked_at=key.revoked_at, expires_at=key.expires_at, at=at)


def check_expiry(
    expires_at: datetime | None, *, now: datetime, field: str = "body.expires_at"
) -> datetime | None:
    """`expires_at` in UTC, or None when absent; 422 naming `field` unless it has a UTC
    offset, is later than `now` and falls within the years 1 to 9999 in UTC."""
    if expires_at is None:
        return None
    if expires_at.tzinfo is None or expires_at.utcoffset() is None:
        raise _bad_expiry(
            field,
            "must carry a UTC offset (Z or +hh:mm)",
            "timezone_aware",
            "e.g. 2027-01-31T00:00:00Z",
        )
    try:
        in_utc = expires_at.astimezone(UTC)
    except OverflowError:
        raise _bad_expiry(
            field, "must fall within the years 1 to 9999 in UTC", "datetime_range"
        ) from None
    if in_utc <= now:
        raise _bad_expiry(field, "must lie in the future", "future")
    return in_utc


def _bad_expiry(field: str, message: str, kind: str, example: str = "") -> Unprocessable:
    detail = f"expires_at {message}" + (f", {example}" if example else "") + "."
    return Unprocessable(detail, errors=[FieldError(field=field, message=message, type=kind)])


def check_admin_key_name(name: str, *, field: str = "body.name") -> None:
    """422 for the name reserved to the operator's start-up key (whatever its case)."""
    if name.strip().casefold() == BOOTSTRAP_NAME:
        raise Unprocessable(
            f"The name {BOOTSTRAP_NAME!r} is reserved to the admin key the hub starts with.",
            errors=[
                FieldError(
                    field=field,
                    message=f"{BOOTSTRAP_NAME!r} is reserved to the start-up admin key",
                    type="reserved",
                )
            ],
        )


def active_admin_keys(keys: Iterable[KeyState], at: datetime) -> list[KeyState]:
    return [k for k in keys if k.role == "admin" and is_usable(k, at)]


def check_revocation(key: KeyState, *, admin_keys: Iterable[KeyState], at: datetime) -> None:
    """409 when revoking `key` would leave no active admin key.

    `admin_keys` are the admin keys not revoked, read under a lock that a concurrent
    revocation also takes: two revocations cannot each count the other's key. A key
    already revoked or expired may always be revoked (nothing changes who can get in)."""
    if key.role != "admin" or not is_usable(key, at):
        return
    if not [k for k in active_admin_keys(admin_keys, at) if k.id != key.id]:
        raise Conflict(LAST_ADMIN_KEY)
