"""`python -m services.referrals.rebuild`: rebuild the referrals service's projections of
partners, services and cases from the whole event log, recount the services' loads from
the referrals, and write the indicators' rollup again from the referrals, their history and
the rebuilt cases, in one transaction.

Run it with the referrals workers stopped. Referrals themselves are not touched, and the
reconciler keeps its checkpoint: nothing is routed again.
"""

from __future__ import annotations

import asyncio

from services.referrals import projections
from services.referrals.store import indicators, loads
from shared.db import Database
from shared.settings import Settings


async def main(settings: Settings) -> int:
    db = await Database.connect(settings, application_name="relais-referrals-rebuild")
    try:
        async with db.transaction() as conn:
            count = await projections.rebuild(conn)
            await loads.recount(conn)
            await indicators.rebuild(conn)
            return count
    finally:
        await db.close()


if __name__ == "__main__":
    count = asyncio.run(main(Settings()))
    print(
        f"projections rebuilt from {count} events; services' loads recounted; "
        "indicators' rollup rewritten"
    )
