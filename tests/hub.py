"""The three services running together, with their workers, in-process, on one database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from devkit.client import HubClient
from services.notifications.app import create_app as notifications_app
from services.referrals.app import create_app as referrals_app
from services.registry.app import create_app as registry_app
from shared.settings import Settings
from tests.conftest import running
from tests.factories import make_admin_key


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


@asynccontextmanager
async def running_hub(settings: Settings, **overrides: Any) -> AsyncIterator[Hub]:
    settings = settings.model_copy(
        update={"run_workers": True, "poll_interval_seconds": 0.2, **overrides}
    )
    async with AsyncExitStack() as stack:
        registry_api = registry_app(settings)
        registry = await stack.enter_async_context(running(registry_api))
        referrals = await stack.enter_async_context(running(referrals_app(settings)))
        notifications = await stack.enter_async_context(running(notifications_app(settings)))
        admin = await make_admin_key(registry_api.state.db)
        yield Hub(
            registry=registry,
            referrals=referrals,
            notifications=notifications,
            admin=admin,
            db=registry_api.state.db,
        )
