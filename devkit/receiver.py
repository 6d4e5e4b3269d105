"""A webhook receiver on a loopback port, for the tests, the demo and the bench.

One small HTTP/1.1 server on raw asyncio with the httptools parser (as uvicorn uses it),
lean enough that the bench's dispatch measure is bounded by the dispatcher, not by it:

- `Receiver`, in the caller's event loop (tests, `tools/demo.py`): records every request
  (`requests`, `arrived`) and answers what `respond` says, after `gate` when one is given.
- `python -m devkit.receiver PORT`, a process of its own (the bench): answers `200 ok` at
  once, counts the POSTs with their arrival time (`time.time()`, comparable with other
  processes' clocks on the same machine) and the first `referral.created` of each case
  reference. Control (GET): `/count`, `/stamps`, `/first`, `/samples`, `/reset`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import httptools

from shared.embedded_pg import free_port

# A handler gets (method, path, raw headers, body) and returns the response's bytes, or an
# awaitable of them (an answer that waits).
Handler = Callable[[str, str, list[tuple[bytes, bytes]], bytes], "bytes | Awaitable[bytes]"]


def response(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    """The bytes of an HTTP/1.1 response with a Content-Length."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One client connection: requests parsed by httptools, answered in their order."""

    def __init__(self, handler: Handler, connections: set[_Connection]) -> None:
        self.handler = handler
        self.connections = connections
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending: asyncio.Task | None = None  # the last answer still waiting, if any
        self._new_message()

    def _new_message(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        if self.pending is not None:
            self.pending.cancel()  # an answer that hangs ends with its connection

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode("latin-1")
        path = self.url.decode("latin-1")
        answer = self.handler(method, path, self.headers, b"".join(self.body))
        keep_alive = self.parser.should_keep_alive()
        self._new_message()
        if isinstance(answer, bytes) and self.pending is None:
            self._write(answer, keep_alive)
        else:
            self.pending = asyncio.ensure_future(self._later(answer, self.pending, keep_alive))

    async def _later(
        self, answer: bytes | Awaitable[bytes], before: asyncio.Task | None, keep_alive: bool
    ) -> None:
        if before is not None:  # answers leave in the order the requests came
            await before
        data = answer if isinstance(answer, bytes) else await answer
        self._write(data, keep_alive)
        if self.pending is asyncio.current_task():
            self.pending = None

    def _write(self, data: bytes, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        if not keep_alive:
            self.transport.close()


async def serve(handler: Handler, port: int, host: str = "127.0.0.1") -> Server:
    """Listen on `host:port` (0: any free port) and answer with `handler`."""
    connections: set[_Connection] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Connection(handler, connections), host, port, backlog=1024
    )
    return Server(server, connections)


@dataclass
class Server:
    server: asyncio.Server
    connections: set[_Connection]

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        self.server.close()
        for connection in list(self.connections):
            connection.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.server.wait_closed(), timeout=5)


# --- In the caller's event loop: the tests and the demo ---------------------------------------


@dataclass
class Received:
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float  # time.monotonic() on arrival
    method: str = "POST"
    path: str = "/hooks"
    wall: float = 0.0  # time.time() on arrival


Answer = tuple[int, dict[str, str]] | tuple[int, dict[str, str], bytes] | str


@dataclass
class Receiver:
    """`respond(received_so_far)` returns (status, headers), (status, headers, body) or the
    string "hang" (no answer until the sender gives up), or an awaitable of one of them.
    With a `gate`, every answer waits until the gate is set."""

    respond: Callable[[list[Received]], Answer | Awaitable[Answer]] = lambda _r: (200, {})
    gate: asyncio.Event | None = None
    port: int = field(default_factory=free_port)
    requests: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    server: Server | None = None

    @property
    def url(self) -> str:
        return self.url_for("/hooks")

    def url_for(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _handle(
        self, method: str, path: str, raw: list[tuple[bytes, bytes]], body: bytes
    ) -> bytes | Awaitable[bytes]:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}
        received = Received(headers, body, time.monotonic(), method, path, time.time())
        self.requests.append(received)
        self.arrived.set()
        answer = self.respond(self.requests)
        if self.gate is None and isinstance(answer, tuple):
            return self._encode(answer)
        return self._answer_later(answer)

    async def _answer_later(self, answer: Answer | Awaitable[Answer]) -> bytes:
        if inspect.isawaitable(answer):
            answer = await answer
        if answer == "hang":
            await asyncio.Event().wait()  # until the connection ends
        if self.gate is not None:
            await self.gate.wait()
        return self._encode(answer)  # type: ignore[arg-type]

    @staticmethod
    def _encode(answer: tuple) -> bytes:
        status, extra, *rest = answer
        body = rest[0] if rest else f"answered {status}".encode()
        return response(status, {"content-type": "text/plain", **extra}, body)

    async def start(self) -> None:
        self.server = await serve(self._handle, self.port)
        self.port = self.server.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None


# --- A process of its own: the bench ------------------------------------------------------------

_REFERENCE = re.compile(rb'"case_reference":"([^"]+)"')
_OK = response(200, {"content-type": "text/plain"}, b"ok")
SAMPLES = 3


class Tally:
    """What the bench asks of a receiver: how many POSTs came, when, and the first
    `referral.created` of each case reference; the first few requests whole."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.stamps: list[float] = []
        self.first: dict[str, float] = {}
        self.samples: list[dict] = []

    def handle(self, method: str, path: str, raw: list[tuple[bytes, bytes]], body: bytes) -> bytes:
        if method != "POST":
            return self.control(path)
        now = time.time()
        self.count += 1
        self.stamps.append(now)
        if b'"type":"referral.created"' in body:
            found = _REFERENCE.search(body)
            if found:
                self.first.setdefault(found.group(1).decode(), now)
        if len(self.samples) < SAMPLES:
            headers = {k.decode().lower(): v.decode() for k, v in raw}
            self.samples.append({"headers": headers, "body": body.decode()})
        return _OK

    def control(self, path: str) -> bytes:
        if path.startswith("/count"):
            payload: object = {"count": self.count}
        elif path.startswith("/stamps"):
            payload = {"count": self.count, "stamps": self.stamps}
        elif path.startswith("/first"):
            payload = {"count": self.count, "first": self.first}
        elif path.startswith("/samples"):
            payload = {"samples": self.samples}
        elif path.startswith("/reset"):
            self.reset()
            payload = {"count": 0}
        else:
            payload = {"status": "ok"}
        return response(200, {"content-type": "application/json"}, json.dumps(payload).encode())


async def _serve_forever(port: int) -> None:
    server = await serve(Tally().handle, port)
    print(f"receiver listening on {server.port}", flush=True)
    async with server.server:
        await server.server.serve_forever()


def main() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve_forever(int(sys.argv[1])))


if __name__ == "__main__":
    main()
