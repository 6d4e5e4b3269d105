"""`Idempotency-Key` on every POST (SPEC 7).

Scoped to the caller (its partner, or admin), the method and the path. The same key with the
same JSON body (compared parsed) returns the first response; another body answers 422; a key
still in flight answers 409; records are kept 24 hours. Only answers of requests that were
carried out (below 400) are stored: a 4xx changed nothing (SPEC 9), so a client may correct
its request and send it again under the same key; a 5xx may be retried as it was.

The record is claimed before the handler runs and completed after it answers, in separate
short transactions. A process that dies between the two leaves the key in flight; after
`ABANDONED_AFTER` such a key may be claimed again.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta

from sqlalchemy import and_, delete, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import authenticate
from shared.problems import problem_response
from shared.tables import idempotency_records as records

HEADER = b"idempotency-key"
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


async def purge_expired(session: AsyncSession) -> int:
    result = await session.execute(
        delete(records).where(records.c.created_at < text("now() - interval '24 hours'"))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


class IdempotencyMiddleware:
    """Pure ASGI middleware; the sessionmaker is the app's (`app.state.sessionmaker`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        raw_key = headers.get(HEADER)
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if raw_key is None or not authorization.lower().startswith("bearer "):
            await self.app(scope, receive, send)
            return
        key = raw_key.decode("latin-1").strip()
        if not key or len(key) > MAX_KEY_LENGTH:
            await problem_response(
                400,
                "bad-request",
                "Bad request",
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.",
            )(scope, receive, send)
            return
        sessionmaker: async_sessionmaker[AsyncSession] = scope["app"].state.sessionmaker
        principal = await authenticate(sessionmaker, authorization[7:].strip())
        if principal is None:
            await self.app(scope, receive, send)  # the route answers 401
            return

        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)

        ident = {
            "scope": principal.scope,
            "method": "POST",
            "path": scope["path"][:500],
            "key": key,
        }
        fingerprint = request_fingerprint(body, headers.get(b"content-type", b"").decode("latin-1"))
        verdict = await self._claim(sessionmaker, ident, fingerprint)
        if verdict is not None:
            await verdict(scope, receive, send)
            return

        sent = False

        async def replay_receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        status = 500
        response_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def capture_send(message: Message) -> None:
            nonlocal status, response_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay_receive, capture_send)
        except BaseException:
            await self._release(sessionmaker, ident)
            raise
        if status >= 400:
            await self._release(sessionmaker, ident)
            return
        kept = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in response_headers
            if k.decode("latin-1").lower() in _REPLAYED_HEADERS
        }
        async with sessionmaker() as session, session.begin():
            await session.execute(
                update(records)
                .where(*self._match(ident))
                .values(
                    state="done",
                    response_status=status,
                    response_headers=kept,
                    response_body=b"".join(chunks),
                )
            )

    @staticmethod
    def _match(ident: dict[str, str]) -> list:
        return [
            records.c.scope == ident["scope"],
            records.c.method == ident["method"],
            records.c.path == ident["path"],
            records.c.key == ident["key"],
        ]

    async def _claim(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        ident: dict[str, str],
        fingerprint: bytes,
    ) -> Response | None:
        """None when this request may run; otherwise the response to send instead."""
        async with sessionmaker() as session, session.begin():
            inserted = (
                await session.execute(
                    insert(records)
                    .values(**ident, request_hash=fingerprint, state="in_flight")
                    .on_conflict_do_nothing()
                    .returning(records.c.key)
                )
            ).scalar()
            if inserted is not None:
                return None
            row = (
                (
                    await session.execute(
                        select(
                            records,
                            (records.c.created_at < text("now() - interval '24 hours'")).label(
                                "expired"
                            ),
                            (records.c.created_at < text("now() - interval '60 seconds'")).label(
                                "abandoned"
                            ),
                        )
                        .where(*self._match(ident))
                        .with_for_update()
                    )
                )
                .mappings()
                .one_or_none()
            )
            retake = (
                row is None or row["expired"] or (row["state"] == "in_flight" and row["abandoned"])
            )
            if retake:
                await session.execute(
                    insert(records)
                    .values(**ident, request_hash=fingerprint, state="in_flight")
                    .on_conflict_do_update(
                        index_elements=["scope", "method", "path", "key"],
                        set_={
                            "request_hash": fingerprint,
                            "state": "in_flight",
                            "created_at": text("now()"),
                            "response_status": None,
                            "response_headers": None,
                            "response_body": None,
                        },
                    )
                )
                return None
            if row["request_hash"] != fingerprint:
                return problem_response(
                    422,
                    "idempotency-key-reused",
                    "Idempotency-Key reused with another body",
                    "This Idempotency-Key was first used with a different request body.",
                )
            if row["state"] == "in_flight":
                return problem_response(
                    409,
                    "idempotency-key-in-flight",
                    "Request already in progress",
                    "A request with this Idempotency-Key is still being processed; retry later.",
                    headers={"Retry-After": "1"},
                )
            headers = dict(row["response_headers"] or {})
            headers["Idempotent-Replayed"] = "true"
            return Response(
                content=row["response_body"] or b"",
                status_code=row["response_status"],
                headers=headers,
            )

    @classmethod
    async def _release(
        cls, sessionmaker: async_sessionmaker[AsyncSession], ident: dict[str, str]
    ) -> None:
        async with sessionmaker() as session, session.begin():
            await session.execute(
                delete(records).where(and_(*cls._match(ident), records.c.state == "in_flight"))
            )
