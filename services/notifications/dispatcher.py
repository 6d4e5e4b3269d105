"""The dispatcher (SPEC 8): claim → send → record → schedule, over and over.

- **Claim** (`claim`): due deliveries are leased by one statement that commits at once,
  fairly across endpoints, at most `PER_ENDPOINT` in flight per endpoint across all
  dispatchers, so a slow or dead endpoint never holds back the others. Nothing holds a
  transaction open while a webhook is sent. A dispatcher that dies leaves leases that
  expire, and its deliveries are sent again (with the same `webhook-id`): at-least-once.
- **Send** (`send`): sign, connect to the checked address, read at most 2 KB back. One
  pooled client sends many at once; no proxy from the environment, no redirects (a 3xx is a
  failure). Unless private targets are allowed, the target is checked again at send time
  and the connection goes to the address that was checked.
- **Record** (`record`): results are written in batches: a finished send waits a few
  milliseconds for others, then one statement writes their attempts, moves their deliveries
  on and keeps their endpoints' health, as if recorded one by one in the order they
  finished. A batch the database refuses for what one result carries is written again by
  halves, so that only that result fails (`record_all`).
- **Schedule** (`schedule`): each delivery's next state and each endpoint's health are
  decided by the pure rules of `delivery_rules`; the queries are in `store`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import structlog
from aiohttp import ClientSession

from services.notifications import sender, store
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
from shared.db import Database
from shared.eventlog.consumer import wait_for_wake
from shared.eventlog.listener import Listener
from shared.eventlog.model import Event
from shared.observability import Metrics
from shared.settings import Settings

log = structlog.get_logger("relais.notifications.dispatcher")

PER_ENDPOINT = 10


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
    _per_endpoint: dict[Hashable, int] = field(default_factory=dict, init=False)  # in flight
    _closing: bool = field(default=False, init=False)

    @property
    def lease_seconds(self) -> float:
        return self.settings.webhook_timeout_seconds + 5.0

    async def run(self, db: Database, listener: Listener, stop: asyncio.Event) -> None:
        wake = listener.subscribe(DELIVERIES_CHANNEL)
        failures = 0
        self._closing = False
        recorder = asyncio.create_task(self._record_loop(db))
        async with sender.open_session(
            max_connections=self.max_in_flight,
            timeout_seconds=self.settings.webhook_timeout_seconds,
        ) as client:
            try:
                while not stop.is_set():
                    room = self.max_in_flight - len(self._in_flight)
                    claimed: list[Any] = []
                    if room > 0:
                        wake.clear()
                        try:
                            claimed = await self.claim(db, min(room, self.batch_size))
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

    async def claim(self, db: Database, limit: int) -> list[dict[str, Any]]:
        """Lease up to `limit` due deliveries, each with its endpoint and its event."""
        return await store.claim_due(
            db, per_endpoint=PER_ENDPOINT, limit=limit, lease_seconds=self.lease_seconds
        )

    def _start(self, client: ClientSession, claimed, wake: asyncio.Event) -> None:
        def finished(endpoint_id: Hashable, task: asyncio.Task[None]) -> None:
            self._in_flight.discard(task)
            flying = self._per_endpoint.pop(endpoint_id, 1)
            if flying > 1:
                self._per_endpoint[endpoint_id] = flying - 1
            if flying >= PER_ENDPOINT:
                # The endpoint was at its cap: a delivery of its may have waited for this
                # slot (recorded by now). Otherwise nothing due was left behind by the
                # claim; what becomes due later notifies, or the poll finds it.
                wake.set()

        for item in claimed:
            self._sending += 1
            endpoint_id = item["endpoint_id"]
            self._per_endpoint[endpoint_id] = self._per_endpoint.get(endpoint_id, 0) + 1
            task = asyncio.create_task(self._deliver(client, item))
            self._in_flight.add(task)
            task.add_done_callback(partial(finished, endpoint_id))

    async def _deliver(self, client: ClientSession, item: dict[str, Any]) -> None:
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

    async def send(self, client: ClientSession, item: dict[str, Any]) -> Outcome:
        """One attempt: sign, connect to the checked address, read at most 2 KB back."""
        event: Event = item["event"]
        endpoint = item["endpoint"]
        now = datetime.now(UTC)
        body = json.dumps(event.to_cloudevent(), separators=(",", ":"), ensure_ascii=False)
        headers = headers_for(valid_secrets(endpoint["secrets"], now), str(event.id), now, body)
        allow_private = bool(self.settings.notifications_allow_private_targets)
        try:
            target = await resolve(endpoint["url"], allow_private=allow_private)
        except TargetRefused as exc:
            return Outcome(error=f"refused: {exc}")
        return await sender.post(
            client,
            endpoint["url"],
            body=body.encode(),
            headers=headers,
            checked=None if allow_private else target,
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

    async def _record_loop(self, db: Database) -> None:
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
                await self.record_all(db, batch)
            except asyncio.CancelledError:
                for result in batch:
                    if result.done is not None and not result.done.done():
                        result.done.cancel()
                raise
            except Exception as exc:  # the leases expire and the deliveries are claimed again
                _resolve(batch, exc)

    async def record_all(
        self,
        db: Database,
        batch: list[Result],
        *,
        part: bool = False,
    ) -> None:
        """Record a batch and resolve each result's `done`. A batch the database refuses for
        what it carries (`store.refused`) is written again by halves, in order, so that only a
        result it cannot take fails; that one is tried once more without the receiver's texts.
        A result that fails keeps its lease: it expires and the delivery is sent again."""
        try:
            await self.record(db, batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not store.refused(exc):
                _resolve(batch, exc)
            elif len(batch) > 1:
                if not part:
                    log.warning(
                        "record_batch_refused",
                        results=len(batch),
                        sqlstate=store.sqlstate(exc),
                        error=type(exc).__name__,
                    )
                half = len(batch) // 2
                await self.record_all(db, batch[:half], part=True)
                await self.record_all(db, batch[half:], part=True)
            else:
                await self._record_plain(db, batch[0], exc)
        else:
            _resolve(batch, None)

    async def _record_plain(self, db: Database, result: Result, exc: Exception) -> None:
        """The last try for a result the database refused: without the response excerpt, and
        with the error reduced to ASCII. Logged with ids and the error's kind, never its text
        (it may quote what the receiver sent)."""
        outcome = result.outcome
        fields = {
            "delivery_id": str(result.item["id"]),
            "endpoint_id": str(result.item["endpoint_id"]),
            "sqlstate": store.sqlstate(exc),
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
                    db,
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

    async def record(self, db: Database, batch: list[Result]) -> None:
        """The attempts, the deliveries' next states and the endpoints' health of a batch of
        results, in one statement. When the batch may disable an endpoint (a 410, or a failure
        of an endpoint that was failing at claim time) the disabling shares its transaction."""
        attempts, health = self.schedule(batch)
        may_disable = any(h.may_disable for h in health.values())
        superseded = await store.record_attempts(
            db,
            attempts=attempts,
            health=health,
            disable=partial(to_disable, health) if may_disable else None,
        )
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

    def schedule(
        self, batch: list[Result]
    ) -> tuple[list[store.AttemptRecord], dict[Hashable, EndpointHealth]]:
        """Each result as the attempt it records with its delivery's next state, and each
        endpoint's health after the batch, as if recorded one by one in the order they
        finished."""
        schedule = self.settings.webhook_retry_schedule
        attempts = []
        for result in batch:
            item, outcome = result.item, result.outcome
            state = next_state(
                outcome, attempts_made=item["attempt_count"] + 1, schedule=schedule, now=result.at
            )
            attempts.append(
                store.AttemptRecord(
                    delivery_id=item["id"],
                    lease_until=item["lease_until"],
                    claimed_count=item["attempt_count"],
                    attempted_at=result.at,
                    status_code=outcome.status_code,
                    latency_ms=outcome.latency_ms,
                    error=state.error,
                    excerpt=outcome.excerpt,
                    status=state.status,
                    next_attempt_at=state.next_attempt_at,
                )
            )
        health = endpoint_health(
            Answer(
                r.item["endpoint_id"],
                r.outcome,
                r.at,
                failing_at_claim=r.item["endpoint"]["failing_since"] is not None,
            )
            for r in batch
        )
        return attempts, health


@dataclass(slots=True)
class Result:
    """A finished attempt waiting to be recorded."""

    item: dict[str, Any]  # as the claim returned it
    outcome: Outcome
    at: datetime  # when the answer was in: the attempt's time
    queued_at: float = 0.0  # loop time
    done: asyncio.Future[None] | None = None  # resolved when its batch is committed


def _resolve(batch: list[Result], exc: BaseException | None) -> None:
    for result in batch:
        if result.done is not None and not result.done.done():
            if exc is None:
                result.done.set_result(None)
            else:
                result.done.set_exception(exc)
