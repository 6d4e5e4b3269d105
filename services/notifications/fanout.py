"""Fan-out: each event becomes one delivery per endpoint that may and wants to receive it.

An endpoint receives an event when its partner is in the event's audience (an admin's
endpoint: every event), one of its `event_types` patterns matches (`*` wildcards), and the
event was committed after the endpoint was registered: its transaction is not older than
the oldest one running at the registration (`since_tx`). Never fewer: an event committed
just before, by a transaction running then, may be sent too. A fan-out catching up after a
pause does not send a new endpoint what came before it; the feed has those.
`endpoint.test` goes only to the endpoint it names. A disabled endpoint gets its deliveries
recorded as failed ("endpoint disabled"), so that `recover` can send them later: nothing is
dropped silently. A paused endpoint (inactive partner) gets pending deliveries that wait.
On `case.erased`, what endpoints answered to the events about the case is forgotten.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from services.notifications import store
from services.notifications.delivery_rules import FAILED, PENDING
from services.notifications.store import Connection
from shared.eventlog.model import Event
from shared.events_catalog import matches

CONSUMER_NAME = "notifications.fanout"
DELIVERIES_CHANNEL = "relais_deliveries"


def wants(patterns: Iterable[str], event_type: str) -> bool:
    return any(matches(pattern, event_type) for pattern in patterns)


def targets(event: Event, candidates: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The endpoints that receive `event`, among the candidates loaded for its batch."""
    if event.type == "endpoint.test":
        wanted = str(event.data.get("endpoint_id"))
        return [e for e in candidates if str(e["id"]) == wanted]
    audience = set(event.audience)
    chosen = []
    for endpoint in candidates:
        if endpoint["partner_id"] is not None and endpoint["partner_id"] not in audience:
            continue
        if event.tx < int(endpoint["since_tx"]):
            continue
        if event.type.startswith("endpoint.") and str(endpoint["id"]) == str(event.data.get("id")):
            continue  # an endpoint is not told of its own disabling: its partner's others are
        if wants(endpoint["event_types"], event.type):
            chosen.append(endpoint)
    return chosen


async def fan_out(conn: Connection, events: Sequence[Event]) -> bool:
    """The consumer's handler, in its batch's transaction; False when it wrote nothing (no
    delivery, no erasure, no partner change), so that the batch commits without a write."""
    wrote = False
    for event in events:
        if event.type == "case.erased":
            await store.erase_texts_about_case(conn, case_id=UUID(str(event.data["case_id"])))
            wrote = True
        if event.type == "partner.updated":
            wrote = True
            await store.set_partner_active(
                conn,
                partner_id=UUID(str(event.data["id"])),
                active=event.data.get("status") == "active",
            )
    candidates = await store.fanout_candidates(
        conn, partners={p for e in events for p in e.audience}
    )
    values = []
    for event in events:
        for endpoint in targets(event, candidates):
            active = endpoint["status"] == "active"
            values.append(
                {
                    "id": uuid.uuid4(),
                    "endpoint_id": endpoint["id"],
                    "partner_id": endpoint["partner_id"],
                    "event_id": event.id,
                    "event_seq": event.seq,
                    "event_type": event.type,
                    "event_time": event.time,
                    "status": PENDING if active else FAILED,
                    "next_attempt_at": event.time if active else None,
                    "last_error": None if active else "endpoint disabled",
                }
            )
    await store.insert_deliveries(conn, rows=values, notify=DELIVERIES_CHANNEL)
    return wrote or bool(values)
