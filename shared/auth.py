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

from sqlalchemy import bindparam, insert, select, update

from shared.db import Connection, Database, Statement
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
    )
    .returning(*[c for c in api_keys.c if c.name != "key_hash"])
)
_KEY_BY_HASH = Statement(select(api_keys.c.id).where(api_keys.c.key_hash == bindparam("digest")))
_UNREVOKE = Statement(
    update(api_keys).where(api_keys.c.id == bindparam("key_id")).values(revoked_at=None)
)


async def create_key(
    conn: Connection,
    *,
    role: Role,
    partner_id: UUID | None,
    name: str = "",
    key: str | None = None,
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
    )
    return dict(row), key


async def ensure_admin_key(conn: Connection, key: str, *, name: str = "bootstrap") -> bool:
    """Register `key` as an admin key unless it already is; True when it was added."""
    existing = await _KEY_BY_HASH.fetchval(conn, digest=hash_key(key))
    if existing is not None:
        await _UNREVOKE.execute(conn, key_id=existing)
        return False
    await create_key(conn, role="admin", partner_id=None, name=name, key=key)
    return True


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
        api_keys.c.revoked_at.is_(None),
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
    """The principal of a presented key, or None for an unknown, revoked or disabled one.

    Each statement commits alone (no transaction around them): one round trip, and
    `last_used_at` written when it was due, at most once a minute per key.
    """
    if not plausible(presented):
        return None
    digest = hash_key(presented)
    async with db.connection() as conn:
        row = await _LOOK_UP.fetchrow(conn, digest=digest)
        if row is None or not hmac.compare_digest(row["key_hash"], digest):
            return None
        now = datetime.now(UTC)
        if row["last_used_at"] is None or now - row["last_used_at"] >= LAST_USED_RESOLUTION:
            # A hot row: written at most once a minute per key.
            await _TOUCH.execute(
                conn, key_id=row["id"], stale_before=now - LAST_USED_RESOLUTION, now=now
            )
    return Principal(key_id=row["id"], role=row["role"], partner_id=row["partner_id"])
