"""Bad input on every write endpoint: 422 naming the field, and nothing written (SPEC 7, 9).

Each endpoint has its table of bad requests: wrong types, unknown fields, over-long strings,
out-of-range numbers, unknown codes, bad enum values, NUL characters. For each, the answer is
a 422 problem document whose `errors[].field` names the bad field, the number of events in
`hub.events` is unchanged, every registry table is unchanged (fingerprinted), and the
resource read back through the API is what it was.

Then what is not a field: oversized bodies (413), malformed JSON, bad page sizes and cursors.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.factories import bearer, case_body
from tests.registry.helpers import PROBLEM, assert_problem, database_fingerprint, event_count

NUL = "\u0000"
PAST = "2020-01-01T00:00:00Z"
UNKNOWN_UUID = "00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class Bad:
    """One bad request: its body, the field it must be blamed on, and who sends it."""

    label: str
    body: Any
    field: str
    key: str = ""  # "" means the endpoint's key
    path: str = ""  # "" means the endpoint's path


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # formatted with the world's ids
    key: str  # "partner" or "admin"
    reads: tuple[str, ...]  # read back through the API, before and after
    bads: list[Bad] = field(default_factory=list)


def beneficiary(**changes: Any) -> dict:
    return {**case_body()["beneficiary"], **changes}


def with_case(**changes: Any) -> dict:
    body = case_body(external_id="NEW-1")
    body.update(changes)
    return body


def with_return(**changes: Any) -> dict:
    return with_case(**{"return": {**case_body()["return"], **changes}})


def upsert_body(**changes: Any) -> dict:
    body = case_body()
    body.pop("external_id")
    body.pop("plan")
    body.update(changes)
    return body


SERVICE = {"service_type": "immediate.cash", "name": "Cash", "areas": ["ML-1"]}
STEP = {"service_type": "immediate.cash"}
TYPE = {"code": "social.legal_aid", "name": "Legal aid", "dimension": "social"}

ENDPOINTS: dict[str, Endpoint] = {
    "POST /partners": Endpoint(
        "POST",
        "/partners",
        "admin",
        ("/partners?limit=500",),
        [
            Bad("wrong type", {"name": 5, "kind": "ngo"}, "body.name"),
            Bad("missing", {"kind": "ngo"}, "body.name"),
            Bad("blank", {"name": "   ", "kind": "ngo"}, "body.name"),
            Bad("over-long", {"name": "x" * 201, "kind": "ngo"}, "body.name"),
            Bad(
                "over-long acronym",
                {"name": "X", "acronym": "x" * 41, "kind": "ngo"},
                "body.acronym",
            ),
            Bad("bad enum", {"name": "X", "kind": "church"}, "body.kind"),
            Bad("unknown field", {"name": "X", "kind": "ngo", "colour": "red"}, "body.colour"),
            Bad(
                "status at creation",
                {"name": "X", "kind": "ngo", "status": "active"},
                "body.status",
            ),
            Bad(
                "bad email",
                {"name": "X", "kind": "ngo", "contact_email": "nope"},
                "body.contact_email",
            ),
            Bad(
                "bad phone",
                {"name": "X", "kind": "ngo", "contact_phone": "70 12 34"},
                "body.contact_phone",
            ),
            Bad("NUL", {"name": f"X{NUL}Y", "kind": "ngo"}, "body.name"),
            Bad("not an object", [{"name": "X", "kind": "ngo"}], "body"),
        ],
    ),
    "PATCH /partners/{partner_id}": Endpoint(
        "PATCH",
        "/partners/{partner_id}",
        "partner",
        ("/partners/{partner_id}",),
        [
            Bad("wrong type", {"name": 5}, "body.name"),
            Bad("empty", {"name": ""}, "body.name"),
            Bad("null", {"name": None}, "body.name"),
            Bad("null acronym", {"acronym": None}, "body.acronym"),
            Bad("over-long", {"name": "x" * 201}, "body.name"),
            Bad("bad phone", {"contact_phone": "123"}, "body.contact_phone"),
            Bad("bad email", {"contact_email": "@example.org"}, "body.contact_email"),
            Bad("unknown field", {"name": "X", "id": UNKNOWN_UUID}, "body.id"),
            Bad("read-only field", {"created_at": "2020-01-01T00:00:00Z"}, "body.created_at"),
            Bad("version of a wrong type", {"name": "X", "version": "two"}, "body.version"),
            Bad("bad enum", {"kind": "church"}, "body.kind", key="admin"),
            Bad("bad status", {"status": "sleeping"}, "body.status", key="admin"),
            Bad("null status", {"status": None}, "body.status", key="admin"),
            Bad("null kind", {"kind": None}, "body.kind", key="admin"),
            Bad("NUL", {"name": f"X{NUL}"}, "body.name"),
        ],
    ),
    "POST /partners/{partner_id}/api-keys": Endpoint(
        "POST",
        "/partners/{partner_id}/api-keys",
        "admin",
        ("/partners/{partner_id}/api-keys",),
        [
            Bad("wrong type", {"name": 5}, "body.name"),
            Bad("over-long", {"name": "x" * 201}, "body.name"),
            Bad("unknown field: role", {"name": "k", "role": "admin"}, "body.role"),
            Bad(
                "unknown field: partner",
                {"name": "k", "partner_id": UNKNOWN_UUID},
                "body.partner_id",
            ),
            Bad("NUL", {"name": NUL}, "body.name"),
            Bad("not an object", "key", "body"),
            Bad("bad partner id", {"name": "k"}, "path.partner_id", path="/partners/abc/api-keys"),
            Bad("expiry in the past", {"expires_at": PAST}, "body.expires_at"),
            Bad("expiry without offset", {"expires_at": "2030-01-01T00:00:00"}, "body.expires_at"),
            Bad("expiry not a time", {"expires_at": "next year"}, "body.expires_at"),
        ],
    ),
    "POST /admin-keys": Endpoint(
        "POST",
        "/admin-keys",
        "admin",
        ("/admin-keys?limit=500",),
        [
            Bad("missing", {}, "body.name"),
            Bad("blank", {"name": "   "}, "body.name"),
            Bad("wrong type", {"name": 5}, "body.name"),
            Bad("over-long", {"name": "x" * 201}, "body.name"),
            Bad("reserved name", {"name": "bootstrap"}, "body.name"),
            Bad("unknown field: role", {"name": "k", "role": "partner"}, "body.role"),
            Bad(
                "unknown field: partner",
                {"name": "k", "partner_id": UNKNOWN_UUID},
                "body.partner_id",
            ),
            Bad("NUL", {"name": f"k{NUL}"}, "body.name"),
            Bad("not an object", "key", "body"),
            Bad("expiry in the past", {"name": "k", "expires_at": PAST}, "body.expires_at"),
            Bad(
                "expiry without offset",
                {"name": "k", "expires_at": "2030-01-01T00:00:00"},
                "body.expires_at",
            ),
            Bad("expiry not a time", {"name": "k", "expires_at": 1.5e20}, "body.expires_at"),
        ],
    ),
    "POST /services": Endpoint(
        "POST",
        "/services",
        "partner",
        ("/services?limit=500",),
        [
            Bad(
                "unknown code",
                {**SERVICE, "service_type": "economic.space_travel"},
                "body.service_type",
            ),
            Bad("unknown area", {**SERVICE, "areas": ["ML-99"]}, "body.areas[0]"),
            Bad("second area unknown", {**SERVICE, "areas": ["ML-1", "ML-99"]}, "body.areas[1]"),
            Bad("no area", {**SERVICE, "areas": []}, "body.areas"),
            Bad("areas of a wrong type", {**SERVICE, "areas": "ML-1"}, "body.areas"),
            Bad("negative capacity", {**SERVICE, "capacity": -1}, "body.capacity"),
            Bad("capacity of a wrong type", {**SERVICE, "capacity": "lots"}, "body.capacity"),
            Bad("zero response hours", {**SERVICE, "response_hours": 0}, "body.response_hours"),
            Bad("a year to answer", {**SERVICE, "response_hours": 9000}, "body.response_hours"),
            Bad(
                "bad sex",
                {**SERVICE, "eligibility": {"sexes": ["robot"]}},
                "body.eligibility.sexes[0]",
            ),
            Bad(
                "age out of range",
                {**SERVICE, "eligibility": {"min_age": 121}},
                "body.eligibility.min_age",
            ),
            Bad(
                "ages inverted",
                {**SERVICE, "eligibility": {"min_age": 40, "max_age": 20}},
                "body.eligibility",
            ),
            Bad(
                "bad tag",
                {**SERVICE, "eligibility": {"vulnerabilities_any": ["Not A Tag"]}},
                "body.eligibility.vulnerabilities_any[0]",
            ),
            Bad(
                "unknown eligibility",
                {**SERVICE, "eligibility": {"income": 5}},
                "body.eligibility.income",
            ),
            Bad("null eligibility", {**SERVICE, "eligibility": None}, "body.eligibility"),
            Bad("unknown field", {**SERVICE, "colour": "red"}, "body.colour"),
            Bad("over-long", {**SERVICE, "name": "x" * 201}, "body.name"),
            Bad("bad enum", {**SERVICE, "status": "paused"}, "body.status"),
            Bad("NUL", {**SERVICE, "name": f"Cash{NUL}"}, "body.name"),
            Bad("NUL in an area", {**SERVICE, "areas": [f"ML{NUL}"]}, "body.areas"),
            Bad("bad partner id", {**SERVICE, "partner_id": "abc"}, "body.partner_id"),
        ],
    ),
    "PATCH /services/{service_id}": Endpoint(
        "PATCH",
        "/services/{service_id}",
        "partner",
        ("/services/{service_id}",),
        [
            Bad("null name", {"name": None}, "body.name"),
            Bad("null areas", {"areas": None}, "body.areas"),
            Bad("null eligibility", {"eligibility": None}, "body.eligibility"),
            Bad("null status", {"status": None}, "body.status"),
            Bad("unknown area", {"areas": ["ML-1", "ML-99"]}, "body.areas[1]"),
            Bad("unknown code", {"service_type": "economic.space_travel"}, "body.service_type"),
            Bad("capacity of a wrong type", {"capacity": "many"}, "body.capacity"),
            Bad("negative capacity", {"capacity": -5}, "body.capacity"),
            Bad("zero response hours", {"response_hours": 0}, "body.response_hours"),
            Bad("bad enum", {"status": "paused"}, "body.status"),
            Bad("moved to another partner", {"partner_id": UNKNOWN_UUID}, "body.partner_id"),
            Bad("version of a wrong type", {"name": "X", "version": "x"}, "body.version"),
            Bad("bad eligibility", {"eligibility": {"max_age": -1}}, "body.eligibility.max_age"),
            Bad("priority out of range", {"priority": 10_001}, "body.priority", key="admin"),
            Bad("negative priority", {"priority": -1}, "body.priority", key="admin"),
            Bad("null priority", {"priority": None}, "body.priority", key="admin"),
            Bad("NUL", {"name": NUL}, "body.name"),
        ],
    ),
    "POST /cases": Endpoint(
        "POST",
        "/cases",
        "partner",
        ("/cases?limit=500",),
        [
            Bad(
                "bad phone",
                with_case(beneficiary=beneficiary(phone="70 12 34")),
                "body.beneficiary.phone",
            ),
            Bad(
                "bad enum", with_case(beneficiary=beneficiary(sex="robot")), "body.beneficiary.sex"
            ),
            Bad(
                "over-long",
                with_case(beneficiary=beneficiary(given_name="x" * 101)),
                "body.beneficiary.given_name",
            ),
            Bad(
                "wrong type",
                with_case(beneficiary=beneficiary(given_name=5)),
                "body.beneficiary.given_name",
            ),
            Bad(
                "household of none",
                with_case(beneficiary=beneficiary(household_size=0)),
                "body.beneficiary.household_size",
            ),
            Bad(
                "household of a village",
                with_case(beneficiary=beneficiary(household_size=101)),
                "body.beneficiary.household_size",
            ),
            Bad(
                "born in the future",
                with_case(beneficiary=beneficiary(date_of_birth="2999-01-01")),
                "body.beneficiary.date_of_birth",
            ),
            Bad(
                "not a date",
                with_case(beneficiary=beneficiary(date_of_birth="12/04/1996")),
                "body.beneficiary.date_of_birth",
            ),
            Bad(
                "birth year out of range",
                with_case(beneficiary=beneficiary(date_of_birth=None, birth_year=1800)),
                "body.beneficiary.birth_year",
            ),
            Bad(
                "nationality not a code",
                with_case(beneficiary=beneficiary(nationality="Mali")),
                "body.beneficiary.nationality",
            ),
            Bad(
                "language not a code",
                with_case(beneficiary=beneficiary(languages=["French"])),
                "body.beneficiary.languages[0]",
            ),
            Bad(
                "bad document type",
                with_case(beneficiary=beneficiary(id_documents=[{"type": "visa", "number": "1"}])),
                "body.beneficiary.id_documents[0].type",
            ),
            Bad(
                "over-long document number",
                with_case(
                    beneficiary=beneficiary(id_documents=[{"type": "passport", "number": "9" * 41}])
                ),
                "body.beneficiary.id_documents[0].number",
            ),
            Bad(
                "unknown beneficiary field",
                with_case(beneficiary=beneficiary(religion="x")),
                "body.beneficiary.religion",
            ),
            Bad(
                "no beneficiary",
                {k: v for k, v in with_case().items() if k != "beneficiary"},
                "body.beneficiary",
            ),
            Bad("unknown area", with_return(area_code="ML-99"), "body.return.area_code"),
            Bad("return in the future", with_return(date="2999-01-01"), "body.return.date"),
            Bad(
                "country not a code", with_return(country_from="Libya"), "body.return.country_from"
            ),
            Bad("bad tag", with_case(vulnerabilities=["Not A Tag"]), "body.vulnerabilities[0]"),
            Bad(
                "too many tags",
                with_case(vulnerabilities=[f"t{i}" for i in range(31)]),
                "body.vulnerabilities",
            ),
            Bad("bad consent", with_case(consent={"referral": "maybe"}), "body.consent.referral"),
            Bad(
                "bad consent method",
                with_case(consent={"referral": "granted", "method": "telepathy"}),
                "body.consent.method",
            ),
            Bad(
                "unknown step type",
                with_case(plan=[{"service_type": "economic.space_travel"}]),
                "body.plan[0].service_type",
            ),
            Bad(
                "bad priority",
                with_case(plan=[{**STEP, "priority": "asap"}]),
                "body.plan[0].priority",
            ),
            Bad(
                "bad delivery",
                with_case(plan=[{**STEP, "delivery": "drone"}]),
                "body.plan[0].delivery",
            ),
            Bad(
                "unknown dependency",
                with_case(plan=[{**STEP, "depends_on": ["9"]}]),
                "body.plan[0].depends_on",
            ),
            Bad(
                "duplicate key",
                with_case(plan=[{**STEP, "key": "a"}, {**STEP, "key": "a"}]),
                "body.plan[1].key",
            ),
            Bad("too many steps", with_case(plan=[STEP] * 51), "body.plan"),
            Bad("empty external id", with_case(external_id=""), "body.external_id"),
            Bad("over-long external id", with_case(external_id="x" * 101), "body.external_id"),
            Bad("status at creation", with_case(status="closed"), "body.status"),
            Bad("bad owner id", with_case(owner_partner_id="abc"), "body.owner_partner_id"),
            Bad(
                "NUL",
                with_case(beneficiary=beneficiary(family_name=f"Traor{NUL}")),
                "body.beneficiary.family_name",
            ),
            Bad("NUL in the external id", with_case(external_id=f"X{NUL}"), "body.external_id"),
        ],
    ),
    "PUT /cases/by-external-id/{external_id}": Endpoint(
        "PUT",
        "/cases/by-external-id/EXT-1",  # the case that exists: an update
        "partner",
        ("/cases?limit=500", "/cases/{case_id}"),
        [
            Bad(
                "bad enum",
                upsert_body(beneficiary=beneficiary(sex="robot")),
                "body.beneficiary.sex",
            ),
            Bad(
                "unknown area",
                upsert_body(**{"return": {"area_code": "ML-99"}}),
                "body.return.area_code",
            ),
            Bad(
                "household of none",
                upsert_body(beneficiary=beneficiary(household_size=0)),
                "body.beneficiary.household_size",
            ),
            Bad("unknown field", upsert_body(colour="red"), "body.colour"),
            Bad("bad tag", upsert_body(vulnerabilities=["Bad Tag"]), "body.vulnerabilities[0]"),
            Bad(
                "a new case with a bad phone",
                upsert_body(beneficiary=beneficiary(phone="12")),
                "body.beneficiary.phone",
                path="/cases/by-external-id/EXT-NEW",
            ),
            Bad(
                "a new case with an unknown step type",
                upsert_body(plan=[{"service_type": "economic.space_travel"}]),
                "body.plan[0].service_type",
                path="/cases/by-external-id/EXT-NEW",
            ),
            Bad(
                "over-long external id",
                upsert_body(),
                "path.external_id",
                path="/cases/by-external-id/" + "x" * 101,
            ),
            Bad(
                "NUL in the external id",
                upsert_body(),
                "path.external_id",
                path="/cases/by-external-id/X%00Y",
            ),
        ],
    ),
    "PATCH /cases/{case_id}": Endpoint(
        "PATCH",
        "/cases/{case_id}",
        "partner",
        ("/cases/{case_id}",),
        [
            Bad("bad phone", {"beneficiary": {"phone": "123"}}, "body.beneficiary.phone"),
            Bad("bad enum", {"beneficiary": {"sex": "robot"}}, "body.beneficiary.sex"),
            Bad(
                "required field removed",
                {"beneficiary": {"given_name": None}},
                "body.beneficiary.given_name",
            ),
            Bad(
                "unknown beneficiary field",
                {"beneficiary": {"religion": "x"}},
                "body.beneficiary.religion",
            ),
            Bad(
                "out of range",
                {"beneficiary": {"household_size": 1000}},
                "body.beneficiary.household_size",
            ),
            Bad("wrong type", {"beneficiary": [1]}, "body.beneficiary"),
            Bad("unknown area", {"return": {"area_code": "ML-99"}}, "body.return.area_code"),
            Bad("not a date", {"return": {"date": "tomorrow"}}, "body.return.date"),
            Bad("null tags", {"vulnerabilities": None}, "body.vulnerabilities"),
            Bad("bad tag", {"vulnerabilities": ["Bad Tag"]}, "body.vulnerabilities[0]"),
            Bad("empty external id", {"external_id": ""}, "body.external_id"),
            Bad("null external id", {"external_id": None}, "body.external_id"),
            Bad("over-long external id", {"external_id": "x" * 101}, "body.external_id"),
            Bad("plan", {"plan": []}, "body.plan"),
            Bad("status", {"status": "closed"}, "body.status"),
            Bad("consent", {"consent": {"referral": "withdrawn"}}, "body.consent"),
            Bad("version of a wrong type", {"vulnerabilities": [], "version": "x"}, "body.version"),
            Bad("NUL", {"beneficiary": {"given_name": f"A{NUL}"}}, "body.beneficiary"),
        ],
    ),
    "POST /cases/{case_id}/consent": Endpoint(
        "POST",
        "/cases/{case_id}/consent",
        "partner",
        ("/cases/{case_id}",),
        [
            Bad("bad enum", {"referral": "maybe"}, "body.referral"),
            Bad("missing", {"method": "verbal"}, "body.referral"),
            Bad("bad method", {"referral": "withdrawn", "method": "telepathy"}, "body.method"),
            Bad("not a time", {"referral": "withdrawn", "given_at": "yesterday"}, "body.given_at"),
            Bad("unknown field", {"referral": "withdrawn", "scope": "all"}, "body.scope"),
            Bad(
                "version of a wrong type", {"referral": "withdrawn", "version": "x"}, "body.version"
            ),
            Bad("wrong type", {"referral": True}, "body.referral"),
        ],
    ),
    "POST /cases/{case_id}/steps": Endpoint(
        "POST",
        "/cases/{case_id}/steps",
        "partner",
        ("/cases/{case_id}",),
        [
            Bad("no step", {"steps": []}, "body.steps"),
            Bad("missing", {}, "body.steps"),
            Bad("too many", {"steps": [STEP] * 21}, "body.steps"),
            Bad(
                "unknown code",
                {"steps": [{"service_type": "x.unknown"}]},
                "body.steps[0].service_type",
            ),
            Bad(
                "bad priority", {"steps": [{**STEP, "priority": "asap"}]}, "body.steps[0].priority"
            ),
            Bad(
                "bad delivery", {"steps": [{**STEP, "delivery": "drone"}]}, "body.steps[0].delivery"
            ),
            Bad(
                "unknown dependency",
                {"steps": [{**STEP, "depends_on": ["99"]}]},
                "body.steps[0].depends_on",
            ),
            Bad("bad key", {"steps": [{**STEP, "key": "bad key!"}]}, "body.steps[0].key"),
            Bad("key taken", {"steps": [{**STEP, "key": "1"}]}, "body.steps[0].key"),
            Bad(
                "over-long notes", {"steps": [{**STEP, "notes": "x" * 2001}]}, "body.steps[0].notes"
            ),
            Bad(
                "unknown step field",
                {"steps": [{**STEP, "status": "completed"}]},
                "body.steps[0].status",
            ),
            Bad("unknown field", {"steps": [STEP], "plan": []}, "body.plan"),
            Bad("NUL", {"steps": [{**STEP, "notes": NUL}]}, "body.steps[0].notes"),
        ],
    ),
    "POST /cases/{case_id}/steps/{step_id}/cancel": Endpoint(
        "POST",
        "/cases/{case_id}/steps/{step_id}/cancel",
        "partner",
        ("/cases/{case_id}",),
        [
            Bad("over-long note", {"note": "x" * 2001}, "body.note"),
            Bad("unknown field", {"reason": "x"}, "body.reason"),
            Bad("version of a wrong type", {"version": "x"}, "body.version"),
            Bad("bad step id", {}, "path.step_id", path="/cases/{case_id}/steps/abc/cancel"),
        ],
    ),
    "POST /cases/{case_id}/steps/{step_id}/complete": Endpoint(
        "POST",
        "/cases/{case_id}/steps/{step_id}/complete",
        "partner",
        ("/cases/{case_id}",),
        [
            Bad("over-long note", {"note": "x" * 2001}, "body.note"),
            Bad("unknown field", {"outcome": "done"}, "body.outcome"),
            Bad("bad case id", {}, "path.case_id", path="/cases/abc/steps/{step_id}/complete"),
        ],
    ),
    "POST /cases/{case_id}/close": Endpoint(
        "POST",
        "/cases/{case_id}/close",
        "partner",
        ("/cases/{case_id}",),
        [
            Bad("bad enum", {"reason": "bored"}, "body.reason"),
            Bad("merged is the admins'", {"reason": "merged"}, "body.reason"),
            Bad("missing", {"note": "x"}, "body.reason"),
            Bad("over-long note", {"reason": "other", "note": "x" * 2001}, "body.note"),
            Bad("wrong type", {"reason": "other", "note": 5}, "body.note"),
            Bad("unknown field", {"reason": "other", "closed_at": "2026-01-01"}, "body.closed_at"),
            Bad("NUL", {"reason": "other", "note": NUL}, "body.note"),
        ],
    ),
    "POST /cases/{case_id}/reopen": Endpoint(
        "POST",
        "/cases/{case_id}/reopen",
        "partner",
        ("/cases/{case_id}",),
        [
            Bad("unknown field", {"reason": "x"}, "body.reason"),
            Bad("version of a wrong type", {"version": "x"}, "body.version"),
        ],
    ),
    "POST /cases/{case_id}/erase": Endpoint(
        "POST",
        "/cases/{case_id}/erase",
        "admin",
        ("/cases/{case_id}",),
        [
            Bad("missing", {}, "body.reason"),
            Bad("blank", {"reason": "   "}, "body.reason"),
            Bad("over-long", {"reason": "x" * 501}, "body.reason"),
            Bad("wrong type", {"reason": 5}, "body.reason"),
            Bad("NUL", {"reason": NUL}, "body.reason"),
            Bad("unknown field", {"reason": "asked", "erased_at": "2026-01-01"}, "body.erased_at"),
        ],
    ),
    "POST /service-types": Endpoint(
        "POST",
        "/service-types",
        "admin",
        ("/service-types?limit=500",),
        [
            Bad("bad code", {**TYPE, "code": "Bad Code!"}, "body.code"),
            Bad("empty code", {**TYPE, "code": ""}, "body.code"),
            Bad("over-long code", {**TYPE, "code": "a" * 65}, "body.code"),
            Bad("bad enum", {**TYPE, "dimension": "spiritual"}, "body.dimension"),
            Bad("over-long name", {**TYPE, "name": "x" * 201}, "body.name"),
            Bad("wrong type", {**TYPE, "name": 5}, "body.name"),
            Bad("over-long description", {**TYPE, "description": "x" * 2001}, "body.description"),
            Bad("unknown field", {**TYPE, "colour": "red"}, "body.colour"),
            Bad("NUL", {**TYPE, "name": NUL}, "body.name"),
        ],
    ),
    "POST /duplicates/{duplicate_id}/merge": Endpoint(
        "POST",
        "/duplicates/{duplicate_id}/merge",
        "admin",
        ("/duplicates?limit=500", "/cases/{case_id}", "/cases/{case2_id}"),
        [
            Bad("not a uuid", {"keep_case_id": "x"}, "body.keep_case_id"),
            Bad("wrong type", {"keep_case_id": 5}, "body.keep_case_id"),
            Bad("missing", {}, "body.keep_case_id"),
            Bad("not of the pair", {"keep_case_id": "{case3_id}"}, "body.keep_case_id"),
            Bad("unknown field", {"keep_case_id": "{case_id}", "reason": "x"}, "body.reason"),
        ],
    ),
}


def _fill(value: Any, ids: dict[str, str]) -> Any:
    """`{case_id}` and the like in the path and in string values of the body."""
    if isinstance(value, str):
        return value.format(**ids) if "{" in value else value
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


async def _read_back(world, endpoint: Endpoint) -> list:
    reads = []
    for url in endpoint.reads:
        response = await world.client.get(
            _fill(url, world.ids), headers=bearer(world.keys["admin"])
        )
        assert response.status_code == 200, (url, response.text)
        reads.append(response.json())
    return reads


async def _state(world, endpoint: Endpoint) -> tuple:
    return (
        await event_count(world.app),
        await database_fingerprint(world.app),
        await _read_back(world, endpoint),
    )


# One test (one database) per group of endpoints, to keep the suite fast.
GROUPS = {
    "partners and keys": ["POST /partners", "PATCH /partners/{partner_id}"],
    "keys, service types and merges": [
        "POST /partners/{partner_id}/api-keys",
        "POST /admin-keys",
        "POST /service-types",
        "POST /duplicates/{duplicate_id}/merge",
    ],
    "services": ["POST /services", "PATCH /services/{service_id}"],
    "cases": ["POST /cases", "PUT /cases/by-external-id/{external_id}", "PATCH /cases/{case_id}"],
    "case actions": [
        "POST /cases/{case_id}/consent",
        "POST /cases/{case_id}/steps",
        "POST /cases/{case_id}/steps/{step_id}/cancel",
        "POST /cases/{case_id}/steps/{step_id}/complete",
        "POST /cases/{case_id}/close",
        "POST /cases/{case_id}/reopen",
        "POST /cases/{case_id}/erase",
    ],
}


def test_the_groups_hold_every_endpoint_once():
    grouped = [name for names in GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(ENDPOINTS)


@pytest.mark.parametrize("group", list(GROUPS))
async def test_bad_input_answers_422_naming_the_field_and_writes_nothing(world, group):
    for name in GROUPS[group]:
        await _refuses_every_bad_input(world, name)


async def _refuses_every_bad_input(world, name: str) -> None:
    endpoint = ENDPOINTS[name]
    assert len({b.label for b in endpoint.bads}) == len(endpoint.bads)
    before = await _state(world, endpoint)
    for bad in endpoint.bads:
        url = _fill(bad.path or endpoint.path, world.ids)
        key = world.keys[bad.key or endpoint.key]
        response = await world.client.request(
            endpoint.method, url, json=_fill(bad.body, world.ids), headers=bearer(key)
        )
        where = f"{name}: {bad.label}"
        assert response.status_code == 422, (where, response.status_code, response.text)
        assert response.headers["content-type"] == PROBLEM, where
        problem = response.json()
        assert problem["status"] == 422 and problem["type"].endswith("/validation"), where
        fields = [e["field"] for e in problem["errors"]]
        assert bad.field in fields, (where, fields)
        assert all(f.split(".")[0].split("[")[0] in ("body", "path", "query") for f in fields)
        assert all(e["message"] and e["type"] for e in problem["errors"]), where
        assert await _state(world, endpoint) == before, f"{where}: something was written"


async def test_every_write_endpoint_has_its_bad_inputs(world):
    """Every POST, PUT and PATCH with a JSON body is in the table (the CSV import is tested
    in test_reference); each with several kinds of bad input."""
    document = world.app.openapi()
    writes = {
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if method in ("post", "put", "patch")
        and "application/json" in operation.get("requestBody", {}).get("content", {})
    }
    assert writes - ENDPOINTS.keys() <= {
        "POST /duplicates/{duplicate_id}/dismiss",  # no body
        "POST /duplicates/{duplicate_id}/link",
    }, sorted(writes - ENDPOINTS.keys())
    assert all(len(e.bads) >= 2 for e in ENDPOINTS.values())


# --- What is not a field ------------------------------------------------------------------


def _json_writes(world) -> list[tuple[str, str, str, bool]]:
    """(method, url, key, whether a body is required) of every write endpoint with JSON."""
    operations = world.app.openapi()["paths"]
    return [
        (
            e.method,
            _fill(e.path, world.ids),
            e.key,
            operations[name.split(" ", 1)[1]][e.method.lower()]["requestBody"].get(
                "required", False
            ),
        )
        for name, e in ENDPOINTS.items()
    ]


async def test_a_body_over_1_mib_answers_413_and_writes_nothing(world, settings):
    before = (await event_count(world.app), await database_fingerprint(world.app))
    big = json.dumps({"name": "x" * (settings.max_body_bytes + 1), "kind": "ngo"}).encode()
    for method, url, key, _required in _json_writes(world):
        response = await world.client.request(
            method,
            url,
            content=big,
            headers={**bearer(world.keys[key]), "Content-Type": "application/json"},
        )
        problem = assert_problem(response, 413)
        assert problem["type"].endswith("/payload-too-large"), (method, url)
    # Just under the limit is read, and refused only for what it says.
    fits = json.dumps(with_case(vulnerabilities=["x" * (settings.max_body_bytes - 2000)]))
    response = await world.client.post(
        "/cases",
        content=fits.encode(),
        headers={**bearer(world.keys["partner"]), "Content-Type": "application/json"},
    )
    assert_problem(response, 422)
    assert (await event_count(world.app), await database_fingerprint(world.app)) == before


async def test_a_chunked_body_over_1_mib_answers_413(world, settings):
    async def chunks():
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b"x" * 65536

    before = await database_fingerprint(world.app)
    response = await world.client.post(
        "/cases",
        content=chunks(),
        headers={**bearer(world.keys["partner"]), "Content-Type": "application/json"},
    )
    assert await database_fingerprint(world.app) == before
    assert_problem(response, 413)


async def test_malformed_json_answers_a_4xx_problem_and_writes_nothing(world):
    before = (await event_count(world.app), await database_fingerprint(world.app))
    payloads = [
        (b'{"name": "X", "kind": ', "application/json"),  # truncated
        (b'{"name": "X",, "kind": "ngo"}', "application/json"),
        (b"{'name': 'X'}", "application/json"),  # not JSON quotes
        (b'{"name": "\xff\xfe", "kind": "ngo"}', "application/json"),  # bad UTF-8
        (b"", "application/json"),
        (b"null", "application/json"),
        (b'{"name": "X", "kind": "ngo"}', "text/plain"),
        (b"name=X&kind=ngo", "application/x-www-form-urlencoded"),
    ]
    for method, url, key, required in _json_writes(world):
        for payload, content_type in payloads:
            if payload in (b"", b"null") and not required:
                continue  # an optional body may be left out (tested in test_cases)
            response = await world.client.request(
                method,
                url,
                content=payload,
                headers={**bearer(world.keys[key]), "Content-Type": content_type},
            )
            assert 400 <= response.status_code < 500, (method, url, payload, response.text)
            assert response.headers["content-type"] == PROBLEM, (method, url, payload)
    assert (await event_count(world.app), await database_fingerprint(world.app)) == before


def _list_routes(world) -> list[str]:
    """Every GET of the registry that pages (takes `limit` and `cursor`), filled in."""
    routes = []
    for path, operations in world.app.openapi()["paths"].items():
        names = {p["name"] for p in operations.get("get", {}).get("parameters", [])}
        if {"limit", "cursor"} <= names:
            routes.append(_fill(path, world.ids))
    return routes


async def test_every_list_refuses_an_absurd_limit_with_422(world):
    routes = _list_routes(world)
    assert len(routes) >= 8, routes
    for url in routes:
        for limit in ("0", "-1", "501", "1000000", "99999999999999999999", "abc", "1.5", ""):
            response = await world.client.get(
                f"{url}?limit={limit}", headers=bearer(world.keys["admin"])
            )
            problem = assert_problem(response, 422)
            assert [e["field"] for e in problem["errors"]] == ["query.limit"], (url, limit)
        largest = await world.client.get(f"{url}?limit=500", headers=bearer(world.keys["admin"]))
        assert largest.status_code == 200, (url, largest.text)


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


async def test_every_list_refuses_a_bad_cursor_with_422(world):
    cursors = {
        "not base64": "%%%",
        "base64 of nonsense": base64.urlsafe_b64encode(b"\xff\x00garbage").decode(),
        "not a list": _cursor({"id": 1}),
        "a list too long": _cursor(["a", "b", "c", "d"]),
        "an empty list": _cursor([]),
        "nulls": _cursor([None, None]),
        "over-long": "A" * 501,
    }
    for url in _list_routes(world):
        for name, cursor in cursors.items():
            response = await world.client.get(
                f"{url}?cursor={cursor}", headers=bearer(world.keys["admin"])
            )
            problem = assert_problem(response, 422)
            assert [e["field"] for e in problem["errors"]] == ["query.cursor"], (url, name)


async def test_a_cursor_with_values_of_the_wrong_type_or_range_answers_422(world):
    crafted = {
        "/partners": [_cursor([1, 2]), _cursor([f"a{NUL}", UNKNOWN_UUID])],
        "/services": [_cursor([5])],
        "/cases": [_cursor(["0001-01-01T00:00:00+14:00", UNKNOWN_UUID])],
        "/access-log": [_cursor([10**30])],
        "/areas": [_cursor([NUL])],
    }
    answers = []
    for url, cursors in crafted.items():
        for cursor in cursors:
            response = await world.client.get(
                f"{url}?cursor={cursor}", headers=bearer(world.keys["admin"])
            )
            answers.append((url, response.status_code))
    assert all(status == 422 for _url, status in answers), answers


async def test_list_filters_refuse_what_postgresql_cannot_compare(world):
    """A NUL character in a filter or a path, or a time out of PostgreSQL's range: 422."""
    admin = bearer(world.keys["admin"])
    for url, name in (
        ("/cases?area=ML%00", "query.area"),
        ("/services?area=ML%00", "query.area"),
        ("/services?service_type=a%00", "query.service_type"),
        ("/areas?parent=ML%00", "query.parent"),
        ("/areas?level=region%00", "query.level"),
        ("/areas/ML%00", "path.code"),
        ("/cases?updated_since=0001-01-01T00:00:00Z", "query.updated_since"),
        ("/cases?updated_since=9999-12-31T23:59:59-14:00", "query.updated_since"),
        ("/cases?updated_since=yesterday", "query.updated_since"),
        ("/cases?status=archived", "query.status"),
        ("/services?partner_id=abc", "query.partner_id"),
        ("/duplicates?status=maybe", "query.status"),
        ("/access-log?case_id=abc", "query.case_id"),
    ):
        problem = assert_problem(await world.client.get(url, headers=admin), 422)
        assert name in [e["field"] for e in problem["errors"]], (url, problem)
    # The edges that PostgreSQL holds are fine.
    for url in (
        "/cases?updated_since=0001-01-01T00:01:00Z",
        "/cases?updated_since=9999-12-31T00:00:00Z",
    ):
        assert (await world.client.get(url, headers=admin)).status_code == 200, url
