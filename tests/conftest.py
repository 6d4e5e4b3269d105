"""Fixtures: a real PostgreSQL, one fresh database per test, apps and their clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from shared.settings import Settings
from tests import pg


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    with pg.postgres_server() as (url, origin):
        print(f"\nPostgreSQL for the tests: {origin}")
        yield url


@pytest.fixture(scope="session")
def template_database(pg_server: str) -> Iterator[str]:
    name = pg.create_template(pg_server)
    yield name
    pg.drop_database(pg_server, name)


@pytest.fixture
def database_url(pg_server: str, template_database: str) -> Iterator[str]:
    """A migrated database of this test's own, dropped afterwards."""
    name = pg.clone_database(pg_server, template_database)
    yield pg.with_database(pg_server, name)
    pg.drop_database(pg_server, name)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        env="development",
        run_workers=False,
        log_level="WARNING",
        poll_interval_seconds=0.5,
        gc_freeze=False,
    )


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan started, and an HTTP client bound to it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
def run_app() -> Callable[[FastAPI], object]:
    return running
