"""Tenancy (SPEC 7 and 9): two partners and an admin walk every registry endpoint.

The table `ROUTES` names, for every path and method of the registry's OpenAPI document, what
each of three callers gets when the resources in the path belong to partner A: A itself (the
owner), partner B (the other) and an admin. A route added later without a row here fails
`test_every_route_of_the_openapi_document_is_in_the_table`.

Whenever B is refused, nothing is written anywhere (every registry table and the event log
are fingerprinted before and after); whatever B is answered, A's rows stay as they were and
no answer to B outside the directory carries an id, reference or key prefix of A's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

from sqlalchemy import text

from services.registry.app import create_app
from shared.db import Statement
from shared.settings import Settings
from tests.factories import bearer, case_body, make_partner_key
from tests.registry.helpers import PROBLEM, assert_problem, database_fingerprint

Status = int | tuple[int, ...] | None
World = SimpleNamespace
Body = Callable[[World, str], Any]


@dataclass(frozen=True)
class Route:
    """What each caller gets on this route when the path names partner A's resources.

    `other` is partner B's key, `owner` partner A's, `admin` an admin key; None skips the
    caller. `access` says what the route is: `public` (no key), `directory` (every key
    reads), `admin` (admin keys only), `owned` (the owner and admins; any other partner gets
    404) or `own-rows` (each caller acts on its own rows)."""

    access: str
    other: Status
    owner: Status
    admin: Status
    args: dict[str, str] = field(default_factory=dict)
    body: Body | None = None
    upload: bool = False


def _new_case(world: World, who: str, external_id: str | None = None) -> dict:
    body = case_body(external_id=external_id or f"NEW-{who}")
    if who in ("admin", "other"):
        # An admin names the owner; B tries to create a case in A's name.
        body["owner_partner_id"] = world.a["id"]
    return body


def _upsert_body(world: World, who: str) -> dict:
    body = _new_case(world, who)
    body.pop("external_id")
    body["beneficiary"] = {**body["beneficiary"], "household_size": 7}
    if who == "other":
        body.pop("owner_partner_id")  # B upserts with its own key: a case of its own
    else:
        body.pop("plan")  # A's plan changes only through the steps actions
    return body


def _service_body(world: World, who: str) -> dict:
    body = {"service_type": "immediate.cash", "name": f"Cash ({who})", "areas": ["ML-1"]}
    if who in ("admin", "other"):
        body["partner_id"] = world.a["id"]
    return body


ROUTES: dict[tuple[str, str], Route] = {
    # --- partners and keys
    ("POST", "/partners"): Route(
        "admin", 403, 403, 201, body=lambda w, who: {"name": f"New {who}", "kind": "ngo"}
    ),
    ("GET", "/partners"): Route("directory", 200, 200, 200),
    ("GET", "/partners/{partner_id}"): Route("directory", 200, 200, 200),
    ("PATCH", "/partners/{partner_id}"): Route(
        "owned", 404, 200, 200, body=lambda w, who: {"contact_email": f"{who}@example.org"}
    ),
    ("POST", "/partners/{partner_id}/api-keys"): Route(
        "admin", 403, 403, 201, body=lambda w, who: {"name": f"key of {who}"}
    ),
    ("GET", "/partners/{partner_id}/api-keys"): Route("owned", 404, 200, 200),
    ("POST", "/admin-keys"): Route(
        "admin", 403, 403, 201, body=lambda w, who: {"name": f"admin key of {who}"}
    ),
    ("GET", "/admin-keys"): Route("admin", 403, 403, 200),
    ("DELETE", "/api-keys/{key_id}"): Route("owned", 404, 204, 204),
    # --- reference data
    ("GET", "/areas"): Route("directory", 200, 200, 200),
    ("GET", "/areas/{code}"): Route("directory", 200, 200, 200),
    ("POST", "/areas/import"): Route("admin", 403, 403, 200, upload=True),
    ("GET", "/service-types"): Route("directory", 200, 200, 200),
    ("POST", "/service-types"): Route(
        "admin",
        403,
        403,
        201,
        body=lambda w, who: {"code": "social.tenancy_test", "name": "T", "dimension": "social"},
    ),
    # --- the service directory
    ("POST", "/services"): Route("own-rows", 403, 201, 201, body=_service_body),
    ("GET", "/services"): Route("directory", 200, 200, 200),
    ("GET", "/services/{service_id}"): Route("directory", 200, 200, 200),
    ("PATCH", "/services/{service_id}"): Route(
        "owned", (403, 404), 200, 200, body=lambda w, who: {"name": f"Renamed by {who}"}
    ),
    # --- cases
    ("POST", "/cases"): Route("own-rows", 403, 201, 201, body=_new_case),
    ("GET", "/cases"): Route("own-rows", 200, 200, 200),
    ("PUT", "/cases/by-external-id/{external_id}"): Route(
        "own-rows", 201, 200, 200, body=_upsert_body
    ),
    ("GET", "/cases/{case_id}"): Route("owned", 404, 200, 200),
    ("PATCH", "/cases/{case_id}"): Route(
        "owned", 404, 200, 200, body=lambda w, who: {"vulnerabilities": [f"tag_{who}"]}
    ),
    ("POST", "/cases/{case_id}/consent"): Route(
        "owned", 404, 200, 200, body=lambda w, who: {"referral": "granted", "method": "verbal"}
    ),
    ("POST", "/cases/{case_id}/steps"): Route(
        "owned",
        404,
        201,
        201,
        body=lambda w, who: {"steps": [{"service_type": "immediate.cash", "depends_on": []}]},
    ),
    ("POST", "/cases/{case_id}/steps/{step_id}/cancel"): Route(
        "owned", 404, 200, None, args={"step_id": "referral_step_id"}
    ),
    ("POST", "/cases/{case_id}/steps/{step_id}/complete"): Route(
        "owned", 404, 200, None, args={"step_id": "direct_step_id"}
    ),
    ("POST", "/cases/{case_id}/close"): Route(
        "owned", 404, 200, None, body=lambda w, who: {"reason": "left_area"}
    ),
    ("POST", "/cases/{case_id}/reopen"): Route("owned", 404, 200, None),
    # --- duplicates and the access log (admin only)
    ("GET", "/duplicates"): Route("admin", 403, 403, 200),
    ("POST", "/duplicates/{duplicate_id}/dismiss"): Route(
        "admin", 403, 403, 200, args={"duplicate_id": "pair_a_b"}
    ),
    ("POST", "/duplicates/{duplicate_id}/link"): Route(
        "admin", 403, 403, 200, args={"duplicate_id": "pair_a2_b"}
    ),
    ("POST", "/duplicates/{duplicate_id}/merge"): Route(
        "admin",
        403,
        403,
        200,
        args={"duplicate_id": "pair_a_a2"},
        body=lambda w, who: {"keep_case_id": w.case_a["id"]},
    ),
    ("GET", "/access-log"): Route("admin", 403, 403, 200),
    # --- erasure (admin only; final: A's second case, merged away above, is erased)
    ("POST", "/cases/{case_id}/erase"): Route(
        "admin",
        403,
        403,
        200,
        args={"case_id": "case_a2_id"},
        body=lambda w, who: {"reason": f"erased by {who}"},
    ),
    # --- subject access and retention (admin only). The admin's export also asks the
    # notifications service, which this registry runs without: tests/registry/
    # test_subject_access.py walks it.
    ("GET", "/cases/{case_id}/export"): Route("admin", 403, 403, None),
    ("GET", "/retention/preview"): Route("admin", 403, 403, 200),
    # --- the directory as HSDS 3.0 (every key reads it; nothing is a location)
    ("GET", "/hsds/"): Route("directory", 200, 200, 200),
    ("GET", "/hsds/services"): Route("directory", 200, 200, 200),
    ("GET", "/hsds/services/{service_id}"): Route("directory", 200, 200, 200),
    ("GET", "/hsds/organizations"): Route("directory", 200, 200, 200),
    ("GET", "/hsds/organizations/{organization_id}"): Route("directory", 200, 200, 200),
    ("GET", "/hsds/taxonomies"): Route("directory", 200, 200, 200),
    ("GET", "/hsds/taxonomies/{taxonomy_id}"): Route("directory", 200, 200, 200),
    ("GET", "/hsds/taxonomy_terms"): Route("directory", 200, 200, 200),
    ("GET", "/hsds/taxonomy_terms/{term_id}"): Route("directory", 200, 200, 200),
    ("GET", "/hsds/service_at_locations"): Route("directory", 200, 200, 200),
    # --- probes, open to all
    ("GET", "/healthz"): Route("public", 200, 200, 200),
    ("GET", "/readyz"): Route("public", 200, 200, 200),
    ("GET", "/metrics"): Route("public", 200, 200, 200),
}


def openapi_routes(app) -> set[tuple[str, str]]:
    document = app.openapi()
    return {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in {"get", "post", "put", "patch", "delete"}
    }


# --- The world (tests/registry/conftest.py): two partners with keys, services and cases --


async def a_state(world: World) -> list:
    """Every row that belongs to partner A (its keys without `last_used_at`)."""
    query = text(
        """
        SELECT 'partner', to_jsonb(p)::text FROM registry.partners p WHERE id = :a
        UNION ALL SELECT 'service', to_jsonb(s)::text FROM registry.services s
                  WHERE partner_id = :a
        UNION ALL SELECT 'case', to_jsonb(c)::text FROM registry.cases c
                  WHERE owner_partner_id = :a
        UNION ALL SELECT 'step', to_jsonb(st)::text FROM registry.plan_steps st
                  JOIN registry.cases c ON c.id = st.case_id WHERE c.owner_partner_id = :a
        UNION ALL SELECT 'key', concat_ws(',', id, revoked_at, partner_active)
                  FROM hub.api_keys WHERE partner_id = :a
        ORDER BY 1, 2
        """
    )
    async with world.app.state.db.connection() as conn:
        return [tuple(r) for r in await Statement(query).fetch(conn, a=world.a["id"])]


async def a_secrets(world: World) -> set[str]:
    """What must never reach B outside the directory: A's case ids, references, external
    ids, step ids, and A's key ids and prefixes."""
    query = text(
        """
        SELECT id::text FROM registry.cases WHERE owner_partner_id = :a
        UNION SELECT reference FROM registry.cases WHERE owner_partner_id = :a
        UNION SELECT external_id FROM registry.cases WHERE owner_partner_id = :a
        UNION SELECT st.id::text FROM registry.plan_steps st
              JOIN registry.cases c ON c.id = st.case_id WHERE c.owner_partner_id = :a
        UNION SELECT id::text FROM hub.api_keys WHERE partner_id = :a
        UNION SELECT prefix FROM hub.api_keys WHERE partner_id = :a
        """
    )
    async with world.app.state.db.connection() as conn:
        rows = [r[0] for r in await Statement(query).fetch(conn, a=world.a["id"])]
        return {r for r in rows if r}


def _expects(status: Status) -> tuple[int, ...]:
    assert status is not None
    return status if isinstance(status, tuple) else (status,)


async def call(world: World, method: str, path: str, route: Route, who: str):
    args = {**world.args, **{k: getattr(world, v) for k, v in route.args.items()}}
    url = path.format(**args)
    headers = {} if route.access == "public" else bearer(world.keys[who])
    kwargs: dict[str, Any] = {}
    if route.upload:
        csv = "code,name,level,parent_code\nML-1-90,Test,cercle,ML-1\n"
        kwargs["files"] = {"file": ("areas.csv", csv.encode(), "text/csv")}
        kwargs["data"] = {"code_list_version": "tenancy-test"}
    elif route.body is not None:
        kwargs["json"] = route.body(world, who)
    return await world.client.request(method, url, headers=headers, **kwargs)


# --- Tests ----------------------------------------------------------------------------


def test_every_route_of_the_openapi_document_is_in_the_table():
    app = create_app(Settings(database_url="postgresql://unused@localhost/unused"))
    served = openapi_routes(app)
    assert served, "the OpenAPI document lists no route"
    missing = sorted(served - ROUTES.keys())
    assert not missing, f"routes without a tenancy row in ROUTES: {missing}"
    stale = sorted(ROUTES.keys() - served)
    assert not stale, f"rows of ROUTES the app does not serve: {stale}"


async def test_every_route_with_each_key_keeps_partners_apart(world):
    """B on A's resources, then A, then the admin, on every route in table order."""
    assert openapi_routes(world.app) == ROUTES.keys()
    walked: list[str] = []
    for (method, path), route in ROUTES.items():
        label = f"{method} {path}"
        # 1. Partner B, on A's resources.
        before_a = await a_state(world)
        before_all = await database_fingerprint(world.app)
        secrets = await a_secrets(world)
        response = await call(world, method, path, route, "other")
        assert response.status_code in _expects(route.other), (label, response.text)
        assert await a_state(world) == before_a, f"{label}: B changed A's rows"
        if response.status_code >= 400:
            assert response.headers["content-type"] == PROBLEM, label
            assert await database_fingerprint(world.app) == before_all, f"{label}: B wrote"
        if route.access not in ("directory", "public"):
            # What B itself sent (an id in the path, say) may be echoed; nothing else of A's.
            sent = str(response.request.url) + response.request.read().decode(errors="replace")
            leaked = {s for s in secrets if s in response.text and s not in sent}
            assert not leaked, f"{label}: B was shown A's {leaked}"
        if method == "PUT":
            created = response.json()
            assert created["owner_partner_id"] == world.b["id"], label
            assert created["id"] != world.case_a["id"], label
        # 2. Partner A, the owner (or, on admin routes, a partner like any other).
        before_all = await database_fingerprint(world.app)
        response = await call(world, method, path, route, "owner")
        assert response.status_code in _expects(route.owner), (label, response.text)
        if response.status_code >= 400:
            assert response.headers["content-type"] == PROBLEM, label
            assert await database_fingerprint(world.app) == before_all, f"{label}: A wrote"
        # 3. The admin.
        if route.admin is not None:
            response = await call(world, method, path, route, "admin")
            assert response.status_code in _expects(route.admin), (label, response.text)
        walked.append(label)
    assert len(walked) == len(ROUTES)


async def test_lists_hold_only_the_callers_rows(world):
    client = world.client
    mine_a = {world.case_a["id"], world.case_a2["id"]}
    queries = ["", "?status=open", "?area=ML", "?updated_since=2000-01-01T00:00:00Z"]
    for query in queries:
        for key, expected in ((world.key_a, mine_a), (world.key_b, {world.case_b["id"]})):
            # Page by page, one case a page: no page and no cursor leaks another's case.
            seen: list[str] = []
            cursor = None
            while True:
                sep = "&" if "?" in query else "?"
                url = f"/cases{query}{sep}limit=1" + (f"&cursor={cursor}" if cursor else "")
                page = await client.get(url, headers=bearer(key))
                assert page.status_code == 200, page.text
                seen += [c["id"] for c in page.json()["items"]]
                cursor = page.json()["next_cursor"]
                if cursor is None:
                    break
            assert set(seen) == expected and len(seen) == len(expected), query
        admin = await client.get(f"/cases{query}", headers=bearer(world.admin))
        assert {c["id"] for c in admin.json()["items"]} == mine_a | {world.case_b["id"]}
    # Another partner's cursor is only a position: B following A's cursor sees B's rows.
    page = await client.get("/cases?limit=1", headers=bearer(world.key_a))
    cursor = page.json()["next_cursor"]
    assert cursor
    followed = await client.get(f"/cases?cursor={cursor}", headers=bearer(world.key_b))
    assert {c["owner_partner_id"] for c in followed.json()["items"]} <= {world.b["id"]}

    for side, other in (("a", "b"), ("b", "a")):
        partner, key = getattr(world, side), getattr(world, f"key_{side}")
        own = await client.get(f"/partners/{partner['id']}/api-keys", headers=bearer(key))
        assert own.status_code == 200, own.text
        items = own.json()["items"]
        assert {k["partner_id"] for k in items} == {partner["id"]}
        assert {k["id"] for k in items} == {
            getattr(world, f"key_{side}_row")["id"],
            getattr(world, f"spare_{side}")["id"],
        }
        assert all("key" not in k and "key_hash" not in k for k in items)
        theirs = await client.get(
            f"/partners/{getattr(world, other)['id']}/api-keys", headers=bearer(key)
        )
        assert_problem(theirs, 404)
        assert getattr(world, f"spare_{other}")["id"] not in theirs.text


async def test_another_partners_case_is_not_found_on_every_case_route(world):
    """404 exactly like a case that does not exist: B cannot even learn that it exists."""
    client, case_id = world.client, world.case_a["id"]
    step_id = world.case_a["plan"][0]["id"]
    case_routes = [
        (method, path)
        for (method, path), route in ROUTES.items()
        if path.startswith("/cases/{case_id}") and route.access == "owned"
    ]
    assert len(case_routes) == 8
    # The admins' routes on a case refuse B alike whether the case exists or not.
    admin_routes = [
        (method, path)
        for (method, path), route in ROUTES.items()
        if path.startswith("/cases/{case_id}") and route.access == "admin"
    ]
    assert sorted(admin_routes) == [
        ("GET", "/cases/{case_id}/export"),
        ("POST", "/cases/{case_id}/erase"),
    ]
    for method, path in admin_routes:
        answers = []
        for target in (case_id, str(uuid4())):
            response = await client.request(
                method, path.format(case_id=target), headers=bearer(world.key_b)
            )
            answers.append(assert_problem(response, 403)["detail"])
        assert answers[0] == answers[1], (method, path, answers)
    for method, path in case_routes:
        route = ROUTES[(method, path)]
        body = route.body(world, "owner") if route.body else None
        titles = []
        for target in (case_id, str(uuid4())):
            before = await database_fingerprint(world.app)
            url = path.format(case_id=target, step_id=step_id)
            response = await client.request(method, url, json=body, headers=bearer(world.key_b))
            problem = assert_problem(response, 404)
            titles.append(
                (problem["type"], problem["title"], problem["detail"].replace(target, ""))
            )
            assert await database_fingerprint(world.app) == before, (method, path)
        assert titles[0] == titles[1], (method, path, titles)
    # The owner and the admin read it; A's case is as it was.
    for key in (world.key_a, world.admin):
        read = await client.get(f"/cases/{case_id}", headers=bearer(key))
        assert read.status_code == 200 and read.json()["version"] == world.case_a["version"]


async def test_an_upsert_by_another_partner_creates_its_own_case(world):
    client = world.client
    body = case_body()
    body.pop("external_id")
    before = await a_state(world)
    theirs = await client.put("/cases/by-external-id/EXT-A", json=body, headers=bearer(world.key_b))
    assert theirs.status_code == 201, theirs.text
    assert theirs.json()["id"] != world.case_a["id"]
    assert theirs.json()["owner_partner_id"] == world.b["id"]
    assert theirs.json()["external_id"] == "EXT-A"
    assert await a_state(world) == before
    # Naming A as the owner is refused, and writes nothing.
    fingerprint = await database_fingerprint(world.app)
    for method, url in (("PUT", "/cases/by-external-id/EXT-A"), ("POST", "/cases")):
        as_a = {**body, "owner_partner_id": world.a["id"], "external_id": "EXT-A"}
        if method == "PUT":
            as_a.pop("external_id")
        response = await client.request(method, url, json=as_a, headers=bearer(world.key_b))
        assert_problem(response, 403)
    assert await database_fingerprint(world.app) == fingerprint
    # Each partner's upsert key now names its own case.
    again = await client.put("/cases/by-external-id/EXT-A", json=body, headers=bearer(world.key_b))
    assert again.status_code == 200 and again.json()["id"] == theirs.json()["id"]
    body.pop("plan")  # A's case has a plan of its own, changed only by the steps actions
    own = await client.put("/cases/by-external-id/EXT-A", json=body, headers=bearer(world.key_a))
    assert own.status_code == 200 and own.json()["id"] == world.case_a["id"]


async def test_another_partners_key_cannot_be_listed_or_revoked(world):
    client = world.client
    spare_a, spare_b = world.spare_a, world.spare_b
    before = await database_fingerprint(world.app)
    for key_id in (spare_a["id"], world.key_a_row["id"]):
        assert_problem(await client.delete(f"/api-keys/{key_id}", headers=bearer(world.key_b)), 404)
    assert await database_fingerprint(world.app) == before
    # A's keys still work.
    for key in (world.key_a, spare_a["key"]):
        assert (await client.get("/cases", headers=bearer(key))).status_code == 200
    # A partner cannot revoke an admin key either.
    admin_keys = "SELECT id FROM hub.api_keys WHERE role = 'admin'"
    async with world.app.state.db.connection() as conn:
        [admin_key_id] = [r["id"] for r in await conn.fetch(admin_keys)]
    assert_problem(
        await client.delete(f"/api-keys/{admin_key_id}", headers=bearer(world.key_a)), 404
    )
    assert (await client.get("/duplicates", headers=bearer(world.admin))).status_code == 200
    # B revokes its own spare key: that one stops at once, B's other key goes on.
    assert (
        await client.delete(f"/api-keys/{spare_b['id']}", headers=bearer(world.key_b))
    ).status_code == 204
    assert_problem(await client.get("/cases", headers=bearer(spare_b["key"])), 401)
    assert (await client.get("/cases", headers=bearer(world.key_b))).status_code == 200
    assert (await client.get("/cases", headers=bearer(spare_a["key"]))).status_code == 200


async def test_a_partner_cannot_change_another_partners_service_or_priority(world):
    client, service = world.client, world.service_a
    url = f"/services/{service['id']}"
    before = await database_fingerprint(world.app)
    for body in (
        {"name": "Taken over"},
        {"priority": 1},
        {"status": "inactive"},
        {"areas": ["ML-2"]},
    ):
        for headers in (bearer(world.key_b), {**bearer(world.key_b), "If-Match": '"1"'}):
            assert_problem(await client.patch(url, json=body, headers=headers), (403, 404))
    # Nor add a service in A's name, nor give its own service a priority.
    taken = {
        "partner_id": world.a["id"],
        "service_type": "immediate.cash",
        "name": "X",
        "areas": ["ML"],
    }
    assert_problem(await client.post("/services", json=taken, headers=bearer(world.key_b)), 403)
    own = f"/services/{world.service_b['id']}"
    assert_problem(await client.patch(own, json={"priority": 1}, headers=bearer(world.key_b)), 403)
    assert await database_fingerprint(world.app) == before
    read = await client.get(url, headers=bearer(world.key_b))
    assert read.json() == service


async def test_admin_only_routes_answer_403_to_every_partner_key(world):
    """With a valid request, so that the 403 is the key's role and not the input."""
    admin_routes = [(m, p) for (m, p), r in ROUTES.items() if r.access == "admin"]
    assert {f"{m} {p}" for m, p in admin_routes} >= {
        "POST /partners",
        "POST /partners/{partner_id}/api-keys",
        "POST /admin-keys",
        "GET /admin-keys",
        "POST /areas/import",
        "POST /service-types",
        "GET /duplicates",
        "POST /duplicates/{duplicate_id}/dismiss",
        "POST /duplicates/{duplicate_id}/link",
        "POST /duplicates/{duplicate_id}/merge",
        "GET /access-log",
        "POST /cases/{case_id}/erase",
    }
    before = await database_fingerprint(world.app)
    for method, path in admin_routes:
        route = ROUTES[(method, path)]
        for who in ("owner", "other"):
            for own_partner in (False, True):
                if own_partner and who == "other":
                    world.args["partner_id"] = world.b["id"]  # B's own keys: still admin only
                response = await call(world, method, path, route, who)
                world.args["partner_id"] = world.a["id"]
                problem = assert_problem(response, 403)
                assert problem["type"].endswith("/forbidden"), (method, path)
    assert await database_fingerprint(world.app) == before
    pairs = await world.client.get("/duplicates", headers=bearer(world.admin))
    assert len(pairs.json()["items"]) == 3


async def test_the_directory_is_readable_by_every_key(world):
    client = world.client
    for key in (world.key_a, world.key_b, world.admin):
        partners = await client.get("/partners", headers=bearer(key))
        assert {p["id"] for p in partners.json()["items"]} == {world.a["id"], world.b["id"]}
        services = await client.get("/services", headers=bearer(key))
        assert {s["id"] for s in services.json()["items"]} == {
            world.service_a["id"],
            world.service_b["id"],
        }
        for partner, service in ((world.a, world.service_a), (world.b, world.service_b)):
            one = await client.get(f"/partners/{partner['id']}", headers=bearer(key))
            assert one.status_code == 200 and one.json() == partner
            one = await client.get(f"/services/{service['id']}", headers=bearer(key))
            assert one.status_code == 200 and one.json() == service
            mine = await client.get(f"/services?partner_id={partner['id']}", headers=bearer(key))
            assert [s["id"] for s in mine.json()["items"]] == [service["id"]]
        areas = await client.get("/areas?limit=500", headers=bearer(key))
        assert len(areas.json()["items"]) == 76
        assert (await client.get("/areas/ML-BKO-03", headers=bearer(key))).status_code == 200
        types = await client.get("/service-types?limit=500", headers=bearer(key))
        assert "immediate.cash" in {t["code"] for t in types.json()["items"]}


def _fill(path: str) -> str:
    values = {"code": "ML-1", "external_id": "EXT-A"}
    return re.sub(r"{(\w+)}", lambda m: values.get(m.group(1), str(uuid4())), path)


async def test_without_a_valid_key_every_route_answers_401(world):
    """Walks the OpenAPI document itself: the probes alone are open."""
    client = world.client
    revoked = await make_partner_key(client, world.admin, world.b["id"])
    assert (
        await client.delete(f"/api-keys/{revoked['id']}", headers=bearer(world.admin))
    ).status_code == 204
    refusals = {
        "no header": {},
        "empty bearer": {"Authorization": "Bearer "},
        "basic": {"Authorization": "Basic YWRtaW46YWRtaW4="},
        "unknown key": bearer("rk_" + "x" * 43),
        "revoked key": bearer(revoked["key"]),
        "a key with a typo": bearer(world.key_a[:-1] + ("A" if world.key_a[-1] != "A" else "B")),
    }
    before = await database_fingerprint(world.app)
    for method, path in sorted(openapi_routes(world.app)):
        if ROUTES[(method, path)].access == "public":
            response = await client.request(method, path)
            assert response.status_code == 200, (method, path)
            continue
        for name, headers in refusals.items():
            # No body: the key is checked first, whatever the route would need.
            response = await client.request(method, _fill(path), headers=headers)
            problem = assert_problem(response, 401)
            assert problem["type"].endswith("/unauthorized"), (method, path, name)
            assert response.headers.get("www-authenticate", "").lower().startswith("bearer")
            # And with a request the route would accept from a valid key.
            route = ROUTES[(method, path)]
            if route.body is not None:
                response = await client.request(
                    method, _fill(path), headers=headers, json=route.body(world, "owner")
                )
                assert_problem(response, 401)
    assert await database_fingerprint(world.app) == before


async def test_idempotency_keys_are_scoped_to_the_partner(world):
    """B sending A's Idempotency-Key with A's body gets its own case, not A's replay."""
    client = world.client
    body = case_body(external_id="IDEM-1")
    headers = {"Idempotency-Key": "intake-1"}
    first = await client.post("/cases", json=body, headers={**bearer(world.key_a), **headers})
    assert first.status_code == 201, first.text
    second = await client.post("/cases", json=body, headers={**bearer(world.key_b), **headers})
    assert second.status_code == 201, second.text
    assert "idempotent-replayed" not in second.headers
    assert second.json()["id"] != first.json()["id"]
    assert second.json()["owner_partner_id"] == world.b["id"]
    replay = await client.post("/cases", json=body, headers={**bearer(world.key_a), **headers})
    assert replay.headers.get("idempotent-replayed") == "true"
    assert replay.json()["id"] == first.json()["id"]
