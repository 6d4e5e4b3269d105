"""`Idempotency-Key` on every POST (SPEC 7).

Scoped to the caller (its partner, or admin), the method and the path. The same key with the
same JSON body (compared parsed) returns the first response; another body answers 422; a key
still in flight answers 409; records are kept 24 hours. Only answers of requests that were
carried out (below 400) are stored: a 4xx changed nothing (SPEC 9), so a client may correct
its request and send it again under the same key; a 5xx may be retried as it was.

The record is claimed before the handler runs and completed after it answers, in separate
short transactions. A process that dies between the two leaves the key in flight; after
`ABANDONED_AFTER` such a key may be claimed again. `shared.http_layer` calls these around the
handler; this module holds the record's queries.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from sqlalchemy import bindparam, delete, select, text, update
from sqlalchemy.dialects.postgresql import insert

from shared.db import Connection, Database, Statement
from shared.tables import idempotency_records as records

RETENTION = timedelta(hours=24)
ABANDONED_AFTER = timedelta(seconds=60)
MAX_KEY_LENGTH = 255
_REPLAYED_HEADERS = {"content-type", "location", "etag"}


def request_fingerprint(body: bytes, content_type: str = "") -> bytes:
    """SHA-256 of the body as parsed JSON (key order and spacing do not matter); of a
    multipart body with its random boundary taken out; else of the bytes."""
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
        match = re.search(r"boundary=\"?([^\";]+)", content_type)
        if content_type.startswith("multipart/") and match:
            canonical = body.replace(match.group(1).encode("latin-1"), b"BOUNDARY")
    return hashlib.sha256(canonical).digest()


_PURGE = Statement(
    delete(records).where(records.c.created_at < text("now() - interval '24 hours'"))
)


async def purge_expired(db: Database) -> int:
    async with db.connection() as conn:
        return await _PURGE.execute(conn)


@dataclass(frozen=True, slots=True)
class Replay:
    """The first answer of a request carried out under this key, to send again."""

    status: int
    headers: dict[str, str]
    body: bytes


# What `claim` found instead of a key free to take: the key is used with another body, or its
# first request is still being carried out, or it was carried out (its answer to replay).
Taken = Literal["reused", "in_flight"] | Replay


def ident_of(*, scope: str, path: str, key: str) -> dict[str, str]:
    """What identifies a key's record: the caller's scope, the method, the path and the key."""
    return {"scope": scope, "method": "POST", "path": path[:500], "key": key}


_MATCH = (
    records.c.scope == bindparam("scope"),
    records.c.method == bindparam("method"),
    records.c.path == bindparam("path"),
    records.c.key == bindparam("key"),
)
# A new record, in flight: most keys are new, and this is then the only statement.
_NEW = insert(records).values(
    scope=bindparam("scope"),
    method=bindparam("method"),
    path=bindparam("path"),
    key=bindparam("key"),
    request_hash=bindparam("fingerprint"),
    state="in_flight",
)
_CLAIM = Statement(_NEW.on_conflict_do_nothing().returning(records.c.key))
_CURRENT = Statement(
    select(
        records,
        (records.c.created_at < text("now() - interval '24 hours'")).label("expired"),
        (records.c.created_at < text("now() - interval '60 seconds'")).label("abandoned"),
    )
    .where(*_MATCH)
    .with_for_update()
)
_RETAKE = Statement(
    _NEW.on_conflict_do_update(
        index_elements=["scope", "method", "path", "key"],
        set_={
            "request_hash": bindparam("fingerprint"),
            "state": "in_flight",
            "created_at": text("now()"),
            "response_status": None,
            "response_headers": None,
            "response_body": None,
        },
    )
)
_COMPLETE = Statement(
    update(records)
    .where(*_MATCH)
    .values(
        state="done",
        response_status=bindparam("status"),
        response_headers=bindparam("headers"),
        response_body=bindparam("body"),
    )
)
_RELEASE = Statement(delete(records).where(*_MATCH, records.c.state == "in_flight"))


async def claim(db: Database, *, ident: dict[str, str], fingerprint: bytes) -> Taken | None:
    """Take the key for this request (None: it may run), or say why it may not."""
    async with db.connection() as conn:
        # Most keys are new: one statement, committed alone.
        if await _CLAIM.fetchval(conn, **ident, fingerprint=fingerprint) is not None:
            return None
        async with conn.transaction():
            row = await _CURRENT.fetchrow(conn, **ident)
            retake = (
                row is None or row["expired"] or (row["state"] == "in_flight" and row["abandoned"])
            )
            if retake:
                await _RETAKE.execute(conn, **ident, fingerprint=fingerprint)
                return None
    if row["request_hash"] != fingerprint:
        return "reused"
    if row["state"] == "in_flight":
        return "in_flight"
    return Replay(
        status=row["response_status"],
        headers=dict(row["response_headers"] or {}),
        body=row["response_body"] or b"",
    )


async def complete(
    db: Database,
    *,
    ident: dict[str, str],
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> None:
    """Keep the answer of a request carried out under the key (the headers worth replaying)."""
    kept = {
        k.decode("latin-1"): v.decode("latin-1")
        for k, v in headers
        if k.decode("latin-1").lower() in _REPLAYED_HEADERS
    }
    async with db.connection() as conn:
        await _COMPLETE.execute(conn, **ident, status=status, headers=kept, body=body)


async def release(db: Database, *, ident: dict[str, str]) -> None:
    """Free a key whose request was refused or failed, so that it may be sent again."""
    async with db.connection() as conn:
        await _RELEASE.execute(conn, **ident)


# The records of requests that named the case (in their path) or whose stored answer names it
# (its id or reference, as the JSON of a case or a referral carries them: a JSON string, quotes
# included, so that another case whose reference starts alike is not taken). Records live 24
# hours, so the table is small: read whole.
_FORGET_CASE = Statement(
    text(
        """
        DELETE FROM hub.idempotency_records
        WHERE strpos(path, :case_id) > 0
           OR position(convert_to('"' || :case_id || '"', 'UTF8') IN response_body) > 0
           OR position(convert_to('"' || :reference || '"', 'UTF8') IN response_body) > 0
        """
    )
)


async def forget_case(conn: Connection, *, case_id: str, reference: str) -> int:
    """Forget the stored requests and answers that name a case being erased (SPEC 9), in the
    caller's transaction: the intake's answer holds the beneficiary. A request sent again
    under such a key afterwards is carried out anew. How many were forgotten."""
    return await _FORGET_CASE.execute(conn, case_id=case_id, reference=reference)
