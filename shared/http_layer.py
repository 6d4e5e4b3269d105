"""The one middleware every request passes, in a single pass over its headers and its body.

In order, as each request meets them:
1. its id (`X-Request-ID`, accepted or made, echoed), its access line and its metrics;
2. any exception the handlers did not take answered as a problem document (logged once);
3. a body over the limit refused with 413 before anything reads it: at once for a declared
   `Content-Length`, else read up to the limit (bodies are small JSON documents);
4. a body in a media type its operation does not take refused with 415 (`shared.http_conventions`);
5. `Idempotency-Key` on a POST with a bearer key (`shared.idempotency`): the key claimed before
   the handler runs, the answer kept after it, a repeated request answered from the record.

One pure ASGI callable instead of five stacked middlewares: each of those scanned the headers
and wrapped `send` again (bench/README.md, "Per-request overhead").
"""

from __future__ import annotations

import time

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import idempotency
from shared.auth import look_up
from shared.http_conventions import JSON, Operation, media_type_verdict, operations_from_openapi
from shared.observability import AccessLog, Metrics, request_id_for, request_id_var
from shared.problems import problem_response, unexpected_error_response

# What the caller's key was found to be by the idempotency check, for `shared.deps.get_caller`
# (one look-up per request): the scope's state holds (presented key, principal).
AUTHENTICATED = "authenticated"


class Disconnected(Exception):
    """The client went away while its body was being read."""


class HttpLayer:
    """Request id, access log, unexpected errors, body limit, media type and idempotency."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.access = AccessLog(metrics)
        self.max_body_bytes = max_body_bytes
        self._operations: list[Operation] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming_id = content_type = content_length = authorization = key = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if incoming_id is None:
                    incoming_id = value
            elif name == b"content-length":
                content_length = value
            elif name == b"content-type":
                content_type = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"authorization":
                authorization = value
            elif name == b"idempotency-key":
                key = value
        rid = request_id_for(incoming_id)
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode())
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message = {**message, "headers": [*message.get("headers", ()), rid_header]}
            await send(message)

        try:
            await self._handle(
                scope,
                receive,
                send_with_id,
                content_length=content_length,
                content_type=content_type,
                chunked=chunked,
                authorization=authorization,
                key=key,
            )
        except Disconnected:
            pass
        except Exception as exc:
            response = unexpected_error_response(exc, scope.get("path_params") or {})
            if not response_started:  # else the response is under way: the log line is all
                await response(scope, receive, send_with_id)
        finally:
            self.access.record(scope, status, time.perf_counter() - started)
            request_id_var.reset(token)

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        content_length: bytes | None,
        content_type: bytes | None,
        chunked: bool,
        authorization: bytes | None,
        key: bytes | None,
    ) -> None:
        body: bytes | None = None  # the body, once something had to read it
        if content_length is not None:
            try:
                declared = int(content_length)
            except ValueError:
                declared = self.max_body_bytes + 1
            if declared > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
            has_body = content_length.strip() not in (b"", b"0")
        else:
            has_body = chunked
            if chunked:
                body = await self._read_body(receive)
                if body is None:
                    await self._too_large(scope, receive, send)
                    return

        if has_body:
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            verdict = media_type_verdict(self._table(scope), scope["method"], path, content_type)
            if verdict == "json":
                scope["headers"] = [*scope["headers"], (b"content-type", JSON.encode())]
            elif verdict != "pass":
                await verdict(scope, receive, send)
                return

        if (
            scope["method"] == "POST"
            and key is not None
            and authorization is not None
            and authorization[:7].lower() == b"bearer "
        ):
            await self._idempotent(
                scope,
                receive,
                send,
                body=body,
                raw_key=key,
                presented=authorization.decode("latin-1")[7:].strip(),
                content_type=content_type,
            )
            return
        await self.app(scope, _replaying(body, receive) if body is not None else receive, send)

    def _table(self, scope: Scope) -> list[Operation]:
        if self._operations is None:
            self._operations = operations_from_openapi(scope["app"].openapi())
        return self._operations

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None when it is over the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await problem_response(
            413,
            "payload-too-large",
            "Request body too large",
            f"Request bodies are limited to {self.max_body_bytes} bytes.",
        )(scope, receive, send)

    async def _idempotent(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        body: bytes | None,
        raw_key: bytes,
        presented: str,
        content_type: bytes | None,
    ) -> None:
        key = raw_key.decode("latin-1").strip()
        if not key or len(key) > idempotency.MAX_KEY_LENGTH:
            await problem_response(
                400,
                "bad-request",
                "Bad request",
                f"Idempotency-Key must be 1 to {idempotency.MAX_KEY_LENGTH} characters.",
            )(scope, receive, send)
            return
        db = scope["app"].state.db
        principal = await look_up(db, presented)
        if principal is None:  # the route answers 401
            await self.app(scope, _replaying(body, receive) if body is not None else receive, send)
            return
        scope["state"][AUTHENTICATED] = (presented, principal)
        if body is None:
            body = b""
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise Disconnected
                body += message.get("body", b"")
                more = message.get("more_body", False)

        ident = idempotency.ident_of(scope=principal.scope, path=scope["path"], key=key)
        fingerprint = idempotency.request_fingerprint(body, (content_type or b"").decode("latin-1"))
        taken = await idempotency.claim(db, ident=ident, fingerprint=fingerprint)
        if taken is not None:
            await _taken_response(taken)(scope, receive, send)
            return

        status = 500
        response_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        # The answer is held back until it is stored: a client that has it and sends the
        # request again gets it replayed, never "still in flight".
        held: list[Message] = []

        async def capture_send(message: Message) -> None:
            nonlocal status, response_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            held.append(message)

        try:
            await self.app(scope, _replaying(body, receive), capture_send)
        except BaseException:
            await idempotency.release(db, ident=ident)
            raise
        if status >= 400:
            await idempotency.release(db, ident=ident)
        else:
            await idempotency.complete(
                db,
                ident=ident,
                status=status,
                headers=response_headers,
                body=b"".join(chunks),
            )
        for message in held:
            await send(message)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands over the body already read, then waits on the client."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _taken_response(taken: idempotency.Taken) -> Response:
    """The answer to a request whose Idempotency-Key is already taken."""
    if taken == "reused":
        return problem_response(
            422,
            "idempotency-key-reused",
            "Idempotency-Key reused with another body",
            "This Idempotency-Key was first used with a different request body.",
        )
    if taken == "in_flight":
        return problem_response(
            409,
            "idempotency-key-in-flight",
            "Request already in progress",
            "A request with this Idempotency-Key is still being processed; retry later.",
            headers={"Retry-After": "1"},
        )
    return Response(
        content=taken.body,
        status_code=taken.status,
        headers={**taken.headers, "Idempotent-Replayed": "true"},
    )
