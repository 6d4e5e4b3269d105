"""End-to-end fixtures: no launcher outlives its test; the three services as processes on one
database, shared by a module's tests (`hub_processes`)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator

import pytest

from tests import pg
from tests.e2e.processes import LAUNCHERS, SERVICES, Services


@pytest.fixture(autouse=True)
def no_launcher_outlives_its_test() -> Iterator[None]:
    """A test that fails half-way still ends its launchers (which end their processes)."""
    yield
    while LAUNCHERS:
        launcher = LAUNCHERS.pop()
        if launcher.poll() is None:
            launcher.terminate()
            try:
                launcher.wait(timeout=30)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()


@pytest.fixture(scope="module")
def hub_database(pg_server: str, template_database: str) -> Iterator[str]:
    name = pg.clone_database(pg_server, template_database)
    yield pg.with_database(pg_server, name)
    pg.drop_database(pg_server, name)


@pytest.fixture(scope="module")
def hub_processes(hub_database: str) -> Iterator[Services]:
    services = Services(hub_database)
    try:
        for name in SERVICES:
            asyncio.run(services.start(name))
        yield services
    finally:
        services.stop_all()


RETENTION_DAYS = 30


@pytest.fixture(scope="module")
def retention_processes(hub_database: str) -> Iterator[Services]:
    """The three services as processes, with `RELAIS_RETENTION_DAYS=30`: the retention
    worker runs in the registry at start, then once an hour (a restart runs it again)."""
    services = Services(
        hub_database,
        RELAIS_RETENTION_DAYS=str(RETENTION_DAYS),
        RELAIS_RETENTION_INTERVAL_SECONDS="3600",
    )
    try:
        for name in SERVICES:
            asyncio.run(services.start(name))
        yield services
    finally:
        services.stop_all()
