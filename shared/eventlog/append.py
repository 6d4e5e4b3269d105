"""Appending to the event log inside the caller's transaction (transactional outbox).

The `NOTIFY hub_events` that wakes the consumers is sent by a statement-level trigger on
`hub.events`; PostgreSQL folds identical notifications of one transaction into one and
delivers it at commit, so each appending transaction sends exactly one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from shared.db import Connection, Statement, json_text
from shared.eventlog.model import SOURCES, Event

NOTIFY_CHANNEL = "hub_events"


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
    conn: Connection,
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
    """Append one event in the connection's current transaction and return it as stored.

    The audience is fixed now: the partners allowed to see the event (admins see all).
    """
    row = event_parameters(
        type=type,
        source=source,
        subject=subject,
        data=data,
        actor=actor,
        audience=audience,
        correlation_id=correlation_id,
        causation_id=causation_id,
        event_id=event_id,
    )
    stored = await _INSERT.fetchrow(conn, **row)
    return Event(
        seq=stored["seq"],
        id=row["id"],
        tx=int(stored["tx"]),
        type=type,
        source=source,
        subject=subject,
        time=stored["time"],
        actor=actor,
        audience=tuple(row["audience"]),
        data=json.loads(row["data"]),
        correlation_id=correlation_id,
        causation_id=causation_id,
    )


# The columns of one event, and its values as named parameters (with a prefix, for a
# statement that appends an event among its other writes: `event_parameters` fills them).
EVENT_COLUMNS = "(id, type, source, subject, actor, audience, correlation_id, causation_id, data)"


def event_values(prefix: str = "") -> str:
    """The VALUES tuple of one event, its parameters named `<prefix><column>`. The data goes
    as JSON text (encoded once, and typed `text` so that the connection's jsonb codec does
    not encode it again)."""
    p = prefix
    return (
        f"(CAST(:{p}id AS uuid), :{p}type, :{p}source, :{p}subject, :{p}actor, "
        f"CAST(:{p}audience AS uuid[]), :{p}correlation_id, CAST(:{p}causation_id AS uuid), "
        f"CAST(CAST(:{p}data AS text) AS jsonb))"
    )


def event_parameters(prefix: str = "", *, data: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """The parameters of `event_values(prefix)` for one event: its `data` and the other
    keyword arguments `append` takes."""
    row = _row(**fields)
    row["data"] = json_text(data)
    return {prefix + name: value for name, value in row.items()}


# One event, compiled once; only what the database assigns comes back.
_INSERT = Statement(
    f"INSERT INTO hub.events {EVENT_COLUMNS} VALUES {event_values()} RETURNING seq, tx, time"  # noqa: S608 - the module's own constants
)


async def append_many(conn: Connection, drafts: Sequence[Mapping[str, Any]]) -> list[Event]:
    """Append several events in one statement, in the order given (their `seq` follows it).

    Each draft holds the keyword arguments of `append`."""
    if not drafts:
        return []
    rows = [_row(**{k: v for k, v in draft.items() if k != "data"}) for draft in drafts]
    columns = {name: [row[name] for row in rows] for name in _COLUMNS if name != "data"}
    # As text, for the reason `_INSERT` gives; the audience as a JSON array per event.
    columns["audience"] = [json_text(a) for a in columns["audience"]]
    columns["data"] = [json_text(draft["data"]) for draft in drafts]
    records = await _INSERT_MANY.fetch(conn, **columns)
    return [Event.from_row(r) for r in records]


# Several events in one statement, in the order given: the columns as arrays, unnested
# WITH ORDINALITY so that `seq` follows the drafts' order.
_COLUMNS = (
    "id",
    "type",
    "source",
    "subject",
    "actor",
    "audience",
    "correlation_id",
    "causation_id",
    "data",
)
_INSERT_MANY = Statement(
    "INSERT INTO hub.events "
    "(id, type, source, subject, actor, audience, correlation_id, causation_id, data) "
    "SELECT d.id, d.type, d.source, d.subject, d.actor, "
    "       ARRAY(SELECT jsonb_array_elements_text(d.audience::jsonb)::uuid), "
    "       d.correlation_id, d.causation_id, d.data::jsonb "
    "FROM unnest(CAST(:id AS uuid[]), CAST(:type AS text[]), CAST(:source AS text[]), "
    "            CAST(:subject AS text[]), CAST(:actor AS text[]), CAST(:audience AS text[]), "
    "            CAST(:correlation_id AS text[]), CAST(:causation_id AS uuid[]), "
    "            CAST(:data AS text[])) WITH ORDINALITY "
    "  AS d(id, type, source, subject, actor, audience, correlation_id, causation_id, data, n) "
    "ORDER BY d.n "
    "RETURNING seq, id, tx, type, source, subject, time, actor, audience, correlation_id, "
    "          causation_id, data"
)
