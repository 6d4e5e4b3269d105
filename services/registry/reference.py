"""Reference data: areas and service types (parsing, validation, loading)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession


async def load_seed_data(session: AsyncSession) -> None:
    """Load the project's copies of the areas and service types, idempotently."""
    return None
