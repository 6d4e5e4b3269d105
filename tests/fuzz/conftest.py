"""The hub for the fuzz tests: all three services with their workers, started where
schemathesis calls them, and seeded with one of each resource so that generated path
parameters can also name things that exist (and stateful runs have lists to start from).

Schemathesis (4.x) calls an ASGI app on its own event-loop thread and runs the app's
lifespan there itself, and its pytest plugin ends every lifespan it started when a test
item tears down. asyncpg connections belong to the loop that opened them, so the lifespan
(engine, listener, workers) must run on that thread too: `tests.conftest.running`, which
runs it on the test's own loop, cannot be shared with schemathesis. The hub is therefore
started through schemathesis's ASGI client, seeded through it over HTTP, and lives for
one test item, on that item's fresh database (the `settings` fixture).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from schemathesis.python import asgi

from services.notifications.app import create_app as notifications_app
from services.referrals.app import create_app as referrals_app
from services.registry.app import create_app as registry_app
from shared.settings import Settings
from tests.factories import bearer, case_body
from tests.hub import served_over_http

# Registered by the registry at start-up (RELAIS_BOOTSTRAP_ADMIN_KEY), so no test code has
# to open a database session on schemathesis's event loop.
ADMIN_KEY = "rk_fuzz_admin_" + "0" * 40
# Connection refused at once: deliveries to it fail fast and stay retryable.
DEAD_TARGET = "http://127.0.0.1:9/relais-fuzz"


@dataclass
class FuzzHub:
    """The running hub: its apps, the fuzzing keys and the ids of what was seeded."""

    apps: dict[str, FastAPI]
    keys: dict[str, str]
    # schemathesis's ASGI clients (requests sessions) of the three apps, by service name.
    clients: dict[str, Any] = field(default_factory=dict)
    # Consistent groups of existing values by parameter name, e.g. a case with one of its
    # steps: a generated request may take one group in place of its random values.
    existing: list[dict[str, str]] = field(default_factory=list)
    # The ids of the keys that fuzz: a fuzzed `DELETE /api-keys/{key_id}` must not revoke
    # them, or every later request of the run would answer 401.
    fuzzing_key_ids: set[str] = field(default_factory=set)
    # The endpoint whose deliveries were seeded.
    seeded_endpoint_id: str = ""

    def add(self, **values: str) -> None:
        self.existing.append(values)


def _ok(response: Any, status: int = 200) -> dict:
    assert response.status_code == status, (response.request.url, response.text)
    return response.json() if response.content else {}


def _eventually(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll `check` until it returns something truthy (the workers run on another thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"seeding: {what} not reached in {timeout} s")


def _seed(clients: dict[str, Any], hub: FuzzHub) -> None:
    registry, referrals, notifications = (
        clients["registry"],
        clients["referrals"],
        clients["notifications"],
    )
    admin = bearer(ADMIN_KEY)

    def partner(name: str, kind: str) -> tuple[dict, dict]:
        body = {
            "name": name,
            "acronym": name[:8].upper(),
            "kind": kind,
            "contact_email": "contact@example.org",
            "contact_phone": "+22320202020",
        }
        created = _ok(registry.post("/partners", json=body, headers=admin), 201)
        key = _ok(
            registry.post(
                f"/partners/{created['id']}/api-keys", json={"name": "fuzz"}, headers=admin
            ),
            201,
        )
        return created, key

    # A: the partner whose key fuzzes; it owns a case routed to B and is the assignee of
    # B's case, so both the owner's and the assignee's views are reachable with its key.
    owner, fuzzing_key = partner("ONG Sabou", "ngo")
    other, other_api_key = partner("Agence nationale pour l'emploi", "government")
    owner_key, other_key = fuzzing_key["key"], other_api_key["key"]
    hub.keys["partner"] = owner_key
    hub.fuzzing_key_ids.add(fuzzing_key["id"])
    hub.add(partner_id=owner["id"])
    hub.add(partner_id=other["id"])
    # The HSDS view names partners as organizations, and the taxonomy and its terms by uuid.
    hub.add(organization_id=owner["id"])
    hub.add(organization_id=other["id"])
    taxonomies = _ok(registry.get("/hsds/taxonomies", headers=admin))["contents"]
    hub.add(taxonomy_id=taxonomies[0]["id"])
    for term in _ok(registry.get("/hsds/taxonomy_terms?per_page=3", headers=admin))["contents"]:
        hub.add(term_id=term["id"])
    # Keys a fuzzed DELETE /api-keys/{key_id} may revoke: never the key that fuzzes.
    spare = _ok(
        registry.post(f"/partners/{owner['id']}/api-keys", json={"name": "spare"}, headers=admin),
        201,
    )
    hub.add(key_id=spare["id"])
    other_keys = _ok(registry.get(f"/partners/{other['id']}/api-keys", headers=admin))
    hub.add(key_id=other_keys["items"][0]["id"])
    # The admin key that fuzzes (the start-up key): a fuzzed revocation must spare it too,
    # once a fuzzed POST /admin-keys made it no longer the last active admin key.
    [admin_key] = _ok(registry.get("/admin-keys", headers=admin))["items"]
    hub.fuzzing_key_ids.add(admin_key["id"])
    for code in ("ML", "ML-BKO", "ML-BKO-03"):
        hub.add(code=code, area=code)

    services = [
        (owner_key, "psychosocial.individual_counselling", ["ML-BKO"]),
        (other_key, "economic.vocational_training", ["ML"]),
        (other_key, "economic.microbusiness", ["ML"]),
    ]
    for key, service_type, areas in services:
        body = {
            "service_type": service_type,
            "name": f"Fuzz {service_type}",
            "areas": areas,
            "capacity": 10,
            "response_hours": 72,
        }
        service = _ok(registry.post("/services", json=body, headers=bearer(key)), 201)
        hub.add(service_id=service["id"], service_type=service_type)

    plan_to_other = [
        {"service_type": "economic.vocational_training", "depends_on": []},
        {"service_type": "economic.microbusiness"},
        {"service_type": "social.housing", "delivery": "direct", "depends_on": []},
        # No partner offers it: the router leaves an unassigned referral for the admins.
        {"service_type": "social.legal", "depends_on": []},
    ]
    cases = [
        (owner_key, case_body(external_id="FUZZ-A-1", plan=plan_to_other)),
        # Same identity document as FUZZ-A-1: a duplicate pair of one owner (mergeable).
        (owner_key, case_body(external_id="FUZZ-A-2", plan=[])),
        (
            other_key,
            case_body(
                external_id="FUZZ-B-1",
                beneficiary={
                    "given_name": "Moussa",
                    "family_name": "Keïta",
                    "sex": "male",
                    "birth_year": 1990,
                    "id_documents": [{"type": "national_id", "number": "NI00000042"}],
                },
                plan=[{"service_type": "psychosocial.individual_counselling"}],
            ),
        ),
        # No consent: its step waits (`no_consent`).
        (
            owner_key,
            case_body(
                external_id="FUZZ-A-3",
                beneficiary={"given_name": "Awa", "family_name": "Diarra", "sex": "female"},
                consent={"referral": "withdrawn"},
                plan=[{"service_type": "economic.vocational_training"}],
            ),
        ),
    ]
    for key, body in cases:
        case = _ok(registry.post("/cases", json=body, headers=bearer(key)), 201)
        hub.add(case_id=case["id"], external_id=case["external_id"])
        for step in case["plan"]:
            hub.add(case_id=case["id"], step_id=step["id"])

    def referrals_routed() -> list[dict]:
        items = _ok(referrals.get("/referrals?limit=50", headers=admin))["items"]
        statuses = sorted(item["status"] for item in items)
        return items if statuses.count("requested") >= 2 and "unassigned" in statuses else []

    for referral in _eventually(referrals_routed, "referrals routed"):
        hub.add(referral_id=referral["id"], case_id=referral["case_id"])
        # The FHIR view: the referral as a Task, its step as a ServiceRequest.
        hub.add(task_id=referral["id"], request_id=referral["step_id"])

    def duplicate_found() -> list[dict]:
        return _ok(registry.get("/duplicates", headers=admin))["items"]

    for duplicate in _eventually(duplicate_found, "a duplicate pair"):
        hub.add(duplicate_id=duplicate["id"])

    endpoint = _ok(
        notifications.post(
            "/endpoints",
            json={"url": DEAD_TARGET, "event_types": ["*"], "description": "fuzz"},
            headers=bearer(owner_key),
        ),
        201,
    )
    hub.add(endpoint_id=endpoint["id"])
    hub.seeded_endpoint_id = endpoint["id"]
    notifications.post(f"/endpoints/{endpoint['id']}/test", headers=bearer(owner_key))

    def delivery_made() -> list[dict]:
        return _ok(notifications.get("/deliveries", headers=admin))["items"]

    for delivery in _eventually(delivery_made, "a delivery")[:2]:
        hub.add(delivery_id=delivery["id"], endpoint_id=delivery["endpoint_id"])


@contextmanager
def started_hub(settings: Settings, *, workers: bool) -> Iterator[FuzzHub]:
    """The three apps on `settings`' database, their lifespans started on schemathesis's
    event loop (entering its client starts a lifespan; leaving it does not end it)."""
    settings = settings.model_copy(
        update={
            "run_workers": workers,
            "poll_interval_seconds": 0.2,
            "bootstrap_admin_key": ADMIN_KEY,
            "webhook_timeout_seconds": 1.0,
            "log_level": "ERROR",
        }
    )
    try:
        with ExitStack() as stack:
            # The registry's subject access export asks the notifications service over HTTP:
            # an instance of it (without workers) on a loopback port of its own.
            settings = settings.model_copy(
                update={
                    "notifications_url": stack.enter_context(
                        served_over_http(
                            notifications_app(settings.model_copy(update={"run_workers": False}))
                        )
                    )
                }
            )
            apps = {
                "registry": registry_app(settings),
                "referrals": referrals_app(settings),
                "notifications": notifications_app(settings),
            }
            hub = FuzzHub(apps=apps, keys={"admin": ADMIN_KEY})
            # The registry first: its start-up registers the admin key.
            for name, app in apps.items():
                hub.clients[name] = stack.enter_context(asgi.get_client(app))
            yield hub
    finally:
        # The schemathesis plugin also ends every lifespan when a test item tears down;
        # ending them here as well stops the workers before the database is dropped,
        # whatever order the teardown hooks run in.
        asgi.shutdown_lifespans()


@pytest.fixture
def fuzz_hub(settings: Settings) -> Iterator[FuzzHub]:
    """The three services with their workers on this test's database, seeded."""
    with started_hub(settings, workers=True) as hub:
        _seed(hub.clients, hub)
        yield hub


@pytest.fixture
def quiet_hub(settings: Settings) -> Iterator[FuzzHub]:
    """The three services without workers or data: enough to replay one request."""
    with started_hub(settings, workers=False) as hub:
        yield hub
