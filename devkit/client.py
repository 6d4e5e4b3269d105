"""A small client of the hub's three APIs, for the tests, the demo and the bench.

One httpx client per service, each with its base URL (a running hub's address, or an
in-process ASGI transport in the tests); `call` answers the JSON of an expected status and
raises `HubError` with the problem document's title, detail and field errors otherwise;
`items` walks a paginated list; `partner`, `service` and `endpoint` set up what most
scenarios start with.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

SERVICES = ("registry", "referrals", "notifications")


class HubError(Exception):
    """A call the hub did not answer as expected, in one message."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status the hub answered, if it answered


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def problem(method: str, url: str, response: httpx.Response) -> str:
    """'POST /cases answered 422: <title>; <detail>; <field>: <message>; request id ...'."""
    text = f"{method} {url} answered {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return f"{text}: {_clip(response.text.strip(), 300)}"
    if not isinstance(body, dict):
        return f"{text}: {_clip(str(body), 300)}"
    parts = [str(body.get(k)) for k in ("title", "detail") if body.get(k)]
    for error in body.get("errors") or []:
        parts.append(f"{error.get('field')}: {error.get('message')}")
    if body.get("request_id"):
        parts.append(f"request id {body['request_id']}")
    return f"{text}: " + "; ".join(parts)


@dataclass
class HubClient:
    """The three services' APIs; `admin` is the coordination's key where one is known."""

    registry: httpx.AsyncClient
    referrals: httpx.AsyncClient
    notifications: httpx.AsyncClient
    admin: str | None = None

    error: ClassVar[type[HubError]] = HubError  # what `call` raises

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, urls: dict[str, str], *, admin: str | None = None, **options: Any
    ) -> AsyncIterator[HubClient]:
        """A client of a running hub (`urls` by service name); `options` go to httpx."""
        options.setdefault("timeout", 30)
        options.setdefault("trust_env", False)  # loopback: no proxy from the environment
        async with AsyncExitStack() as stack:
            clients = {
                name: await stack.enter_async_context(
                    httpx.AsyncClient(base_url=urls[name], **options)
                )
                for name in SERVICES
            }
            yield cls(**clients, admin=admin)

    def client(self, service: str) -> httpx.AsyncClient:
        return getattr(self, service)

    async def call(
        self,
        method: str,
        service: str,
        path: str,
        *,
        key: str | None = None,
        json: Any = None,
        params: dict[str, Any] | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
        hints: dict[int, str] | None = None,
    ) -> Any:
        """The JSON the service answers (None when empty), with `key` or the admin's."""
        client = self.client(service)
        url = f"{client.base_url}".rstrip("/") + path
        key = key or self.admin
        try:
            response = await client.request(
                method, path, json=json, params=params, headers=bearer(key) if key else None
            )
        except httpx.HTTPError as exc:
            raise self.error(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code not in ok:
            hint = (hints or {}).get(response.status_code)
            raise self.error(
                problem(method, url, response) + (f". {hint}" if hint else ""),
                status=response.status_code,
            )
        return response.json() if response.content else None

    async def items(
        self,
        service: str,
        path: str,
        *,
        key: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every item of a paginated list, page after page."""
        cursor = None
        while True:
            query = {**(params or {}), "limit": 500, **({"cursor": cursor} if cursor else {})}
            page = await self.call("GET", service, path, key=key, params=query)
            for item in page["items"]:
                yield item
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def partner(self, name: str, kind: str = "ngo", *, key_name: str = "test") -> dict:
        """A new partner, created by the admin, with a new API key in `key`."""
        partner = await self.call(
            "POST",
            "registry",
            "/partners",
            json={
                "name": name,
                "acronym": name[:8],
                "kind": kind,
                "contact_email": "contact@example.org",
            },
            ok=(201,),
        )
        key = await self.call(
            "POST",
            "registry",
            f"/partners/{partner['id']}/api-keys",
            json={"name": key_name},
            ok=(201,),
        )
        partner["key"] = key["key"]
        return partner

    async def service(
        self, partner: dict, service_type: str, areas: list[str], **fields: Any
    ) -> dict:
        """A service of `partner` (with its `key`) over `areas`."""
        return await self.call(
            "POST",
            "registry",
            "/services",
            key=partner["key"],
            json={
                "service_type": service_type,
                "name": f"{partner['name']} {service_type}",
                "areas": areas,
                **fields,
            },
            ok=(201,),
        )

    async def endpoint(
        self, partner: dict, url: str, event_types: list[str], description: str = ""
    ) -> dict:
        """A webhook endpoint of `partner`; the answer holds its `secret`, shown once."""
        return await self.call(
            "POST",
            "notifications",
            "/endpoints",
            key=partner["key"],
            json={"url": url, "event_types": event_types, "description": description},
            ok=(201,),
        )
