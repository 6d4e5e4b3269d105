"""Applying the one Alembic history, and knowing which revision this code expects."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from shared.db import Connection

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url:
        config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the database to `revision` (blocking; run it outside an event loop)."""
    command.upgrade(alembic_config(database_url), revision)


@lru_cache(maxsize=1)
def code_revisions() -> tuple[str, frozenset[str]]:
    """This code's head revision and every revision it knows."""
    script = ScriptDirectory.from_config(alembic_config())
    heads = script.get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"the migration history must have one head, not {heads}")
    return heads[0], frozenset(rev.revision for rev in script.walk_revisions())


async def schema_status(conn: Connection) -> tuple[bool, str | None]:
    """(ready, database revision): ready at this code's head or at a revision it does not
    know, which is a later one during a rolling upgrade."""
    exists = await conn.fetchval("SELECT to_regclass('hub.alembic_version') IS NOT NULL")
    if not exists:
        return False, None
    current = await conn.fetchval("SELECT version_num FROM hub.alembic_version")
    head, known = code_revisions()
    if current is None:
        return False, None
    return current == head or current not in known, current
