"""Keyset pagination: `?limit=&cursor=`, answered as `{"items": [...], "next_cursor": ...}`.

A cursor is the sort key of the last item served, as URL-safe base64 of JSON. Pages stay
stable under inserts because the next page starts strictly after that key.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Select, bindparam, tuple_

from shared.errors import FieldError, Unprocessable

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


def encode_cursor(values: Sequence[Any]) -> str:
    raw = json.dumps([str(v) if not isinstance(v, (int, float)) else v for v in values])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *, width: int) -> list[Any]:
    """The key values in a cursor; 422 naming `cursor` for anything malformed."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeError) as exc:
        raise _bad_cursor() from exc
    if not isinstance(values, list) or len(values) != width:
        raise _bad_cursor()
    return values


def _bad_cursor() -> Unprocessable:
    return Unprocessable(
        "The cursor is not one this API gave out.",
        errors=[FieldError(field="query.cursor", message="malformed cursor", type="cursor")],
    )


LimitQuery = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"Page size, at most {MAX_LIMIT}.")
]
CursorQuery = Annotated[
    str | None,
    Query(max_length=500, description="The `next_cursor` of the previous page."),
]


def keyset(
    query: Select,
    *,
    order_by: Sequence[ColumnElement],
    cursor: str | None,
    limit: int,
    parse: Sequence[type] | None = None,
) -> Select:
    """Order `query` by the key columns, start after the cursor, and fetch one row extra."""
    if cursor is not None:
        values = _cursor_values(cursor, width=len(order_by), parse=parse)
        query = query.where(tuple_(*order_by) > tuple_(*values))
    return query.order_by(*order_by).limit(limit + 1)


def keyset_shape(query: Select, *, order_by: Sequence[ColumnElement], after: bool) -> Select:
    """`keyset` with parameters instead of values, for a statement compiled once per shape:
    ordered by the key columns, after the key in `after_0`, `after_1`, ... when `after`,
    and `fetch` rows (the page size plus one: `keyset_params` gives them all)."""
    if after:
        key = [bindparam(f"after_{i}", type_=column.type) for i, column in enumerate(order_by)]
        query = query.where(tuple_(*order_by) > tuple_(*key))
    return query.order_by(*order_by).limit(bindparam("fetch"))


def keyset_params(cursor: str | None, *, limit: int, parse: Sequence[type]) -> dict[str, Any]:
    """The parameters of a `keyset_shape` statement for this cursor and page size; 422
    naming `cursor` for a cursor this API could not have given out."""
    params: dict[str, Any] = {"fetch": limit + 1}
    if cursor is not None:
        values = _cursor_values(cursor, width=len(parse), parse=parse)
        params.update({f"after_{i}": value for i, value in enumerate(values)})
    return params


def _cursor_values(cursor: str, *, width: int, parse: Sequence[type] | None) -> list[Any]:
    values = decode_cursor(cursor, width=width)
    if parse is None:
        return values
    try:
        return [_checked(p(v)) for p, v in zip(parse, values, strict=True)]
    except Exception as exc:  # any value this API could not have given out
        raise _bad_cursor() from exc


def _checked(value: Any) -> Any:
    """A cursor value PostgreSQL can take: no NUL in text, integers within bigint."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("NUL in cursor")
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise ValueError("integer out of range")
    if isinstance(value, datetime) and value.tzinfo is not None:
        value.astimezone(UTC)  # raises OverflowError at the edges of the calendar
    return value


def page_of(rows: Sequence[T], *, limit: int, key: Any) -> tuple[list[T], str | None]:
    """Split the fetched rows into the page and the next cursor (`key(row)` gives its sort key)."""
    items = list(rows[:limit])
    next_cursor = encode_cursor(key(items[-1])) if len(rows) > limit and items else None
    return items, next_cursor


def parse_time(value: str) -> datetime:
    """A timestamp key of a cursor (as `encode_cursor` wrote it): always with its offset."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("a cursor time carries its offset")
    return parsed
