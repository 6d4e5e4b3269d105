"""Services' loads (SPEC 5.3): a service's referrals in `LOAD_COUNTED_STATUSES`.

Kept by the database: a trigger on `referrals.referrals` (migration `service_loads`) records
each change of a service's load in `service_load_changes`; `fold_changes` adds them up into
`service_loads`, which only the reconciler writes, once per batch; a load is read as the
counter plus the changes not yet folded (`service_options`). `recount` sets the counters from
the referrals themselves.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import ARRAY, String, bindparam, delete, func, select
from sqlalchemy.dialects.postgresql import insert

from services.referrals.routing import ServiceOption
from services.referrals.tables import (
    partners,
    referrals,
    service_load_changes,
    service_loads,
    services,
)
from shared.db import Connection, Statement
from shared.referral_statuses import LOAD_COUNTED_STATUSES, in_lifecycle_order


async def fold_changes(conn: Connection) -> None:
    """Fold the recorded load changes into the counters (the reconciler alone does, once per
    batch; changes committed meanwhile stay for the next fold)."""
    await _FOLD.execute(conn)


_LOCK_REFERRALS = Statement("LOCK TABLE referrals.referrals IN SHARE MODE")
_DELETE_CHANGES = Statement(delete(service_load_changes))
_DELETE_LOADS = Statement(delete(service_loads))
_COUNT_LOADS = Statement(
    insert(service_loads).from_select(
        ["service_id", "load"],
        select(referrals.c.service_id, func.count())
        .where(
            referrals.c.service_id.is_not(None),
            referrals.c.status.in_(in_lifecycle_order(LOAD_COUNTED_STATUSES)),
        )
        .group_by(referrals.c.service_id),
    )
)


async def recount(conn: Connection) -> None:
    """Set the load counters from the referrals (after a restore that bypassed triggers, say)."""
    # Writers of referrals wait while the counters are rebuilt from the referrals themselves.
    await _LOCK_REFERRALS.execute(conn)
    await _DELETE_CHANGES.execute(conn)
    await _DELETE_LOADS.execute(conn)
    await _COUNT_LOADS.execute(conn)


_PENDING = (
    select(func.coalesce(func.sum(service_load_changes.c.delta), 0))
    .where(service_load_changes.c.service_id == services.c.id)
    .scalar_subquery()
)
_OPTIONS_OF_TYPES = (
    select(
        services,
        partners.c.status.label("partner_status"),
        (func.coalesce(service_loads.c.load, 0) + _PENDING).label("active_load"),
    )
    .outerjoin(partners, partners.c.id == services.c.partner_id)
    .outerjoin(service_loads, service_loads.c.service_id == services.c.id)
    .where(services.c.service_type == func.any(bindparam("service_types", type_=ARRAY(String))))
)
_OPTIONS = Statement(_OPTIONS_OF_TYPES)
# The fold: the recorded changes deleted and added to the counters, in one statement.
_FOLDED = (
    delete(service_load_changes)
    .returning(service_load_changes.c.service_id, service_load_changes.c.delta)
    .cte("folded")
)
_FOLD_INTO_COUNTERS = insert(service_loads).from_select(
    ["service_id", "load"],
    select(_FOLDED.c.service_id, func.sum(_FOLDED.c.delta)).group_by(_FOLDED.c.service_id),
)
_FOLD_INTO_COUNTERS = _FOLD_INTO_COUNTERS.on_conflict_do_update(
    index_elements=[service_loads.c.service_id],
    set_={"load": service_loads.c.load + _FOLD_INTO_COUNTERS.excluded.load},
)
_FOLD = Statement(_FOLD_INTO_COUNTERS.add_cte(_FOLDED))
# The fold and the read in one statement. Its parts see one snapshot: the read counts the
# counters as they were plus every change the fold takes away, which is what they become.
_ADDED = _FOLD_INTO_COUNTERS.cte("added")
_FOLD_THEN_OPTIONS = Statement(_OPTIONS_OF_TYPES.add_cte(_FOLDED).add_cte(_ADDED))


async def service_options(
    conn: Connection, *, service_types: Iterable[str], fold: bool = False
) -> dict[str, list[ServiceOption]]:
    """Every service of each type with its partner's state and its current load (the
    folded counter plus the changes not yet folded), by type; one statement for all. With
    `fold`, the same statement first folds the changes into the counters (`fold_changes`)."""
    wanted = sorted(set(service_types))
    by_type: dict[str, list[ServiceOption]] = {t: [] for t in wanted}
    statement = _FOLD_THEN_OPTIONS if fold else _OPTIONS
    for r in await statement.fetch(conn, service_types=wanted):
        by_type[r["service_type"]].append(
            ServiceOption.from_row(
                r, partner_active=r["partner_status"] == "active", load=int(r["active_load"])
            )
        )
    return by_type
