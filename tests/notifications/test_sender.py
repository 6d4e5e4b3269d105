"""One webhook POST, against a raw local server (SPEC 8): to the checked address with the
name in Host and SNI, no redirects, no proxy from the environment, no cookies, a bounded
excerpt, the whole request within the timeout, connections reused."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from services.notifications import sender
from services.notifications.ssrf import Target

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class RawServer:
    """Reads each request's head and body; answers what `answer(n)` gives (None: hang)."""

    answer: Callable[[int], bytes | None] = lambda _n: OK
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    server_names: list[str | None] = field(default_factory=list)
    port: int = 0

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        if ssl_context is not None:
            ssl_context.sni_callback = lambda _s, name, _c: self.server_names.append(name)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answer(len(self.requests))
                if answer is None:
                    await asyncio.sleep(3600)
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def header(self, n: int, name: str) -> str | None:
        for line in self.requests[n].split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.encode():
                return value.strip().decode()
        return None


async def _post(server: RawServer, host: str = "hooks.invalid", *, timeout: float = 5, **kw):
    checked = Target(
        url=f"http://{host}:{server.port}/hooks",
        scheme="http",
        host=host,
        port=server.port,
        address="127.0.0.1",
    )
    async with sender.open_session(max_connections=8, timeout_seconds=timeout) as session:
        outcomes = []
        for _ in range(kw.pop("times", 1)):
            outcomes.append(
                await sender.post(
                    session, checked.url, body=b'{"a":1}', headers={"x-a": "1"}, checked=checked
                )
            )
        return outcomes


async def test_the_post_goes_to_the_checked_address_with_the_name_in_host():
    server = RawServer()
    await server.start()
    try:
        # hooks.invalid never resolves: only the checked address can be reached.
        (outcome,) = await _post(server)
        assert (outcome.status_code, outcome.excerpt, outcome.error) == (200, "ok", None)
        assert server.requests[0].startswith(b"POST /hooks HTTP/1.1\r\n")
        assert server.header(0, "host") == f"hooks.invalid:{server.port}"
        assert server.requests[0].endswith(b'{"a":1}')
    finally:
        await server.stop()


async def test_a_redirect_is_an_answer_and_is_not_followed():
    redirect = b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"
    server = RawServer(answer=lambda _n: redirect)
    await server.start()
    try:
        (outcome,) = await _post(server)
        assert outcome.status_code == 302
        assert len(server.requests) == 1
    finally:
        await server.stop()


async def test_no_proxy_is_taken_from_the_environment(monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    server = RawServer()
    await server.start()
    try:
        (outcome,) = await _post(server)
        assert outcome.status_code == 200
    finally:
        await server.stop()


async def test_a_receivers_cookie_is_not_sent_back_and_the_connection_is_reused():
    cookie = b"HTTP/1.1 200 OK\r\nSet-Cookie: s=abc; Path=/\r\nContent-Length: 2\r\n\r\nok"
    server = RawServer(answer=lambda _n: cookie)
    await server.start()
    try:
        outcomes = await _post(server, times=3)
        assert [o.status_code for o in outcomes] == [200, 200, 200]
        assert [server.header(n, "cookie") for n in range(3)] == [None, None, None]
        assert server.connections == 1
    finally:
        await server.stop()


async def test_only_the_excerpt_of_a_long_answer_is_read():
    body = b"x" * 1_000_000
    long = b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    server = RawServer(answer=lambda _n: long)
    await server.start()
    try:
        (outcome,) = await _post(server)
        assert outcome.status_code == 500
        assert outcome.excerpt == "x" * sender.EXCERPT_BYTES
    finally:
        await server.stop()


async def test_a_receiver_that_hangs_is_a_timeout_within_the_limit():
    server = RawServer(answer=lambda _n: None)
    await server.start()
    try:
        (outcome,) = await _post(server, timeout=0.5)
        assert (outcome.status_code, outcome.error) == (None, "timeout")
        assert outcome.latency_ms < 3000
    finally:
        await server.stop()


async def test_a_retry_after_is_read():
    busy = b"HTTP/1.1 503 Busy\r\nRetry-After: 120\r\nContent-Length: 0\r\n\r\n"
    server = RawServer(answer=lambda _n: busy)
    await server.start()
    try:
        (outcome,) = await _post(server)
        assert (outcome.status_code, outcome.retry_after) == (503, "120")
    finally:
        await server.stop()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_https_sends_the_checked_name_in_sni_and_verifies_the_certificate_for_it(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(  # a certificate no trusted authority signed
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=hooks.example", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = RawServer()
    await server.start(context)
    try:
        checked = Target(
            url=f"https://hooks.example:{server.port}/hooks",
            scheme="https",
            host="hooks.example",
            port=server.port,
            address="127.0.0.1",
        )
        async with sender.open_session(max_connections=8, timeout_seconds=5) as session:
            outcome = await sender.post(
                session, checked.url, body=b"{}", headers={}, checked=checked
            )
        assert server.server_names == ["hooks.example"]
        assert outcome.status_code is None
        assert "certificate" in outcome.error.lower()
        assert server.requests == []
    finally:
        await server.stop()
