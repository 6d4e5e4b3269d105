"""The referrals service's queries: the only code of the service that holds SQL or touches
the driver.

`referrals` holds the referrals and their history, `projections` the copies of partners,
services, cases and steps built from events (and the areas they are read with), `loads` the
services' load counters. Every function takes the session, then keyword-only arguments; the
caller owns the transaction.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

Session = AsyncSession
"""The session every store function takes (the API's and the workers' annotations)."""

Sessionmaker = async_sessionmaker[AsyncSession]
