"""A real webhook receiver on a loopback port, for tests: records every request and answers
what the test tells it to."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import uvicorn

from shared.embedded_pg import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """`respond(received_so_far)` returns (status, headers), (status, headers, body) or the
    string "hang". With a `gate`, every answer waits until the gate is set."""

    respond: Callable[[list[Received]], object] = lambda _r: (200, {})
    gate: asyncio.Event | None = None
    port: int = field(default_factory=free_port)
    requests: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the sender went away mid-request: nothing was received
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append(Received(headers=headers, body=body, at=time.monotonic()))
        self.arrived.set()
        answer = self.respond(self.requests)
        if answer == "hang":
            await asyncio.sleep(3600)
        if self.gate is not None:
            await self.gate.wait()
        status, extra, *rest = answer  # type: ignore[misc]
        body = rest[0] if rest else f"answered {status}".encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (k.encode(), v.encode())
                    for k, v in {"content-type": "text/plain", **extra}.items()
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def start(self) -> None:
        config = uvicorn.Config(
            self, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        self.server.force_exit = True
        try:
            await asyncio.wait_for(self.task, timeout=5)
        except TimeoutError:
            self.task.cancel()
