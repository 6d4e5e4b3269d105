"""Fixtures of the shared package's tests: the process's Database, as the services open it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.db import Database
from shared.settings import Settings


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    """The asyncpg pool of this test's database, closed afterwards."""
    database = await Database.connect(settings)
    try:
        yield database
    finally:
        await database.close()
