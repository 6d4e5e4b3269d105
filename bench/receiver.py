"""A fast local webhook receiver: `python -m bench.receiver PORT`, a process of its own.

Raw asyncio (uvloop when present) with the httptools parser: every POST is answered
`200 ok` at once, on a keep-alive connection, and counted with its arrival time
(`time.time()`, comparable with the load process's clock on the same machine). For the
latency measure it also notes when the first `referral.created` of each case reference
arrived. Control (GET): `/count`, `/stamps`, `/first`, `/samples`, `/reset`.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time

import httptools

_REFERENCE = re.compile(rb'"case_reference":"([^"]+)"')
_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.stamps: list[float] = []
        self.first: dict[str, float] = {}
        self.samples: list[dict] = []


STATE = State()


class Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._reset_message()

    def _reset_message(self) -> None:
        self.url = b""
        self.body: list[bytes] = []
        self.headers: list[tuple[bytes, bytes]] = []

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(STATE.samples) < 3:
            self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        method = self.parser.get_method()
        if method == b"POST":
            now = time.time()
            STATE.count += 1
            STATE.stamps.append(now)
            body = b"".join(self.body)
            if b'"type":"referral.created"' in body:
                found = _REFERENCE.search(body)
                if found:
                    STATE.first.setdefault(found.group(1).decode(), now)
            if len(STATE.samples) < 3:
                STATE.samples.append(
                    {
                        "headers": {k.decode().lower(): v.decode() for k, v in self.headers},
                        "body": body.decode(),
                    }
                )
            self.transport.write(_OK)
        else:
            self._control(self.url.decode())
        self._reset_message()
        if not self.parser.should_keep_alive():
            self.transport.close()

    def _control(self, path: str) -> None:
        assert self.transport is not None
        if path.startswith("/count"):
            payload: object = {"count": STATE.count}
        elif path.startswith("/stamps"):
            payload = {"count": STATE.count, "stamps": STATE.stamps}
        elif path.startswith("/first"):
            payload = {"count": STATE.count, "first": STATE.first}
        elif path.startswith("/samples"):
            payload = {"samples": STATE.samples}
        elif path.startswith("/reset"):
            STATE.reset()
            payload = {"count": 0}
        else:
            payload = {"status": "ok"}
        data = json.dumps(payload).encode()
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(data)).encode()
            + b"\r\n\r\n"
            + data
        )


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Protocol, "127.0.0.1", port, backlog=1024)
    print(f"receiver listening on {port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
