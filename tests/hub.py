"""The three services running together, with their workers, in-process, on one database."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from devkit.client import HubClient
from services.notifications.app import create_app as notifications_app
from services.referrals.app import create_app as referrals_app
from services.registry.app import create_app as registry_app
from shared.embedded_pg import free_port
from shared.settings import Settings
from tests.conftest import running
from tests.factories import case_body, make_admin_key


@dataclass
class Hub(HubClient):
    """The hub's client (devkit/client.py) with the registry's database."""

    db: Any = None


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not reached in {timeout} s; last value: {last!r}")


@contextmanager
def served_over_http(app: FastAPI) -> Iterator[str]:
    """The app served by uvicorn on a loopback port, on a thread and event loop of its own
    (its lifespan included), for a service that calls it over HTTP; its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, loop="asyncio", log_config=None, access_log=False
        )
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the server stopped while starting"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@asynccontextmanager
async def running_hub(
    settings: Settings, *, notifications_over_http: bool = False, **overrides: Any
) -> AsyncIterator[Hub]:
    """The three services with their workers. With `notifications_over_http`, the
    notifications service listens on a loopback port and the registry calls it there (a
    subject access export); otherwise each is called in-process."""
    settings = settings.model_copy(
        update={"run_workers": True, "poll_interval_seconds": 0.2, **overrides}
    )
    async with AsyncExitStack() as stack:
        if notifications_over_http:
            url = stack.enter_context(served_over_http(notifications_app(settings)))
            settings = settings.model_copy(update={"notifications_url": url})
            notifications = await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, trust_env=False, timeout=30)
            )
        registry_api = registry_app(settings)
        registry = await stack.enter_async_context(running(registry_api))
        referrals = await stack.enter_async_context(running(referrals_app(settings)))
        if not notifications_over_http:
            notifications = await stack.enter_async_context(running(notifications_app(settings)))
        admin = await make_admin_key(registry_api.state.db)
        yield Hub(
            registry=registry,
            referrals=referrals,
            notifications=notifications,
            admin=admin,
            db=registry_api.state.db,
        )


async def two_cases_for_a_provider(
    hub: Hub, receiver_url: str, plan: list[dict], prefix: str
) -> tuple[dict, dict, dict, dict]:
    """An owner and a provider of vocational training across Mali, each with an endpoint at
    `receiver_url` (the owner's for every event, the provider's for referrals), and two of
    the owner's cases with `plan`: `(owner, provider, case, other)`."""
    owner = await hub.partner("ONG Sabou")
    provider = await hub.partner("CFP Kayes")
    await hub.service(provider, "economic.vocational_training", ["ML"])
    await hub.endpoint(owner, receiver_url, ["*"])
    await hub.endpoint(provider, receiver_url, ["referral.*"])
    case, other = [
        await hub.call(
            "POST",
            "registry",
            "/cases",
            key=owner["key"],
            json=case_body(external_id=f"{prefix}-{n}", plan=plan),
            ok=(201,),
        )
        for n in (1, 2)
    ]
    return owner, provider, case, other
