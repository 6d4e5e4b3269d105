"""The domain's few typed errors: plain classes that import no framework.

Each carries the HTTP status, the slug of its problem type and its title, so that the one
translation in `shared.problems` needs no table; the code that raises them (stores, pure
modules, handlers) knows nothing of HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field: where it is (a JSON path from the request) and what is wrong."""

    field: str
    message: str
    type: str


class ProblemError(Exception):
    """Base of the typed errors: each carries its status, a slug and a detail."""

    status = 400
    slug = "bad-request"
    title = "Bad request"
    errors: list[FieldError] | None = None

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.extra = extra


class BadRequest(ProblemError):
    status, slug, title = 400, "bad-request", "Bad request"


class Unauthorized(ProblemError):
    status, slug, title = 401, "unauthorized", "Missing or invalid API key"


class Forbidden(ProblemError):
    status, slug, title = 403, "forbidden", "Not allowed for this key"


class NotFound(ProblemError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(ProblemError):
    status, slug, title = 409, "conflict", "Conflict"


class InvalidTransition(Conflict):
    slug, title = "invalid-transition", "Action not allowed in the current status"


class PreconditionFailed(ProblemError):
    status, slug, title = 412, "precondition-failed", "The resource has changed"


class Unprocessable(ProblemError):
    status, slug, title = 422, "validation", "Invalid request"

    def __init__(self, detail: str | None = None, *, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.errors = list(errors)


class ServiceUnavailable(ProblemError):
    status, slug, title = 503, "unavailable", "Service temporarily unavailable"


def cannot_be_null(field: str) -> Unprocessable:
    """The 422 for an update that sets a required field to null."""
    name = field.rsplit(".", 1)[-1]
    return Unprocessable(
        f"{name} cannot be null.",
        errors=[FieldError(field=field, message="cannot be null", type="null")],
    )


def unknown_reference(field: str, message: str) -> Unprocessable:
    """The 422 for a request naming a row that does not exist (`no partner with this id`)."""
    return Unprocessable(
        f"{field}: {message}.", errors=[FieldError(field=field, message=message, type="unknown")]
    )
