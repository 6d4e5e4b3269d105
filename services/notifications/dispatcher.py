"""The dispatcher: claims due deliveries, sends them, records every attempt (SPEC 8).

- A claim is one statement: `FOR UPDATE SKIP LOCKED` picks due deliveries and sets a
  lease, and it commits at once; nothing holds a transaction open while a webhook is sent. A
  dispatcher that dies leaves leases that expire, and its deliveries are sent again (with
  the same `webhook-id`): deliveries are at-least-once.
- Results are recorded in batches: a finished send waits a few milliseconds for others, then
  one statement writes their attempts, moves their deliveries on and keeps their endpoints'
  health, as if they had been recorded one by one in the order they finished. A result only
  moves its delivery on while the delivery still carries its claim (see `_RECORD`). A batch
  the database refuses for what one result carries is written again by halves, so that only
  that result fails (`record_all`); the texts a receiver sent are made storable first.
- A statement that finds its connection gone (PostgreSQL restarted) retires every pooled
  connection made before, and runs once more on a fresh one (`_fetch`).
- Claims are fair across endpoints: due deliveries are taken round-robin by endpoint, and
  no endpoint has more than `PER_ENDPOINT` deliveries in flight across all dispatchers, so
  a slow or dead endpoint never holds back the others.
- One pooled `httpx.AsyncClient` sends many at once; no proxy from the environment, no
  redirects (a 3xx is a failure). Unless private targets are allowed, the target is checked
  again at send time and the connection goes to the address that was checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import structlog
from sqlalchemy import TextClause, text
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifications import store
from services.notifications.delivery_rules import (
    Answer,
    EndpointHealth,
    Outcome,
    endpoint_health,
    next_state,
    to_disable,
)
from services.notifications.fanout import DELIVERIES_CHANNEL
from services.notifications.signing import headers_for, valid_secrets
from services.notifications.ssrf import TargetRefused, resolve
from shared.eventlog.consumer import wait_for_wake
from shared.eventlog.listener import Listener
from shared.eventlog.model import Event
from shared.observability import Metrics
from shared.settings import Settings

log = structlog.get_logger("relais.notifications.dispatcher")

PER_ENDPOINT = 10
EXCERPT_BYTES = 2048
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
_CLAIM = text(
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
_RECORD = text(
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


def no_cookies() -> CookieJar:
    """A cookie jar that keeps nothing: a receiver's `Set-Cookie` is never sent back, to it
    or to anyone (webhooks carry no session state)."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


@dataclass
class Dispatcher:
    settings: Settings
    metrics: Metrics | None = None
    name: str = "notifications.dispatcher"
    max_in_flight: int = 256
    batch_size: int = 128
    record_batch: int = 100  # results written by one statement at most
    record_delay: float = 0.005  # seconds a result may wait for others to share its batch
    _in_flight: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _results: list[Result] = field(default_factory=list, init=False)
    _results_ready: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _flush: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _sending: int = field(default=0, init=False)  # deliveries claimed and not yet answered
    _closing: bool = field(default=False, init=False)

    @property
    def lease_seconds(self) -> float:
        return self.settings.webhook_timeout_seconds + 5.0

    async def run(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        listener: Listener,
        stop: asyncio.Event,
    ) -> None:
        wake = listener.subscribe(DELIVERIES_CHANNEL)
        timeout = httpx.Timeout(self.settings.webhook_timeout_seconds)
        limits = httpx.Limits(max_connections=self.max_in_flight, max_keepalive_connections=64)
        failures = 0
        self._closing = False
        recorder = asyncio.create_task(self._record_loop(sessionmaker))
        async with httpx.AsyncClient(
            timeout=timeout,
            limits=limits,
            trust_env=False,
            follow_redirects=False,
            cookies=no_cookies(),
        ) as client:
            try:
                while not stop.is_set():
                    room = self.max_in_flight - len(self._in_flight)
                    claimed: list[Any] = []
                    if room > 0:
                        wake.clear()
                        try:
                            claimed = await self.claim(sessionmaker, min(room, self.batch_size))
                            failures = 0
                        except asyncio.CancelledError:
                            raise
                        except Exception as exc:
                            failures += 1
                            log.error("claim_failed", error=type(exc).__name__)
                            await wait_for_wake(stop, None, min(5.0, 0.2 * 2**failures))
                            continue
                        if claimed:
                            self._start(client, claimed, wake)
                    if claimed and len(claimed) == min(room, self.batch_size):
                        continue  # more may be due right now
                    if len(self._in_flight) >= self.max_in_flight:
                        await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
                        continue
                    await wait_for_wake(stop, wake, min(1.0, self.settings.poll_interval_seconds))
            finally:
                listener.unsubscribe(wake)
                try:
                    if self._in_flight:
                        await asyncio.wait(
                            self._in_flight, timeout=self.settings.webhook_timeout_seconds + 5
                        )
                    self._closing = True  # write what is left, then stop
                    self._results_ready.set()
                    self._flush.set()
                    await asyncio.wait([recorder], timeout=10)
                finally:
                    recorder.cancel()

    async def claim(self, sessionmaker: async_sessionmaker[AsyncSession], limit: int) -> list[Any]:
        rows = await _fetch(
            sessionmaker,
            _CLAIM,
            per_endpoint=PER_ENDPOINT,
            limit=limit,
            lease_seconds=self.lease_seconds,
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

    def _start(self, client: httpx.AsyncClient, claimed, wake: asyncio.Event) -> None:
        def finished(task: asyncio.Task[None]) -> None:
            self._in_flight.discard(task)
            wake.set()  # a slot is free, and its endpoint may have more due

        for item in claimed:
            self._sending += 1
            task = asyncio.create_task(self._deliver(client, item))
            self._in_flight.add(task)
            task.add_done_callback(finished)

    async def _deliver(self, client: httpx.AsyncClient, item: dict[str, Any]) -> None:
        try:
            try:
                outcome = await self.send(client, item)
            finally:
                self._sending -= 1
            await self._submit(item, outcome)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the lease expires and the delivery is claimed again
            log.error(
                "delivery_not_recorded", delivery_id=str(item["id"]), error=type(exc).__name__
            )

    async def send(self, client: httpx.AsyncClient, item: dict[str, Any]) -> Outcome:
        """One attempt: sign, connect to the checked address, read at most 2 KB back."""
        event: Event = item["event"]
        endpoint = item["endpoint"]
        now = datetime.now(UTC)
        body = json.dumps(event.to_cloudevent(), separators=(",", ":"), ensure_ascii=False)
        headers = headers_for(valid_secrets(endpoint["secrets"], now), str(event.id), now, body)
        started = time.perf_counter()
        allow_private = bool(self.settings.notifications_allow_private_targets)
        try:
            target = await resolve(endpoint["url"], allow_private=allow_private)
        except TargetRefused as exc:
            return Outcome(error=f"refused: {exc}"[:500])
        url = httpx.URL(endpoint["url"])
        extensions: dict[str, Any] = {}
        if not allow_private:
            # Connect to the address that was checked; keep the name for Host and TLS.
            url = url.copy_with(host=target.address)
            headers["host"] = _host_header(target.host, target.port, target.scheme)
            if target.scheme == "https":
                extensions["sni_hostname"] = target.host
        try:
            async with client.stream(
                "POST", url, content=body.encode(), headers=headers, extensions=extensions
            ) as response:
                excerpt = b""
                async for chunk in response.aiter_bytes():
                    excerpt += chunk
                    if len(excerpt) >= EXCERPT_BYTES:
                        break
                latency = int((time.perf_counter() - started) * 1000)
                return Outcome(
                    status_code=response.status_code,
                    excerpt=excerpt[:EXCERPT_BYTES].decode("utf-8", errors="replace"),
                    latency_ms=latency,
                    retry_after=response.headers.get("retry-after"),
                )
        except httpx.TimeoutException:
            return Outcome(error="timeout", latency_ms=int((time.perf_counter() - started) * 1000))
        except httpx.HTTPError as exc:
            return Outcome(
                error=f"{type(exc).__name__}: {exc}"[:500],
                latency_ms=int((time.perf_counter() - started) * 1000),
            )

    async def _submit(self, item: dict[str, Any], outcome: Outcome) -> None:
        """Queue one result for the next batch; returns once that batch is committed."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._results.append(Result(item, outcome, datetime.now(UTC), loop.time(), done))
        self._results_ready.set()
        if len(self._results) >= self.record_batch or self._sending == 0:
            self._flush.set()  # full, or no other answer is on its way
        await done

    async def _record_loop(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        """Write the results in batches: when `record_batch` are waiting, when no other send
        is under way, when the oldest has waited `record_delay`, or at once while closing."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._results:
                if self._closing:
                    return
                self._results_ready.clear()
                await self._results_ready.wait()
                continue
            wait = self._results[0].queued_at + self.record_delay - loop.time()
            if (
                wait > 0
                and len(self._results) < self.record_batch
                and self._sending > 0
                and not self._closing
            ):
                self._flush.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._flush.wait(), wait)
            batch = self._results[: self.record_batch]
            del self._results[: len(batch)]
            try:
                await self.record_all(sessionmaker, batch)
            except asyncio.CancelledError:
                for result in batch:
                    if result.done is not None and not result.done.done():
                        result.done.cancel()
                raise
            except Exception as exc:  # the leases expire and the deliveries are claimed again
                _resolve(batch, exc)

    async def record_all(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        batch: list[Result],
        *,
        part: bool = False,
    ) -> None:
        """Record a batch and resolve each result's `done`. A batch the database refuses for
        what it carries (`_refused`) is written again by halves, in order, so that only a
        result it cannot take fails; that one is tried once more without the receiver's texts.
        A result that fails keeps its lease: it expires and the delivery is sent again."""
        try:
            await self.record(sessionmaker, batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not _refused(exc):
                _resolve(batch, exc)
            elif len(batch) > 1:
                if not part:
                    log.warning(
                        "record_batch_refused",
                        results=len(batch),
                        sqlstate=_sqlstate(exc),
                        error=type(exc).__name__,
                    )
                half = len(batch) // 2
                await self.record_all(sessionmaker, batch[:half], part=True)
                await self.record_all(sessionmaker, batch[half:], part=True)
            else:
                await self._record_plain(sessionmaker, batch[0], exc)
        else:
            _resolve(batch, None)

    async def _record_plain(
        self, sessionmaker: async_sessionmaker[AsyncSession], result: Result, exc: Exception
    ) -> None:
        """The last try for a result the database refused: without the response excerpt, and
        with the error reduced to ASCII. Logged with ids and the error's kind, never its text
        (it may quote what the receiver sent)."""
        outcome = result.outcome
        fields = {
            "delivery_id": str(result.item["id"]),
            "endpoint_id": str(result.item["endpoint_id"]),
            "sqlstate": _sqlstate(exc),
            "error": type(exc).__name__,
        }
        if outcome.excerpt is not None or (outcome.error and not outcome.error.isascii()):
            plain = Outcome(
                status_code=outcome.status_code,
                error=outcome.error.encode("ascii", "replace").decode() if outcome.error else None,
                latency_ms=outcome.latency_ms,
                retry_after=outcome.retry_after,
            )
            try:
                await self.record(
                    sessionmaker,
                    [Result(result.item, plain, result.at, result.queued_at, result.done)],
                )
            except asyncio.CancelledError:
                raise
            except Exception as again:
                fields["error_without_texts"] = type(again).__name__
            else:
                log.warning("delivery_result_recorded_without_texts", **fields)
                _resolve([result], None)
                return
        log.error("delivery_result_refused", **fields)
        _resolve([result], exc)

    async def record(self, sessionmaker, batch: list[Result]) -> None:
        """The attempts, the deliveries' next states and the endpoints' health of a batch of
        results, in one statement. When the batch may disable an endpoint (a 410, or a failure
        of an endpoint that was failing at claim time) the disabling shares its transaction.
        A deadlock with another writer rolled everything back: the batch is written again; so
        is a batch whose session met a lost connection (once: SQLAlchemy has retired the pool's
        connections by then; the statement is safe to run twice)."""
        params, health = self._batch_params(batch)
        may_disable = any(h.may_disable for h in health.values())
        for attempt in range(1, RECORD_TRIES + 1):
            try:
                if may_disable:
                    async with sessionmaker() as session, session.begin():
                        rows = (await session.execute(_RECORD, params)).mappings().all()
                        failing = {
                            r["id"]: r["failing_since"] for r in rows if r["kind"] == "endpoint"
                        }
                        for endpoint_id, reason in to_disable(health, failing).items():
                            await store.disable_endpoint(
                                session, endpoint_id=endpoint_id, reason=reason
                            )
                else:
                    rows = await _fetch(sessionmaker, _RECORD, **params)
                break
            except Exception as exc:
                lost = attempt == 1 and getattr(exc, "connection_invalidated", False)
                if attempt == RECORD_TRIES or (_sqlstate(exc) not in _TRY_AGAIN and not lost):
                    raise
                await asyncio.sleep(0.05 * attempt)
        superseded = [r["id"] for r in rows if r["kind"] == "superseded"]
        if superseded:
            # The lease ran out and another claim took the delivery: its state is that claim's
            # to record; the attempt stays in the history.
            log.warning("delivery_result_superseded", delivery_ids=[str(i) for i in superseded])
        if self.metrics is not None:
            succeeded = sum(1 for r in batch if r.outcome.succeeded)
            if succeeded:
                self.metrics.webhook_attempts.labels("success").inc(succeeded)
            if len(batch) > succeeded:
                self.metrics.webhook_attempts.labels("failure").inc(len(batch) - succeeded)
            for r in batch:
                self.metrics.webhook_latency.observe(r.outcome.latency_ms / 1000)

    def _batch_params(
        self, batch: list[Result]
    ) -> tuple[dict[str, Any], dict[Hashable, EndpointHealth]]:
        """The arrays of the record statement, and each endpoint's health after the batch,
        as if its results had been recorded one by one in the order they finished."""
        columns: dict[str, list[Any]] = {name: [] for name in _RECORD_ARRAYS}
        schedule = self.settings.webhook_retry_schedule
        for result in batch:
            item, outcome, now = result.item, result.outcome, result.at
            state = next_state(
                outcome, attempts_made=item["attempt_count"] + 1, schedule=schedule, now=now
            )
            for name, value in (
                ("ids", item["id"]),
                ("leases", item["lease_until"]),
                ("claimed_counts", item["attempt_count"]),
                ("attempted_at", now),
                ("status_codes", outcome.status_code),
                ("latencies", outcome.latency_ms),
                ("errors", _pg_text(state.error, ERROR_CHARS)),
                ("excerpts", _pg_text(outcome.excerpt)),
                ("statuses", state.status),
                ("next_attempts", state.next_attempt_at),
            ):
                columns[name].append(value)
        health = endpoint_health(
            Answer(
                r.item["endpoint_id"],
                r.outcome,
                r.at,
                failing_at_claim=r.item["endpoint"]["failing_since"] is not None,
            )
            for r in batch
        )
        # Every endpoint with a success or a failure in the batch: a success clears
        # failing_since even when a failure recorded after its claim had set it. The statement
        # writes the row only after a failure, or after a success while failing_since is set.
        touched = sorted((eid, h) for eid, h in health.items() if h.changed)
        params: dict[str, Any] = dict(columns)
        params["endpoint_ids"] = [eid for eid, _ in touched]
        params["resets"] = [h.reset for _, h in touched]
        params["failed_at"] = [h.failed_at for _, h in touched]
        return params, health


@dataclass(slots=True)
class Result:
    """A finished attempt waiting to be recorded."""

    item: dict[str, Any]  # as the claim returned it
    outcome: Outcome
    at: datetime  # when the answer was in: the attempt's time
    queued_at: float = 0.0  # loop time
    done: asyncio.Future[None] | None = None  # resolved when its batch is committed


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of an asyncpg error, raw or wrapped by SQLAlchemy."""
    return getattr(exc, "sqlstate", None) or getattr(getattr(exc, "orig", None), "sqlstate", None)


def _refused(exc: BaseException) -> bool:
    """Whether the database (or the driver, before sending) refused the statement for what it
    carries, which one result of a batch may cause (`_REFUSED_CLASSES`)."""
    if getattr(exc, "connection_invalidated", False):
        return False
    return (_sqlstate(exc) or "")[:2] in _REFUSED_CLASSES


def _lost(exc: BaseException, driver: Any) -> bool:
    """Whether a statement failed because its connection is gone (the server restarted or
    dropped it): not a timeout, not an error PostgreSQL reported on a live connection."""
    if driver.is_closed() or isinstance(exc, asyncpg.PostgresConnectionError):
        return True
    if isinstance(exc, asyncpg.PostgresError):  # 57P01-57P03: shut down, crashed, starting
        return (exc.sqlstate or "").startswith("57P")
    return isinstance(exc, OSError) and not isinstance(exc, TimeoutError)


def _resolve(batch: list[Result], exc: BaseException | None) -> None:
    for result in batch:
        if result.done is not None and not result.done.done():
            if exc is None:
                result.done.set_result(None)
            else:
                result.done.set_exception(exc)


def _pg_text(value: str | None, limit: int | None = None) -> str | None:
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


_ASYNCPG = asyncpg_dialect()
_POSITIONAL: dict[TextClause, tuple[str, tuple[str, ...]]] = {}


async def _fetch(
    sessionmaker: async_sessionmaker[AsyncSession], statement: TextClause, **params: Any
) -> list[Any]:
    """Run one statement on its own (it commits alone: atomic, one round trip) straight on a
    pooled asyncpg connection, without a session, a BEGIN or a COMMIT. The hot paths of the
    dispatcher (claims and most records) are single statements."""
    if statement not in _POSITIONAL:
        compiled = statement.compile(dialect=_ASYNCPG)
        _POSITIONAL[statement] = (compiled.string, tuple(compiled.positiontup or ()))
    sql, names = _POSITIONAL[statement]
    args = [params[name] for name in names]
    engine = sessionmaker.kw["bind"]
    for attempt in (1, 2):
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            try:
                return await driver.fetch(sql, *args)
            except Exception as exc:
                lost = _lost(exc, driver)
                if lost:
                    # The server went away (a restart): the pool's other connections, made
                    # before now, are as dead. They are replaced at their next checkout, as
                    # SQLAlchemy does when a statement of its own meets a disconnect.
                    engine.sync_engine.pool._invalidate(raw, exc, _checkin=False)
                if lost or not isinstance(exc, asyncpg.PostgresError):
                    await connection.invalidate(exc)
                # Once more on a fresh connection: a claim that ran is undone by its leases
                # expiring, a record that ran changes nothing more (see `_RECORD`).
                if not lost or attempt == 2:
                    raise
                log.warning("statement_retried_after_disconnect", error=type(exc).__name__)
    raise AssertionError("unreachable")


def _host_header(host: str, port: int, scheme: str) -> str:
    default = 443 if scheme == "https" else 80
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default else f"{shown}:{port}"
