"""Optimistic concurrency: `If-Match: <version>` (or the body's `version`); stale → 412."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header

from shared.errors import BadRequest, PreconditionFailed

IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description='The `version` you read (`3`, `"3"` or `W/"3"`); a stale one answers '
        "412, one that is not a version 400.",
        examples=['"3"'],
        json_schema_extra={"pattern": r'^(\*|(W/)?"?[0-9]{1,18}"?)$'},
    ),
]


def expected_version(if_match: str | None, body_version: int | None = None) -> int | None:
    """The version the caller read, from If-Match (`3`, `"3"` or `W/"3"`) or the body."""
    if if_match is not None and if_match.strip() != "*":
        raw = if_match.strip().removeprefix("W/").strip('"')
        try:
            header_version = int(raw)
        except ValueError as exc:
            raise BadRequest('If-Match must be the resource\'s version, e.g. "3".') from exc
        if body_version is not None and body_version != header_version:
            raise BadRequest("If-Match and the body's version differ.")
        return header_version
    return body_version


def check_version(current: int, expected: int | None) -> None:
    if expected is not None and expected != current:
        raise PreconditionFailed(
            f"The resource is at version {current}, not {expected}: read it again and retry.",
            current_version=current,
        )
