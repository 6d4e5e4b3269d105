"""Faults lose nothing: PostgreSQL restarted under load, the router killed mid-batch, a
receiver down for a while. The services run as processes against a PostgreSQL of this
test's own, so that it can be stopped and started."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

from shared.embedded_pg import EmbeddedPostgres, free_port
from shared.migrate import upgrade
from tests.factories import case_body, distinct_person
from tests.notifications.receiver import Receiver

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "rk_fault-tests-admin-key-" + "y" * 24
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


class Processes:
    """Services and workers as child processes, on free loopback ports."""

    def __init__(self, database_url: str, **env: str) -> None:
        self.ports = {name: free_port() for name in ("registry", "referrals", "notifications")}
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "RELAIS_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            "RELAIS_ENV": "development",
            "RELAIS_LOG_LEVEL": "WARNING",
            "RELAIS_POLL_INTERVAL_SECONDS": "0.2",
            "RELAIS_DB_POOL_SIZE": "5",
            **{f"{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
            **env,
        }
        self.children: dict[str, subprocess.Popen] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    async def start(self, label: str, module: str, *, ready: str | None = None, **env: str) -> None:
        self.children[label] = subprocess.Popen(
            [sys.executable, "-m", module], cwd=ROOT, env={**self.env, **env}
        )
        if ready is None:
            return
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as client:
            while True:
                assert self.children[label].poll() is None, f"{label} exited"
                try:
                    if (await client.get(self.url(ready) + "/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"{label} not ready"
                await asyncio.sleep(0.1)

    def kill(self, label: str) -> None:
        child = self.children.pop(label)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)

    def stop_all(self) -> None:
        for child in self.children.values():
            child.terminate()
        for child in self.children.values():
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()


@asynccontextmanager
async def own_postgres() -> AsyncIterator[tuple[EmbeddedPostgres, str]]:
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="relais-fault-pg-")), free_port())
    server.start()
    try:
        conn = await asyncpg.connect(server.url())
        await conn.execute("CREATE DATABASE relais")
        await conn.close()
        url = server.url("relais")
        await asyncio.to_thread(upgrade, url)
        yield server, url
    finally:
        server.destroy()


async def _count(url: str, sql: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def _setup_partners(http: httpx.AsyncClient, reg: str) -> tuple[dict, dict]:
    async def partner(name: str) -> dict:
        created = (
            await http.post(f"{reg}/partners", json={"name": name, "kind": "ngo"}, headers=ADMIN)
        ).json()
        key = (
            await http.post(f"{reg}/partners/{created['id']}/api-keys", json={}, headers=ADMIN)
        ).json()
        return {**created, "headers": {"Authorization": f"Bearer {key['key']}"}}

    owner, provider = await partner("ONG Sabou"), await partner("CFP")
    response = await http.post(
        f"{reg}/services",
        json={"service_type": "economic.vocational_training", "name": "CFP", "areas": ["ML"]},
        headers=provider["headers"],
    )
    assert response.status_code == 201
    return owner, provider


def _one_step_case(i: int) -> dict:
    return case_body(
        external_id=f"F-{i}",
        beneficiary=distinct_person(i),
        plan=[{"service_type": "economic.vocational_training", "depends_on": []}],
    )


async def test_postgresql_restarted_under_load_loses_nothing_and_answers_503_meanwhile():
    async with own_postgres() as (server, url):
        hub = Processes(url)
        try:
            await hub.start("registry", "services.registry", ready="registry")
            await hub.start("referrals", "services.referrals", ready="referrals")
            reg = hub.url("registry")
            async with httpx.AsyncClient(timeout=10) as http:
                owner, _provider = await _setup_partners(http, reg)
                created: list[str] = []
                refused: list[httpx.Response] = []
                stop = asyncio.Event()

                async def load(worker: int) -> None:
                    i = 0
                    while not stop.is_set():
                        i += 1
                        try:
                            response = await http.post(
                                f"{reg}/cases",
                                json=_one_step_case(worker * 100_000 + i),
                                headers=owner["headers"],
                            )
                        except httpx.HTTPError:
                            await asyncio.sleep(0.05)
                            continue
                        if response.status_code == 201:
                            created.append(response.json()["id"])
                        else:
                            refused.append(response)
                        await asyncio.sleep(0.01)

                loaders = [asyncio.create_task(load(w)) for w in range(3)]
                await asyncio.sleep(2.0)
                before_restart = len(created)
                await asyncio.to_thread(server.stop, mode="immediate")
                await asyncio.sleep(2.0)
                await asyncio.to_thread(server.start)
                restarted_at = time.monotonic()
                # The services recover by themselves: new cases are accepted again.
                while len(created) < before_restart + 20:
                    assert time.monotonic() - restarted_at < 20, "the registry did not recover"
                    await asyncio.sleep(0.1)
                stop.set()
                await asyncio.gather(*loaders)

            assert refused, "the outage was not noticed: the test proves nothing"
            for response in refused:
                assert response.status_code == 503, response.text
                assert response.headers["content-type"] == "application/problem+json"
                assert response.headers.get("retry-after")
            # Every case answered 201 was committed, with its event, and got its referral.
            ids = ", ".join(f"'{i}'" for i in created)
            assert await _count(
                url, f"SELECT count(*) FROM registry.cases WHERE id IN ({ids})"
            ) == len(created)
            assert await _count(
                url, "SELECT count(*) FROM hub.events WHERE type = 'case.created'"
            ) == await _count(url, "SELECT count(*) FROM registry.cases")
            deadline = time.monotonic() + 30
            while await _count(url, "SELECT count(*) FROM referrals.referrals") < await _count(
                url, "SELECT count(*) FROM registry.plan_steps"
            ):
                assert time.monotonic() < deadline, "steps left unrouted after the restart"
                await asyncio.sleep(0.2)
            assert (
                await _count(
                    url,
                    "SELECT count(*) FROM (SELECT step_id FROM referrals.referrals "
                    "GROUP BY step_id HAVING count(*) > 1) AS twice",
                )
                == 0
            )
        finally:
            hub.stop_all()


async def test_the_router_killed_mid_batch_routes_every_step_exactly_once():
    async with own_postgres() as (_server, url):
        hub = Processes(url, RELAIS_RUN_WORKERS="false")
        try:
            await hub.start("registry", "services.registry", ready="registry")
            reg = hub.url("registry")
            async with httpx.AsyncClient(timeout=10) as http:
                owner, _provider = await _setup_partners(http, reg)
                for start in range(0, 300, 30):
                    responses = await asyncio.gather(
                        *(
                            http.post(
                                f"{reg}/cases", json=_one_step_case(i), headers=owner["headers"]
                            )
                            for i in range(start, start + 30)
                        )
                    )
                    assert all(r.status_code == 201 for r in responses)
            await hub.start("router", "services.referrals.worker")
            deadline = time.monotonic() + 60
            while await _count(url, "SELECT count(*) FROM referrals.referrals") < 30:
                assert time.monotonic() < deadline, "the router made no progress"
                await asyncio.sleep(0.01)
            hub.kill("router")
            at_kill = await _count(url, "SELECT count(*) FROM referrals.referrals")
            assert at_kill < 300, "the kill came too late to prove anything"
            await hub.start("router", "services.referrals.worker")
            deadline = time.monotonic() + 60
            while await _count(url, "SELECT count(*) FROM referrals.referrals") < 300:
                assert time.monotonic() < deadline, "steps lost after the router was killed"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            assert await _count(url, "SELECT count(*) FROM referrals.referrals") == 300
            assert (
                await _count(url, "SELECT count(DISTINCT step_id) FROM referrals.referrals") == 300
            )
            created_events = await _count(
                url, "SELECT count(*) FROM hub.events WHERE type = 'referral.created'"
            )
            assert created_events == 300
        finally:
            hub.stop_all()


async def test_a_receiver_down_for_a_while_gets_everything_once_it_is_up():
    async with own_postgres() as (_server, url):
        hub = Processes(url, WEBHOOK_RETRY_SCHEDULE="0.5,1,1,2,2,4,4")
        receiver = Receiver()
        try:
            await hub.start("registry", "services.registry", ready="registry")
            await hub.start("notifications", "services.notifications", ready="notifications")
            reg, notif = hub.url("registry"), hub.url("notifications")
            async with httpx.AsyncClient(timeout=10) as http:
                owner, _provider = await _setup_partners(http, reg)
                endpoint = await http.post(
                    f"{notif}/endpoints",
                    json={"url": receiver.url, "event_types": ["case.*"]},
                    headers=owner["headers"],
                )
                assert endpoint.status_code == 201
                for i in range(20):  # the receiver is not even listening yet
                    assert (
                        await http.post(
                            f"{reg}/cases", json=_one_step_case(i), headers=owner["headers"]
                        )
                    ).status_code == 201
                await asyncio.sleep(2.0)
                failed_attempts = await _count(
                    url, "SELECT count(*) FROM notifications.attempts WHERE status_code IS NULL"
                )
                assert failed_attempts >= 20
                await receiver.start()
                deadline = time.monotonic() + 40
                while len({r.headers["webhook-id"] for r in receiver.requests}) < 20:
                    assert time.monotonic() < deadline, (
                        "not everything arrived once the receiver was up"
                    )
                    await asyncio.sleep(0.1)
            # The receiver has them all; the dispatcher records each answer just after.
            unsettled = "SELECT count(*) FROM notifications.deliveries WHERE status <> 'succeeded'"
            deadline = time.monotonic() + 10
            while await _count(url, unsettled):
                assert time.monotonic() < deadline, "deliveries not recorded as succeeded"
                await asyncio.sleep(0.1)
            assert await _count(url, "SELECT count(*) FROM notifications.deliveries") == 20
        finally:
            hub.stop_all()
            await receiver.stop()
