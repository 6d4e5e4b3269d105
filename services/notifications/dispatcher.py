"""The dispatcher: claims due deliveries, sends them, records every attempt (SPEC 8).

- Claims are short transactions: `FOR UPDATE SKIP LOCKED` picks due deliveries and sets a
  lease, then commits; nothing holds a transaction open while a webhook is sent. A
  dispatcher that dies leaves leases that expire, and its deliveries are sent again (with
  the same `webhook-id`): deliveries are at-least-once.
- Claims are fair across endpoints: due deliveries are taken round-robin by endpoint, and
  no endpoint has more than `PER_ENDPOINT` deliveries in flight across all dispatchers, so
  a slow or dead endpoint never holds back the others.
- One pooled `httpx.AsyncClient` sends many at once; no proxy from the environment, no
  redirects (a 3xx is a failure). Unless private targets are allowed, the target is checked
  again at send time and the connection goes to the address that was checked.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import structlog
from sqlalchemy import func, insert, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifications import store
from services.notifications.fanout import DELIVERIES_CHANNEL
from services.notifications.retry import DISABLE_AFTER, next_delay, retry_after
from services.notifications.signing import headers_for, valid_secrets
from services.notifications.ssrf import TargetRefused, resolve
from services.notifications.tables import attempts, deliveries, endpoints
from shared.eventlog.consumer import wait_for_wake
from shared.eventlog.listener import Listener
from shared.eventlog.model import Event
from shared.observability import Metrics
from shared.settings import Settings

log = structlog.get_logger("relais.notifications.dispatcher")

PER_ENDPOINT = 10
CLAIM_WINDOW = 2000  # due deliveries considered per claim, earliest first
EXCERPT_BYTES = 2048

_CLAIM = text(
    """
    WITH inflight AS (
        SELECT endpoint_id, count(*) AS n
        FROM notifications.deliveries
        WHERE status = 'pending' AND lease_until > now()
        GROUP BY endpoint_id
    ),
    due AS (
        -- The earliest due deliveries only: ranking the whole backlog would cost more with
        -- every pending delivery.
        SELECT d.id, d.endpoint_id, d.next_attempt_at
        FROM notifications.deliveries d
        JOIN notifications.endpoints e ON e.id = d.endpoint_id
        WHERE d.status = 'pending'
          AND d.next_attempt_at <= now()
          AND (d.lease_until IS NULL OR d.lease_until <= now())
          AND e.status = 'active' AND e.partner_active
        ORDER BY d.next_attempt_at
        LIMIT :window
    ),
    ranked AS (
        SELECT id, endpoint_id, next_attempt_at,
               row_number() OVER (PARTITION BY endpoint_id ORDER BY next_attempt_at, id) AS rn
        FROM due
    ),
    picked AS (
        SELECT r.id
        FROM ranked r LEFT JOIN inflight i ON i.endpoint_id = r.endpoint_id
        WHERE r.rn <= :per_endpoint - COALESCE(i.n, 0)
        ORDER BY r.rn, r.next_attempt_at, r.id
        LIMIT :limit
    ),
    locked AS (
        SELECT d.id FROM notifications.deliveries d
        WHERE d.id IN (SELECT id FROM picked)
          AND d.status = 'pending'
          AND (d.lease_until IS NULL OR d.lease_until <= now())
        FOR UPDATE SKIP LOCKED
    )
    UPDATE notifications.deliveries d
    SET lease_until = now() + make_interval(secs => :lease_seconds)
    FROM locked
    WHERE d.id = locked.id
    RETURNING d.id, d.endpoint_id, d.event_id, d.event_seq, d.attempt_count
    """
)


@dataclass
class Outcome:
    status_code: int | None = None
    error: str | None = None
    excerpt: str | None = None
    latency_ms: int = 0
    retry_after: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class Dispatcher:
    settings: Settings
    metrics: Metrics | None = None
    name: str = "notifications.dispatcher"
    max_in_flight: int = 256
    batch_size: int = 128
    _in_flight: set[asyncio.Task[None]] = field(default_factory=set, init=False)

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
        async with httpx.AsyncClient(
            timeout=timeout, limits=limits, trust_env=False, follow_redirects=False
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
                            await self._start(sessionmaker, client, claimed, wake)
                    if claimed and len(claimed) == min(room, self.batch_size):
                        continue  # more may be due right now
                    if len(self._in_flight) >= self.max_in_flight:
                        await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
                        continue
                    await wait_for_wake(stop, wake, min(1.0, self.settings.poll_interval_seconds))
            finally:
                listener.unsubscribe(wake)
                if self._in_flight:
                    await asyncio.wait(
                        self._in_flight, timeout=self.settings.webhook_timeout_seconds + 5
                    )

    async def claim(self, sessionmaker: async_sessionmaker[AsyncSession], limit: int) -> list[Any]:
        async with sessionmaker() as session, session.begin():
            rows = (
                (
                    await session.execute(
                        _CLAIM,
                        {
                            "per_endpoint": PER_ENDPOINT,
                            "limit": limit,
                            "window": CLAIM_WINDOW,
                            "lease_seconds": self.lease_seconds,
                        },
                    )
                )
                .mappings()
                .all()
            )
            if not rows:
                return []
            # What each send needs: the endpoint (URL, secrets) and the event itself.
            endpoint_rows = (
                (
                    await session.execute(
                        text(
                            "SELECT id, url, secrets FROM notifications.endpoints "
                            "WHERE id = ANY(:ids)"
                        ),
                        {"ids": list({r["endpoint_id"] for r in rows})},
                    )
                )
                .mappings()
                .all()
            )
            event_rows = (
                (
                    await session.execute(
                        text(
                            "SELECT seq, id, tx, type, source, subject, time, actor, audience, "
                            "correlation_id, causation_id, data FROM hub.events "
                            "WHERE seq = ANY(:seqs)"
                        ),
                        {"seqs": list({r["event_seq"] for r in rows})},
                    )
                )
                .mappings()
                .all()
            )
        endpoints_by_id = {e["id"]: dict(e) for e in endpoint_rows}
        events_by_seq = {e["seq"]: Event.from_row(e) for e in event_rows}
        return [
            {
                **dict(r),
                "endpoint": endpoints_by_id[r["endpoint_id"]],
                "event": events_by_seq[r["event_seq"]],
            }
            for r in rows
        ]

    async def _start(self, sessionmaker, client, claimed, wake: asyncio.Event) -> None:
        def finished(task: asyncio.Task[None]) -> None:
            self._in_flight.discard(task)
            wake.set()  # a slot is free, and its endpoint may have more due

        for item in claimed:
            task = asyncio.create_task(self._deliver(sessionmaker, client, item))
            self._in_flight.add(task)
            task.add_done_callback(finished)

    async def _deliver(self, sessionmaker, client: httpx.AsyncClient, item: dict[str, Any]) -> None:
        try:
            outcome = await self.send(client, item)
            await self.record(sessionmaker, item, outcome)
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

    async def record(self, sessionmaker, item: dict[str, Any], outcome: Outcome) -> None:
        """The attempt, the delivery's next state and the endpoint's health, in one transaction."""
        now = datetime.now(UTC)
        attempts_made = item["attempt_count"] + 1
        error = outcome.error
        if outcome.status_code is not None and not outcome.succeeded:
            error = f"HTTP {outcome.status_code}"
        async with sessionmaker() as session, session.begin():
            await session.execute(
                insert(attempts).values(
                    delivery_id=item["id"],
                    attempted_at=now,
                    status_code=outcome.status_code,
                    latency_ms=outcome.latency_ms,
                    error=error,
                    response_excerpt=outcome.excerpt,
                )
            )
            values: dict[str, Any] = {
                "attempt_count": deliveries.c.attempt_count + 1,
                "lease_until": None,
                "last_status_code": outcome.status_code,
                "last_error": error,
                "updated_at": func.now(),
            }
            endpoint_id: UUID = item["endpoint_id"]
            disable: str | None = None
            if outcome.succeeded:
                values.update(status="succeeded", next_attempt_at=None)
                await session.execute(
                    update(endpoints)
                    .where(endpoints.c.id == endpoint_id, endpoints.c.failing_since.is_not(None))
                    .values(failing_since=None)
                )
            elif outcome.status_code == 410:
                values.update(status="failed", next_attempt_at=None)
                disable = "the receiver answered 410 Gone"
            else:
                delay: timedelta | None = next_delay(
                    self.settings.webhook_retry_schedule, attempts_made
                )
                if delay is not None and outcome.status_code in (429, 503):
                    delay = retry_after(outcome.retry_after, now) or delay
                if delay is None:
                    values.update(status="failed", next_attempt_at=None)
                else:
                    values.update(status="pending", next_attempt_at=now + delay)
                failing_since = (
                    await session.execute(
                        update(endpoints)
                        .where(endpoints.c.id == endpoint_id)
                        .values(failing_since=func.coalesce(endpoints.c.failing_since, now))
                        .returning(endpoints.c.failing_since)
                    )
                ).scalar()
                if failing_since is not None and now - failing_since >= DISABLE_AFTER:
                    disable = "every attempt failed for 5 days"
            await session.execute(
                update(deliveries).where(deliveries.c.id == item["id"]).values(**values)
            )
            if disable is not None:
                await store.disable_endpoint(session, endpoint_id=endpoint_id, reason=disable)
        if self.metrics is not None:
            self.metrics.webhook_attempts.labels(
                "success" if outcome.succeeded else "failure"
            ).inc()
            self.metrics.webhook_latency.observe(outcome.latency_ms / 1000)


def _host_header(host: str, port: int, scheme: str) -> str:
    default = 443 if scheme == "https" else 80
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default else f"{shown}:{port}"
