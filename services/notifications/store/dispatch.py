"""The dispatcher's queries (SPEC 8): claim due deliveries, record finished attempts.

- A claim is one statement: `FOR UPDATE SKIP LOCKED` picks due deliveries and sets a
  lease, and it commits at once; nothing holds a transaction open while a webhook is sent.
  Claims are fair across endpoints (round-robin, at most `per_endpoint` in flight each,
  across all dispatchers).
- A batch of results is recorded by one statement that writes the attempts, moves the
  deliveries on and keeps the endpoints' health; when the batch may disable an endpoint, the
  disabling shares its transaction. A deadlock is retried; a lost connection once.
- Both run on the process's asyncpg pool (`fetch`: one statement in its own transaction); a
  statement that finds its connection gone (PostgreSQL restarted) runs once more, on a fresh
  connection (the pool has retired those made before the restart).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import structlog

from services.notifications.store.endpoints import disable_endpoint
from shared.db import Database, Record, Statement, lost_connection
from shared.eventlog.model import Event

if TYPE_CHECKING:
    from services.notifications.delivery_rules import EndpointHealth

log = structlog.get_logger("relais.notifications.dispatcher")

Disabler = Callable[[Mapping[UUID, datetime | None]], Mapping[Any, str]]

ERROR_CHARS = 500  # attempts.error and deliveries.last_error are varchar(500)
RECORD_TRIES = 3  # a batch that met a deadlock is written again, at most this many times
_TRY_AGAIN = {"40P01", "40001"}  # deadlock, serialization failure: rolled back, safe to retry
# Errors of what a statement carries (SQLSTATE classes): data exception (a value PostgreSQL
# or the driver refuses), integrity constraint, program limit, raised by a function. One
# result can cause them, so a batch that meets one is written again by halves. Any other
# error (a lost connection, a full disk, a deadlock met too often) fails the batch as a whole.
_REFUSED_CLASSES = ("22", "23", "54", "P0")

# Fair claims: per active endpoint (an index scan of ix_deliveries_due_by_endpoint each, so
# the cost follows the endpoints, not the backlog) its earliest due deliveries no live lease
# holds, as many as its in-flight room (live leases, counted on
# ix_deliveries_leased_by_endpoint); then round-robin across endpoints. The one statement also
# returns what each send needs: the endpoint (URL, secrets, health) and the event.
_CLAIM = Statement(
    """
    WITH due AS (
        SELECT d.id, d.endpoint_id, d.next_attempt_at,
               row_number() OVER (PARTITION BY d.endpoint_id
                                  ORDER BY d.next_attempt_at, d.id) AS rn
        FROM notifications.endpoints e
        CROSS JOIN LATERAL (
            SELECT x.id, x.endpoint_id, x.next_attempt_at
            FROM notifications.deliveries x
            WHERE x.endpoint_id = e.id
              AND x.status = 'pending'
              AND x.next_attempt_at <= now()
              AND (x.lease_until IS NULL OR x.lease_until <= now())
            ORDER BY x.next_attempt_at, x.id
            LIMIT :per_endpoint
        ) d
        WHERE e.status = 'active' AND e.partner_active
    ),
    inflight AS (
        SELECT f.endpoint_id, count(*) AS n
        FROM notifications.deliveries f
        WHERE f.endpoint_id IN (SELECT DISTINCT endpoint_id FROM due)
          AND f.status = 'pending'
          AND f.lease_until > now()
        GROUP BY f.endpoint_id
    ),
    picked AS (
        SELECT due.id
        FROM due LEFT JOIN inflight i ON i.endpoint_id = due.endpoint_id
        WHERE due.rn <= :per_endpoint - COALESCE(i.n, 0)
        ORDER BY due.rn, due.next_attempt_at, due.id
        LIMIT :limit
    ),
    locked AS (
        SELECT d.id FROM notifications.deliveries d
        WHERE d.id IN (SELECT id FROM picked)
          AND d.status = 'pending'
          AND (d.lease_until IS NULL OR d.lease_until <= now())
        FOR UPDATE SKIP LOCKED
    ),
    claimed AS (
        UPDATE notifications.deliveries d
        SET lease_until = now() + make_interval(secs => :lease_seconds)
        FROM locked
        WHERE d.id = locked.id
        RETURNING d.id, d.endpoint_id, d.event_seq, d.attempt_count, d.lease_until
    )
    SELECT c.id, c.endpoint_id, c.attempt_count, c.lease_until,
           e.url, e.secrets, e.failing_since,
           ev.seq, ev.id AS event_id, ev.tx, ev.type, ev.source, ev.subject, ev.time, ev.actor,
           ev.audience, ev.correlation_id, ev.causation_id, ev.data
    FROM claimed c
    JOIN notifications.endpoints e ON e.id = c.endpoint_id
    JOIN hub.events ev ON ev.seq = c.event_seq
    """
)


# Results are recorded in batches: one statement writes the attempts, moves the deliveries
# on and keeps the endpoints' health. A result is applied to its delivery only while the
# delivery still carries this claim: the lease it set, or the state `store.disable_endpoint`
# leaves (no lease, failed as "endpoint disabled", the attempt count of the claim) when its
# endpoint was disabled meanwhile. Once the endpoint is enabled and `recover` restarted the
# delivery (pending, count 0), a late result no longer matches. A result that comes after the
# lease ran out and another claim took the delivery leaves the delivery to that claim
# ("superseded"); its attempt is recorded all the same. A result whose delivery is gone (its
# endpoint was deleted while it was in flight, with its deliveries and their attempts) writes
# nothing: attempts are inserted only for deliveries this statement updated or locked (`kept`,
# FOR KEY SHARE, so that a concurrent delete either waits for it or has already happened).
# Run twice (retried after a lost reply), the statement changes nothing more: the deliveries
# no longer carry the claim, and a superseded attempt already in the history (`fresh` false)
# is not inserted again.
_RECORD_ARRAYS = (
    "ids",
    "leases",
    "claimed_counts",
    "attempted_at",
    "status_codes",
    "latencies",
    "errors",
    "excerpts",
    "statuses",
    "next_attempts",
)
_RECORD = Statement(
    """
    WITH r AS (
        SELECT * FROM unnest(
            CAST(:ids AS uuid[]), CAST(:leases AS timestamptz[]),
            CAST(:claimed_counts AS integer[]), CAST(:attempted_at AS timestamptz[]),
            CAST(:status_codes AS integer[]), CAST(:latencies AS integer[]),
            CAST(:errors AS text[]), CAST(:excerpts AS text[]), CAST(:statuses AS text[]),
            CAST(:next_attempts AS timestamptz[])
        ) WITH ORDINALITY AS r(id, lease_until, claimed_count, attempted_at, status_code,
                               latency_ms, error, excerpt, status, next_attempt_at, ord)
    ),
    recorded AS (
        UPDATE notifications.deliveries d
        SET attempt_count = d.attempt_count + 1,
            lease_until = NULL,
            last_status_code = r.status_code,
            last_error = r.error,
            status = r.status,
            next_attempt_at = r.next_attempt_at,
            updated_at = now()
        FROM r
        WHERE d.id = r.id
          AND (d.lease_until = r.lease_until
               OR (d.lease_until IS NULL AND d.status = 'failed'
                   AND d.last_error = 'endpoint disabled'
                   AND d.attempt_count = r.claimed_count))
        RETURNING d.id
    ),
    kept AS (
        SELECT d.id, NOT EXISTS (SELECT FROM notifications.attempts a
                                 WHERE a.delivery_id = d.id
                                   AND a.attempted_at = r.attempted_at) AS fresh
        FROM notifications.deliveries d JOIN r ON r.id = d.id
        WHERE r.id NOT IN (SELECT id FROM recorded)
        FOR KEY SHARE OF d
    ),
    attempted AS (
        INSERT INTO notifications.attempts (delivery_id, attempted_at, status_code, latency_ms,
                                            error, response_excerpt)
        SELECT id, attempted_at, status_code, latency_ms, error, excerpt FROM r
        WHERE id IN (SELECT id FROM recorded) OR id IN (SELECT id FROM kept WHERE fresh)
        ORDER BY ord
    ),
    health AS (
        UPDATE notifications.endpoints e
        SET failing_since = CASE WHEN h.reset THEN h.failed_at
                                 ELSE COALESCE(e.failing_since, h.failed_at) END
        FROM unnest(CAST(:endpoint_ids AS uuid[]), CAST(:resets AS boolean[]),
                    CAST(:failed_at AS timestamptz[])) AS h(id, reset, failed_at)
        WHERE e.id = h.id AND (h.failed_at IS NOT NULL OR e.failing_since IS NOT NULL)
        RETURNING e.id, e.failing_since
    )
    SELECT 'endpoint' AS kind, id, failing_since FROM health
    UNION ALL
    SELECT 'superseded', id, NULL FROM kept WHERE fresh
    """
)


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One finished attempt as the record statement takes it."""

    delivery_id: UUID
    lease_until: datetime | None  # the claim's lease
    claimed_count: int  # the delivery's attempt count at claim time
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    excerpt: str | None
    status: str
    next_attempt_at: datetime | None


async def claim_due(
    db: Database, *, per_endpoint: int, limit: int, lease_seconds: float
) -> list[dict[str, Any]]:
    """Lease up to `limit` due deliveries fairly across endpoints; each with its endpoint
    (URL, secrets, health; one dict per endpoint) and its event."""
    rows = await fetch(
        db,
        _CLAIM,
        per_endpoint=per_endpoint,
        limit=limit,
        lease_seconds=lease_seconds,
    )
    endpoints_by_id: dict[UUID, dict[str, Any]] = {}
    claimed = []
    for r in rows:
        endpoint = endpoints_by_id.get(r["endpoint_id"])
        if endpoint is None:
            endpoint = endpoints_by_id[r["endpoint_id"]] = {
                "id": r["endpoint_id"],
                "url": r["url"],
                "secrets": r["secrets"],
                "failing_since": r["failing_since"],
            }
        claimed.append(
            {
                "id": r["id"],
                "endpoint_id": r["endpoint_id"],
                "attempt_count": r["attempt_count"],
                "lease_until": r["lease_until"],
                "endpoint": endpoint,
                "event": Event.from_row({**r, "id": r["event_id"]}),
            }
        )
    return claimed


def _record_params(
    attempts: Sequence[AttemptRecord], health: Mapping[UUID, EndpointHealth]
) -> dict[str, Any]:
    columns: dict[str, list[Any]] = {name: [] for name in _RECORD_ARRAYS}
    for a in attempts:
        for name, value in (
            ("ids", a.delivery_id),
            ("leases", a.lease_until),
            ("claimed_counts", a.claimed_count),
            ("attempted_at", a.attempted_at),
            ("status_codes", a.status_code),
            ("latencies", a.latency_ms),
            ("errors", pg_text(a.error, ERROR_CHARS)),
            ("excerpts", pg_text(a.excerpt)),
            ("statuses", a.status),
            ("next_attempts", a.next_attempt_at),
        ):
            columns[name].append(value)
    # Every endpoint with a success or a failure in the batch: a success clears
    # failing_since even when a failure recorded after its claim had set it. The statement
    # writes the row only after a failure, or after a success while failing_since is set.
    touched = sorted((eid, h) for eid, h in health.items() if h.changed)
    params: dict[str, Any] = dict(columns)
    params["endpoint_ids"] = [eid for eid, _ in touched]
    params["resets"] = [h.reset for _, h in touched]
    params["failed_at"] = [h.failed_at for _, h in touched]
    return params


async def record_attempts(
    db: Database,
    *,
    attempts: Sequence[AttemptRecord],
    health: Mapping[UUID, EndpointHealth],
    disable: Disabler | None = None,
) -> list[UUID]:
    """Record a batch of attempts and the endpoints' health after them, in one statement;
    the deliveries whose result came after another claim took them (superseded).

    With `disable`, the statement runs in a transaction that then disables the endpoints
    `disable` names, given each touched endpoint's `failing_since` as recorded. A deadlock
    with another writer rolled everything back: the batch is written again; so is a batch
    whose transaction met a lost connection (once: the pool's connections are retired by
    then; the statement is safe to run twice)."""
    params = _record_params(attempts, health)
    for attempt in range(1, RECORD_TRIES + 1):
        try:
            if disable is not None:
                async with db.transaction() as conn:
                    rows = await _RECORD.fetch(conn, **params)
                    failing = {r["id"]: r["failing_since"] for r in rows if r["kind"] == "endpoint"}
                    for endpoint_id, reason in disable(failing).items():
                        await disable_endpoint(conn, endpoint_id=endpoint_id, reason=reason)
            else:
                rows = await fetch(db, _RECORD, **params)
            break
        except Exception as exc:
            # (`fetch` itself runs a lone statement once more after a lost connection.)
            lost = attempt == 1 and disable is not None and lost_connection(exc)
            if attempt == RECORD_TRIES or (sqlstate(exc) not in _TRY_AGAIN and not lost):
                raise
            await asyncio.sleep(0.05 * attempt)
    return [r["id"] for r in rows if r["kind"] == "superseded"]


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of an error PostgreSQL reported (None for any other error)."""
    return getattr(exc, "sqlstate", None)


def refused(exc: BaseException) -> bool:
    """Whether the database (or the driver, before sending) refused the statement for what it
    carries, which one result of a batch may cause (`_REFUSED_CLASSES`)."""
    if lost_connection(exc):
        return False
    return (sqlstate(exc) or "")[:2] in _REFUSED_CLASSES


def pg_text(value: str | None, limit: int | None = None) -> str | None:
    """Text as PostgreSQL takes it: no NUL (U+0000, which a text column refuses; it becomes
    U+FFFD as other undecodable bytes do), no lone surrogate (UTF-8 cannot carry it)."""
    if value is None:
        return None
    if limit is not None and len(value) > limit:
        value = value[:limit]
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode()
    return value


async def fetch(db: Database, statement: Statement, **params: Any) -> list[Record]:
    """Run one statement on its own (it commits alone: atomic, one round trip) on a pooled
    connection, without a BEGIN or a COMMIT. The hot paths of the dispatcher (claims and
    most records) are single statements, each compiled once.

    A statement that finds its connection gone (the server restarted) runs once more: the
    pool has retired its other connections, made before the restart and as dead, so it gets
    a fresh one. A claim that ran is undone by its leases expiring, a record that ran changes
    nothing more (see `_RECORD`)."""
    for attempt in (1, 2):
        try:
            async with db.connection() as conn:
                return await statement.fetch(conn, **params)
        except Exception as exc:
            if attempt == 2 or not lost_connection(exc):
                raise
            log.warning("statement_retried_after_disconnect", error=type(exc).__name__)
    raise AssertionError("unreachable")
