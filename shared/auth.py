"""API keys: random, stored only as hashes, compared in constant time; admin and partner roles.

A key is `rk_` followed by 32 random bytes in URL-safe base64. Only its SHA-256 is stored: a
key has 256 bits of entropy, so a fast hash is enough and no salt or slow hash is needed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from uuid import UUID

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from shared.db import Connection, Database, Statement
from shared.key_rules import BOOTSTRAP_NAME
from shared.settings import MAX_KEY_LENGTH
from shared.tables import api_keys

KEY_PREFIX = "rk_"
LAST_USED_RESOLUTION = timedelta(minutes=1)

Role = Literal["admin", "partner"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key of the coordination (admin) or of one partner."""

    key_id: UUID
    role: Role
    partner_id: UUID | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def actor(self) -> str:
        """The event log's `actor`: a partner id, or `admin`."""
        return "admin" if self.partner_id is None else str(self.partner_id)

    @property
    def scope(self) -> str:
        """What idempotency keys are scoped to: the partner, or the coordination."""
        return self.actor


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def display_prefix(key: str) -> str:
    """The first characters of a key, safe to show in lists to tell keys apart."""
    return key[:10]


_CREATE = Statement(
    insert(api_keys)
    .values(
        id=bindparam("id"),
        role=bindparam("role"),
        partner_id=bindparam("partner_id"),
        name=bindparam("name"),
        prefix=bindparam("prefix"),
        key_hash=bindparam("key_hash"),
        expires_at=bindparam("expires_at"),
    )
    .returning(*[c for c in api_keys.c if c.name != "key_hash"])
)


async def create_key(
    conn: Connection,
    *,
    role: Role,
    partner_id: UUID | None,
    name: str = "",
    key: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[dict, str]:
    """Store a new key (or the given one) and return its row and the key, shown once."""
    key = key or generate_key()
    row = await _CREATE.fetchrow(
        conn,
        id=uuid.uuid4(),
        role=role,
        partner_id=partner_id,
        name=name,
        prefix=display_prefix(key),
        key_hash=hash_key(key),
        expires_at=expires_at,
    )
    return dict(row), key


# The operator's start-up key (RELAIS_BOOTSTRAP_ADMIN_KEY, or `.data/admin.key` of the
# launcher): registered if new, in one statement, so that replicas starting together agree.
_REGISTER_BOOTSTRAP = Statement(
    pg_insert(api_keys)
    .values(
        id=bindparam("id"),
        role="admin",
        partner_id=None,
        name=BOOTSTRAP_NAME,
        prefix=bindparam("prefix"),
        key_hash=bindparam("key_hash"),
    )
    .on_conflict_do_nothing(index_elements=[api_keys.c.key_hash])
    .returning(api_keys.c.id)
)
_KEY_BY_HASH = Statement(
    select(api_keys.c.id, api_keys.c.revoked_at).where(api_keys.c.key_hash == bindparam("digest"))
)
# A new start-up key replaces the previous ones: a key taken out of `.data/admin.key` or
# of the environment stops working.
_REVOKE_OTHER_BOOTSTRAP_KEYS = Statement(
    update(api_keys)
    .where(
        api_keys.c.role == "admin",
        api_keys.c.name == BOOTSTRAP_NAME,
        api_keys.c.revoked_at.is_(None),
        api_keys.c.id != bindparam("kept_id"),
    )
    .values(revoked_at=func.now())
    .returning(api_keys.c.id)
)

BootstrapOutcome = Literal["added", "present", "revoked"]


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """What registering the start-up key did: `added` (and `replaced`, the ids of the
    previous start-up keys it revoked), `present` (it was known and works), or `revoked`
    (an admin revoked it through the API: it stays revoked and does not work)."""

    outcome: BootstrapOutcome
    key_id: UUID
    replaced: tuple[UUID, ...] = ()


async def ensure_admin_key(conn: Connection, key: str) -> Bootstrap:
    """Register `key`, the operator's start-up key, as the admin key named `bootstrap`.

    A new one revokes the previous start-up keys. A known one is left as it is: one that an
    admin revoked through the API is never brought back (the operator sets a new one)."""
    digest = hash_key(key)
    added = await _REGISTER_BOOTSTRAP.fetchval(
        conn, id=uuid.uuid4(), prefix=display_prefix(key), key_hash=digest
    )
    if added is not None:
        replaced = await _REVOKE_OTHER_BOOTSTRAP_KEYS.fetch(conn, kept_id=added)
        return Bootstrap("added", added, tuple(r["id"] for r in replaced))
    existing = await _KEY_BY_HASH.fetchrow(conn, digest=digest)
    return Bootstrap("present" if existing["revoked_at"] is None else "revoked", existing["id"])


# Built once: the look-up runs on every request.
_LOOK_UP = Statement(
    select(
        api_keys.c.id,
        api_keys.c.role,
        api_keys.c.partner_id,
        api_keys.c.key_hash,
        api_keys.c.last_used_at,
    ).where(
        api_keys.c.key_hash == bindparam("digest"),
        # Usable (`shared.key_rules.usable`): not revoked, not expired.
        api_keys.c.revoked_at.is_(None),
        api_keys.c.expires_at.is_(None) | (api_keys.c.expires_at > bindparam("now")),
        api_keys.c.partner_active.is_(True),
    )
)
_TOUCH = Statement(
    update(api_keys)
    .where(
        api_keys.c.id == bindparam("key_id"),
        (api_keys.c.last_used_at.is_(None)) | (api_keys.c.last_used_at < bindparam("stale_before")),
    )
    .values(last_used_at=bindparam("now"))
)


def plausible(presented: str) -> bool:
    """Whether a presented key could be one: worth a look-up.

    Generated keys start with `rk_`, but an operator's own bootstrap key may have any form
    (SPEC 2a), so only the length is checked before hashing."""
    return 0 < len(presented) <= MAX_KEY_LENGTH


async def look_up(db: Database, presented: str) -> Principal | None:
    """The principal of a presented key, or None for an unknown, revoked, expired or
    disabled one. Nothing is cached: a key revoked or expired answers 401 on its next
    request.

    Each statement commits alone (no transaction around them): one round trip, and
    `last_used_at` written when it was due, at most once a minute per key.
    """
    if not plausible(presented):
        return None
    digest = hash_key(presented)
    now = datetime.now(UTC)
    async with db.connection() as conn:
        row = await _LOOK_UP.fetchrow(conn, digest=digest, now=now)
        if row is None or not hmac.compare_digest(row["key_hash"], digest):
            return None
        if row["last_used_at"] is None or now - row["last_used_at"] >= LAST_USED_RESOLUTION:
            # A hot row: written at most once a minute per key.
            await _TOUCH.execute(
                conn, key_id=row["id"], stale_before=now - LAST_USED_RESOLUTION, now=now
            )
    return Principal(key_id=row["id"], role=row["role"], partner_id=row["partner_id"])
