"""RFC 9457 problem documents: how the domain's errors (`shared.errors`), FastAPI's and
Starlette's, and whatever else a request raises are answered over HTTP.

Here live the handlers, `problem_response`, the unexpected-error translation (constraints a
request tripped, values the database refuses, outages) and the `Problem` model that the
OpenAPI documents publish.
"""

from __future__ import annotations

import traceback
from collections.abc import Container, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared import errors as domain
from shared.constraints import database_error, is_outage, refusal_for
from shared.observability import request_id_var

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://relais.dev/problems/"

log = structlog.get_logger("relais.errors")


# The document's schema of `shared.errors.FieldError`, under the name the OpenAPI documents and
# their generated clients use.
class FieldError(BaseModel):
    """One invalid field: where it is (a JSON path from the request) and what is wrong."""

    field: str = Field(examples=["body.beneficiary.date_of_birth"])
    message: str = Field(examples=["Input should be a valid date"])
    type: str = Field(examples=["date_from_datetime_parsing"])


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(examples=[PROBLEM_BASE + "validation"])
    title: str = Field(examples=["Invalid request"])
    status: int = Field(examples=[422])
    detail: str | None = Field(default=None, examples=["2 fields are invalid"])
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str | None = None,
    *,
    errors: Sequence[domain.FieldError] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail or title,
    }
    rid = request_id_var.get()
    if rid is not None:
        body["request_id"] = rid
    if errors is not None:
        body["errors"] = [{"field": e.field, "message": e.message, "type": e.type} for e in errors]
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_CONTENT_TYPE, headers=headers)


def _field_path(loc: Sequence[Any]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def validation_errors(errors: Sequence[dict[str, Any]]) -> list[domain.FieldError]:
    """Pydantic's validation errors as the domain's field errors."""
    return [
        domain.FieldError(
            field=_field_path(e.get("loc", ())), message=e.get("msg", ""), type=e.get("type", "")
        )
        for e in errors
    ]


# The problem type of each status: the domain's errors name theirs; the rest are HTTP's own.
_HTTP_SLUGS = {
    **{
        error.status: (error.slug, error.title)
        for error in (
            domain.BadRequest,
            domain.Unauthorized,
            domain.Forbidden,
            domain.NotFound,
            domain.Conflict,
            domain.PreconditionFailed,
            domain.Unprocessable,
            domain.ServiceUnavailable,
        )
    },
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    428: ("precondition-required", "If-Match is required"),
    429: ("too-many-requests", "Too many requests"),
}


def http_problem(
    status: int, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """The problem document of an HTTP-level error, typed by its status alone."""
    slug, title = _HTTP_SLUGS.get(status, ("error", "Error"))
    return problem_response(status, slug, title, detail, headers=headers, **extra)


def _position(text: str, index: int) -> str:
    """`line 2, column 5` of the character at `index` (both counted from 1)."""
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"line {line}, column {column}"


def _invalid_json(exc: RequestValidationError) -> JSONResponse | None:
    """The 400 for a body that is not JSON (FastAPI reports it as a validation error); the
    detail says what is wrong and where, and quotes nothing of the body."""
    for error in exc.errors():
        if error.get("type") != "json_invalid":
            continue
        loc = error.get("loc", ())
        index = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else 0
        body = exc.body if isinstance(exc.body, str) else ""
        reason = (error.get("ctx") or {}).get("error") or "cannot be parsed"
        message = f"{reason} at {_position(body, index)}"
        return http_problem(
            400,
            f"The body is not valid JSON: {message}.",
            errors=[domain.FieldError(field="body", message=message, type="json_invalid")],
        )
    return None


def _unparsable_body_detail(exc: StarletteHTTPException) -> str | None:
    """Why a body could not be read, when FastAPI's 400 was caused by its encoding."""
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):
        return f"The body is not valid UTF-8: the byte at offset {cause.start} cannot be decoded."
    return None


_OUTAGE_NAMES = {
    "CannotConnectNowError",
    "ConnectionDoesNotExistError",
    "AdminShutdownError",
    "CrashShutdownError",
    "ConnectionFailureError",
    "ConnectionRejectionError",
    "TooManyConnectionsError",
    "InterfaceError",
    "InternalClientError",
}


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception, what it wraps (`orig`) and what caused it, a few levels deep."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending and len(seen) < 12:
        item = pending.pop(0)
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        pending += [getattr(item, "orig", None), item.__cause__, item.__context__]
    return seen


def _is_database_outage(exc: BaseException) -> bool:
    """The database cannot be reached or went away: a passing fault, answered 503."""
    for cause in _causes(exc):
        if isinstance(cause, (ConnectionError, TimeoutError, OSError)):
            return True
        if type(cause).__name__ in _OUTAGE_NAMES or any(
            base.__name__ == "PostgresConnectionError" for base in type(cause).__mro__
        ):
            return True
    return False


def domain_error_response(exc: domain.ProblemError) -> JSONResponse:
    """The problem document of one of the domain's errors."""
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if exc.status == 503:  # a passing fault: say when to try again, as the 503s of an outage do
        headers = {"Retry-After": "5"}
    return problem_response(
        exc.status, exc.slug, exc.title, exc.detail, errors=exc.errors, headers=headers, **exc.extra
    )


def install_error_handlers(app: FastAPI) -> None:
    """Every error answers a problem document; nothing answers a bare 500."""

    @app.exception_handler(domain.ProblemError)
    async def _problem(_request: Request, exc: domain.ProblemError) -> JSONResponse:
        return domain_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        invalid_json = _invalid_json(exc)
        if invalid_json is not None:
            return invalid_json
        errors = validation_errors(exc.errors())
        count = len(errors)
        return problem_response(
            422,
            "validation",
            "Invalid request",
            f"{count} field{'s' if count != 1 else ''} invalid: "
            + ", ".join(e.field for e in errors[:5]),
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = _unparsable_body_detail(exc) or (
            exc.detail if isinstance(exc.detail, str) else None
        )
        return http_problem(exc.status_code, detail, headers=exc.headers)


def _frames(exc: BaseException) -> list[str]:
    """Where the error happened, without its message (messages may quote personal data)."""
    return [
        f"{f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(exc.__traceback__)
    ][-12:]


_BAD_VALUE_ERRORS = {
    "CharacterNotInRepertoireError",
    "UntranslatableCharacterError",
    "NumericValueOutOfRangeError",
    "DatetimeFieldOverflowError",
    "InvalidDatetimeFormatError",
    "InvalidTextRepresentationError",
    "StringDataRightTruncationError",
}


def _is_bad_value(exc: BaseException) -> bool:
    """A value the database cannot hold (a NUL character, a number or date out of range)."""
    cause = getattr(exc, "orig", None) or exc
    cause = getattr(cause, "__cause__", None) or cause
    return type(cause).__name__ in _BAD_VALUE_ERRORS or isinstance(exc, OverflowError)


def unexpected_error_response(exc: BaseException, path_params: Container[str] = ()) -> JSONResponse:
    """409 or 422 naming the field for a constraint a request's value tripped
    (`shared.constraints`), 422 for a value the database cannot hold, 503 for a database
    outage, else a 500 problem with the request id and no stack trace."""
    db_error = database_error(exc)
    refusal = refusal_for(db_error) if db_error is not None else None
    if db_error is not None and refusal is not None:
        field = refusal.field_for(path_params)
        log.info("constraint_refused_request", constraint=db_error.qualified_constraint)
        return problem_response(
            refusal.status,
            refusal.slug,
            refusal.title,
            f"{field}: {refusal.message}.",
            errors=[domain.FieldError(field=field, message=refusal.message, type=refusal.type)],
        )
    if _is_bad_value(exc):
        log.info("value_refused_by_database", error=type(exc).__name__)
        return problem_response(
            422,
            "validation",
            "Invalid request",
            "A value cannot be stored (a NUL character, or a number or date out of range).",
            errors=[],
        )
    if _is_database_outage(exc) or (db_error is not None and is_outage(db_error)):
        log.warning("database_unavailable", error=type(exc).__name__)
        return problem_response(
            503,
            "unavailable",
            "Service temporarily unavailable",
            "The database cannot be reached right now; retry shortly.",
            headers={"Retry-After": "2"},
        )
    log.error(
        "unhandled_error",
        error=type(exc).__name__,
        frames=_frames(exc),
        sqlstate=db_error.sqlstate if db_error else None,
        constraint=db_error.qualified_constraint if db_error else None,
    )
    return problem_response(
        500,
        "internal",
        "Internal error",
        "An unexpected error occurred. Quote the request id when reporting it.",
    )
