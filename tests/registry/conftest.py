"""Registry fixtures: the app with two partners (`hub`), and the same with services, cases and
duplicate pairs for every endpoint to act on (`world`)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from services.registry import hsds
from services.registry.app import create_app
from tests.conftest import running
from tests.factories import (
    bearer,
    make_admin_key,
    make_case,
    make_partner,
    make_partner_key,
    make_service,
)


@pytest.fixture
async def hub(settings):
    """The registry and its client, an admin key, and two partners with a key each: ONG Sabou
    (`partner`, `key`) and ANPE (`other`, `other_key`)."""
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        partner = await make_partner(
            client, admin, "ONG Sabou", contact_email="contact@sabou.example.org"
        )
        key = await make_partner_key(client, admin, partner["id"])
        other = await make_partner(client, admin, "ANPE")
        other_key = await make_partner_key(client, admin, other["id"])
        yield {
            "app": app,
            "client": client,
            "admin": admin,
            "partner": partner,
            "key": key["key"],
            "key_id": key["id"],
            "key_row": key,
            "other": other,
            "other_key": other_key["key"],
            "other_key_row": other_key,
        }


async def _pairs(client, admin: str) -> dict[frozenset[str], str]:
    response = await client.get("/duplicates?limit=500", headers=bearer(admin))
    assert response.status_code == 200, response.text
    return {frozenset(p["case_ids"]): p["id"] for p in response.json()["items"]}


@pytest.fixture
async def world(hub):
    """The `hub`'s partners A (ONG Sabou) and B (ANPE), each with a spare key and a service;
    the same returnee at A twice and at B (three duplicate pairs for the admin).

    `keys` names a key per caller, `args` and `ids` the resources a path may name."""
    client, admin = hub["client"], hub["admin"]
    w = SimpleNamespace(app=hub["app"], client=client, admin=admin, a=hub["partner"])
    w.b = hub["other"]
    w.key_a, w.key_a_row = hub["key"], hub["key_row"]
    w.key_b, w.key_b_row = hub["other_key"], hub["other_key_row"]
    for side, partner in (("a", w.a), ("b", w.b)):
        setattr(w, f"spare_{side}", await make_partner_key(client, admin, partner["id"]))
        key = getattr(w, f"key_{side}")
        setattr(w, f"service_{side}", await make_service(client, key, name=partner["name"]))
    w.case_a = await make_case(
        client,
        w.key_a,
        external_id="EXT-A",
        plan=[
            {"service_type": "immediate.cash", "delivery": "direct", "depends_on": []},
            {"service_type": "economic.vocational_training", "depends_on": []},
        ],
    )
    w.case_a2 = await make_case(client, w.key_a, external_id="EXT-A2")
    w.case_b = await make_case(client, w.key_b, external_id="EXT-B")
    w.case_a2_id = w.case_a2["id"]
    pairs = await _pairs(client, admin)
    ids = (w.case_a["id"], w.case_a2["id"], w.case_b["id"])
    w.pair_a_a2 = pairs[frozenset((ids[0], ids[1]))]
    w.pair_a_b = pairs[frozenset((ids[0], ids[2]))]
    w.pair_a2_b = pairs[frozenset((ids[1], ids[2]))]
    w.direct_step_id, w.referral_step_id = (s["id"] for s in w.case_a["plan"])
    w.args = {
        "partner_id": w.a["id"],
        "key_id": w.spare_a["id"],
        "case_id": w.case_a["id"],
        "service_id": w.service_a["id"],
        "code": "ML-1",
        "external_id": "EXT-A",
        # The HSDS view's names for a partner, the taxonomy and one of its terms.
        "organization_id": w.a["id"],
        "taxonomy_id": str(hsds.TAXONOMY_ID),
        "term_id": str(hsds.term_id("economic")),
    }
    w.ids = {
        "partner_id": w.a["id"],
        "service_id": w.service_a["id"],
        "case_id": w.case_a["id"],
        "case2_id": w.case_a2["id"],
        "case3_id": w.case_b["id"],
        "step_id": w.direct_step_id,
        "duplicate_id": w.pair_a_a2,
    }
    w.keys = {"other": w.key_b, "owner": w.key_a, "partner": w.key_a, "admin": admin}
    yield w
