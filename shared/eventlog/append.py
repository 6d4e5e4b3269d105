"""Appending to the event log inside the caller's transaction (transactional outbox).

The `NOTIFY hub_events` that wakes the consumers is sent by a statement-level trigger on
`hub.events`; PostgreSQL folds identical notifications of one transaction into one and
delivers it at commit, so each appending transaction sends exactly one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, DateTime, Text, bindparam, insert, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncSession

from shared.eventlog.model import SOURCES, Event
from shared.tables import events

NOTIFY_CHANNEL = "hub_events"


def _json_default(value: object) -> object:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """Event data as plain JSON values (uuids and times as strings)."""
    return json.loads(json.dumps(data, default=_json_default))


def _row(
    *,
    type: str,
    source: str,
    subject: str,
    actor: str,
    audience: Iterable[UUID] = (),
    correlation_id: str | None = None,
    causation_id: UUID | None = None,
    event_id: UUID | None = None,
) -> dict[str, Any]:
    """An event's columns but its data (which each caller encodes its own way)."""
    if source not in SOURCES:
        raise ValueError(f"unknown event source {source!r}")
    return {
        "id": event_id or uuid.uuid4(),
        "type": type,
        "source": source,
        "subject": subject,
        "actor": actor,
        "audience": sorted(set(audience), key=str),
        "correlation_id": correlation_id,
        "causation_id": causation_id,
    }


async def append(
    session: AsyncSession,
    *,
    type: str,
    source: str,
    subject: str,
    data: Mapping[str, Any],
    actor: str,
    audience: Iterable[UUID] = (),
    correlation_id: str | None = None,
    causation_id: UUID | None = None,
    event_id: UUID | None = None,
) -> Event:
    """Append one event in the session's current transaction and return it as stored.

    The audience is fixed now: the partners allowed to see the event (admins see all).
    """
    row = _row(
        type=type,
        source=source,
        subject=subject,
        actor=actor,
        audience=audience,
        correlation_id=correlation_id,
        causation_id=causation_id,
        event_id=event_id,
    )
    encoded = json.dumps(data, default=_json_default)
    stored = (await session.execute(_INSERT_ONE, {**row, "data": encoded})).one()
    return Event(
        seq=stored.seq,
        id=row["id"],
        tx=int(stored.tx),
        type=type,
        source=source,
        subject=subject,
        time=stored.time,
        actor=actor,
        audience=tuple(row["audience"]),
        data=json.loads(encoded),
        correlation_id=correlation_id,
        causation_id=causation_id,
    )


# One event, built once: the data goes as JSON text (encoded once, not re-encoded by the
# driver) and only what the database assigns comes back.
_INSERT_ONE = (
    text(
        "INSERT INTO hub.events "
        "(id, type, source, subject, actor, audience, correlation_id, causation_id, data) "
        "VALUES (:id, :type, :source, :subject, :actor, :audience, :correlation_id, "
        ":causation_id, CAST(CAST(:data AS text) AS jsonb)) "
        "RETURNING seq, tx, time"
    )
    .bindparams(
        bindparam("id", type_=PG_UUID(as_uuid=True)),
        bindparam("audience", type_=ARRAY(PG_UUID(as_uuid=True))),
        bindparam("causation_id", type_=PG_UUID(as_uuid=True)),
        bindparam("data", type_=Text()),
    )
    .columns(seq=BigInteger(), tx=events.c.tx.type, time=DateTime(timezone=True))
)


async def append_many(session: AsyncSession, drafts: Sequence[Mapping[str, Any]]) -> list[Event]:
    """Append several events in one statement, in the order given (their `seq` follows it).

    Each draft holds the keyword arguments of `append`."""
    if not drafts:
        return []
    rows = [
        {
            **_row(**{k: v for k, v in draft.items() if k != "data"}),
            "data": to_json_data(draft["data"]),
        }
        for draft in drafts
    ]
    stored = await session.execute(
        insert(events).returning(*events.c, sort_by_parameter_order=True), rows
    )
    return [Event.from_row(r) for r in stored.mappings()]
