"""The FastAPI dependencies every service uses: the database and the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.auth import Principal, look_up, plausible
from shared.db import Database
from shared.errors import Forbidden, Unauthorized
from shared.http_layer import AUTHENTICATED

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key issued by the coordination: `Authorization: Bearer rk_...`.",
)


async def get_db(request: Request) -> Database:
    """The process's database: handlers open their units of work with `db.transaction()`."""
    return request.app.state.db


async def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """The authenticated caller; 401 without a valid, unrevoked key of an active partner.

    The key is looked up in autocommit (one round trip, no transaction left open); the
    handler then opens its own unit of work.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Send an API key as `Authorization: Bearer <key>`.")
    principal = None
    # The idempotency check of a POST already looked this key up: one look-up per request.
    presented, known = request.scope.get("state", {}).get(AUTHENTICATED, (None, None))
    if known is not None and presented == credentials.credentials:
        principal = known
    elif plausible(credentials.credentials):
        principal = await look_up(request.app.state.db, credentials.credentials)
    if principal is None:
        raise Unauthorized(
            "The API key is unknown, revoked or expired, or its partner is inactive."
        )
    request.scope.setdefault("state", {})["caller"] = principal.actor
    return principal


async def require_admin(caller: Annotated[Principal, Depends(get_caller)]) -> Principal:
    """Only the coordination's admin keys pass; a partner key gets 403."""
    if not caller.is_admin:
        raise Forbidden("This action is reserved to the coordination (an admin key).")
    return caller


DbDep = Annotated[Database, Depends(get_db)]
Caller = Annotated[Principal, Depends(get_caller)]
Admin = Annotated[Principal, Depends(require_admin)]
