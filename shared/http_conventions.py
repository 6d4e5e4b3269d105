"""HTTP conventions every operation shares (SPEC 7): a request body in a media type the
operation does not take answers 415 naming those it takes, and a 405 names in `Allow` every
method of the path.

Both are derived from what the app declares, never listed per handler: the media types an
operation takes are the keys of its OpenAPI `requestBody.content` (so the document and the
check cannot disagree), and the methods of a path are those the router answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.routing import BaseRoute, Match, compile_path
from starlette.types import Scope

from shared.problems import http_problem

JSON = "application/json"
# FastAPI reads a form from either encoding: an operation that takes one takes both (a file
# field sent urlencoded is then missing, and the answer says so with a 422).
FORMS = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})

# The methods a path may answer, in the order `Allow` names them.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

Operation = tuple[re.Pattern[str], dict[str, tuple[str, ...]]]


def media_type(content_type: str) -> str:
    """`application/json; charset=utf-8` -> `application/json`."""
    return content_type.split(";", 1)[0].strip().lower()


def operations_from_openapi(schema: dict) -> list[Operation]:
    """Each path of the document as a pattern, with the media types each method's request
    body takes (empty for a method that takes no body), in the document's order."""
    table: list[Operation] = []
    for path, item in schema.get("paths", {}).items():
        pattern, _format, _convertors = compile_path(path)
        methods = {
            method.upper(): tuple(
                media_type(name) for name in operation.get("requestBody", {}).get("content", {})
            )
            for method, operation in item.items()
            if method.upper() in METHODS
        }
        table.append((pattern, methods))
    return table


def accepted_media_types(table: Sequence[Operation], method: str, path: str) -> tuple[str, ...]:
    """The media types the operation at `method path` takes; empty when it takes no body or
    is not documented (the router then answers as it would)."""
    for pattern, methods in table:
        if method in methods and pattern.match(path):
            return methods[method]
    return ()


def media_type_verdict(
    table: Sequence[Operation], method: str, path: str, content_type: bytes | None
) -> Literal["pass", "json"] | JSONResponse:
    """What a request with a body gets: `pass` when its operation takes the body's media type
    (or is not documented), `json` when it sent no `Content-Type` to an operation that takes
    JSON (read as JSON: curl and small scripts often leave the header out, and the bearer key
    every such operation requires already keeps browsers' cross-site requests away), else the
    415 naming what the operation takes."""
    accepted = accepted_media_types(table, method, path)
    if not accepted:
        return "pass"
    if content_type is None:
        if JSON in accepted:
            return "json"
        sent = None
    else:
        sent = media_type(content_type.decode("latin-1"))
        if sent in accepted or (sent in FORMS and not FORMS.isdisjoint(accepted)):
            return "pass"
    return unsupported_media_type(method, accepted, sent)


def unsupported_media_type(method: str, accepted: Sequence[str], sent: str | None) -> JSONResponse:
    """The 415 problem: what the operation takes, and what was sent."""
    takes = " or ".join(f"`{name}`" for name in accepted)
    was = f"`{sent}`" if sent else "no Content-Type"
    headers = {}
    if method in ("POST", "PATCH"):  # RFC 9110 15.5.16: tell the client what to send instead
        headers[f"Accept-{method.capitalize()}"] = ", ".join(accepted)
    return http_problem(
        415,
        f"This operation takes a body in {takes}; the request sent {was}.",
        headers=headers,
    )


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> list[str]:
    """Every method some route answers at the scope's path (Starlette's router names only
    the first route whose path matches)."""
    allowed = []
    for method in METHODS:
        # Matching may note what it found in the scope's dicts: give it copies of them.
        probe = {k: dict(v) if isinstance(v, dict) else v for k, v in scope.items()}
        probe["method"] = method
        if any(route.matches(probe)[0] == Match.FULL for route in routes):
            allowed.append(method)
    return allowed


async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    """405 with `Allow` naming every method of the path."""
    declared = (getattr(exc, "headers", None) or {}).get("Allow", "")
    allowed = allowed_methods(request.app.router.routes, request.scope)
    if not allowed or request.method in allowed:
        # The 405 came from inside a mount (static files) that took the request: it knows.
        allowed = [m.strip() for m in declared.split(",") if m.strip()]
    allow = ", ".join(allowed)
    return http_problem(
        405,
        f"{request.method} is not allowed here; this path takes {allow or 'no method'}.",
        headers={"Allow": allow},
    )
