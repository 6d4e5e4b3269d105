"""The registry's one call to another service: the deliveries of a case's events, from the
notifications service's `GET /deliveries?case_id=` (admin), for a subject access export.

httpx, the project's HTTP client outside the webhook dispatcher (aiohttp there, chosen for
that hot path alone), with the caller's own key: the notifications service checks it
again. No proxy from the environment, a bounded time, and every page or nothing: a failure
raises `NotificationsUnavailable`, never a partial list."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import httpx
import structlog

from shared.errors import ServiceUnavailable
from shared.pagination import MAX_LIMIT

log = structlog.get_logger("relais.registry.notifications")

TIMEOUT_SECONDS = 10.0
MAX_PAGES = 1_000  # 500,000 deliveries: far beyond any case; a loop guard, not a limit


class NotificationsUnavailable(ServiceUnavailable):
    """The notifications service did not answer the deliveries of a case (503)."""


async def deliveries_of_case(
    base_url: str,
    *,
    case_id: UUID,
    authorization: str,
) -> list[dict[str, Any]]:
    """Every delivery of the events about the case, oldest first, as the notifications
    service lists them (without bodies)."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"case_id": str(case_id), "limit": MAX_LIMIT}
    try:
        async with httpx.AsyncClient(
            base_url=base_url,
            timeout=TIMEOUT_SECONDS,
            trust_env=False,
            follow_redirects=False,
            headers={"Authorization": authorization},
        ) as client:
            for _ in range(MAX_PAGES):
                response = await client.get("/deliveries", params=params)
                if response.status_code != 200:
                    raise _unavailable(case_id, f"answered {response.status_code}")
                page = response.json()
                items.extend(page["items"])
                if not page.get("next_cursor"):
                    return items
                params["cursor"] = page["next_cursor"]
    except httpx.HTTPError as exc:
        raise _unavailable(case_id, type(exc).__name__) from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise _unavailable(case_id, "an answer that is not a page of deliveries") from exc
    raise _unavailable(case_id, f"more than {MAX_PAGES} pages")


def _unavailable(case_id: UUID, why: str) -> NotificationsUnavailable:
    log.warning("notifications_unavailable", case_id=str(case_id), reason=why)
    return NotificationsUnavailable(
        "The notifications service could not list the case's deliveries "
        f"({why}); no partial export is given. Try again shortly."
    )
