"""The referrals service's queries: the only code of the service that holds SQL or touches
the driver.

`referrals` holds the referrals and their history, `projections` the copies of partners,
services, cases and steps built from events (and the areas they are read with), `loads` the
services' load counters, `indicators` the indicators' rollup and the coordination's
queries over it (SPEC 12). Every function takes the connection, then keyword-only arguments;
the caller owns the transaction. Each statement is compiled once, at import
(`shared.db.Statement`), but for the pages of the lists, whose filters vary per call.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Column, Table, bindparam, column, func, select
from sqlalchemy.dialects.postgresql import JSONB, Insert, insert

from shared.db import Connection

__all__ = ["Connection", "insert_rows"]  # `Connection`: what every store function takes


def insert_rows(table: Table, columns: Sequence[Column]) -> Insert:
    """`INSERT` of the rows of the JSON array parameter `rows` (objects keyed by column
    name), each value read as its column's type: any number of rows in one statement, one
    parameter, compiled once."""
    rows = (
        func.jsonb_to_recordset(bindparam("rows", type_=JSONB))
        .table_valued(*[column(c.name, c.type) for c in columns])
        .render_derived(name="r", with_types=True)
    )
    return insert(table).from_select(
        [c.name for c in columns], select(*[rows.c[c.name] for c in columns])
    )
