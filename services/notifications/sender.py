"""One webhook POST (SPEC 8), with aiohttp: chosen by measurement over httpx and httpcore
(`bench/README.md`, "The webhook client").

- The connection goes to the address that was checked: the URL's host is replaced by it,
  and the name stays in `Host` and, for https, in SNI and the certificate check
  (`server_hostname`, part of aiohttp's pool key, so a connection is reused only for the
  same address and name). No second DNS resolution.
- No redirects (a 3xx is an answer like any other: a failure), no proxy from the
  environment, no cookies kept, the whole request within the timeout, at most
  `EXCERPT_BYTES` of the answer read. Connections are kept alive and reused.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import aiohttp
from yarl import URL

from services.notifications.delivery_rules import Outcome
from services.notifications.ssrf import Target

EXCERPT_BYTES = 2048


def open_session(*, max_connections: int, timeout_seconds: float) -> aiohttp.ClientSession:
    """The dispatcher's one pooled client; close it with `await session.close()` (or use it as
    an async context manager). Call it inside the running event loop."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=timeout_seconds),
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def host_header(host: str, port: int, scheme: str) -> str:
    default = 443 if scheme == "https" else 80
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default else f"{shown}:{port}"


async def post(
    session: aiohttp.ClientSession,
    url: str,
    *,
    body: bytes,
    headers: Mapping[str, str],
    checked: Target | None,
) -> Outcome:
    """POST `body` to `url`; with `checked`, to the address that was checked for it."""
    started = time.perf_counter()
    target = URL(url)
    sent = dict(headers)
    server_hostname = None
    if checked is not None:
        # Connect to the address that was checked; keep the name for Host and TLS.
        target = target.with_host(checked.address)
        sent["host"] = host_header(checked.host, checked.port, checked.scheme)
        if checked.scheme == "https":
            server_hostname = checked.host
    try:
        async with session.post(
            target,
            data=body,
            headers=sent,
            allow_redirects=False,
            server_hostname=server_hostname,
        ) as response:
            excerpt = b""
            while len(excerpt) < EXCERPT_BYTES:
                chunk = await response.content.read(EXCERPT_BYTES - len(excerpt))
                if not chunk:
                    break
                excerpt += chunk
            return Outcome(
                status_code=response.status,
                excerpt=excerpt.decode("utf-8", errors="replace"),
                latency_ms=_since(started),
                retry_after=response.headers.get("retry-after"),
            )
    except TimeoutError:
        return Outcome(error="timeout", latency_ms=_since(started))
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return Outcome(error=f"{type(exc).__name__}: {exc}", latency_ms=_since(started))


def _since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
