"""The directory as HSDS 3.0 (SPEC 11.1): real responses validated against Open Referral's own
JSON schemas (tests/standards/hsds-3.0), the mapping, the filters and the page wrapper."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from services.registry.app import create_app
from tests.conftest import running
from tests.factories import bearer, make_admin_key, make_partner, make_partner_key, make_service

SCHEMAS = Path(__file__).parents[1] / "standards" / "hsds-3.0"


@cache
def _registry() -> Registry:
    resources = []
    for path in [*SCHEMAS.glob("*.json"), *(SCHEMAS / "compiled").glob("*.json")]:
        contents = json.loads(path.read_text())
        resource = Resource.from_contents(contents, default_specification=DRAFT202012)
        resources.append((path.name, resource))
        # The OpenAPI document names the schemas by their published URLs.
        folder = "compiled/" if path.parent.name == "compiled" else ""
        published = (
            "https://raw.githubusercontent.com/openreferral/specification/3.0/schema/"
            f"{folder}{path.name}"
        )
        resources.append((published, resource))
    return Registry().with_resources(resources)


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text())


def assert_valid(instance: Any, name: str) -> None:
    """Validate with the stock validator, formats (uuid, date-time) included."""
    validator = jsonschema.Draft202012Validator(
        schema(name), registry=_registry(), format_checker=jsonschema.FormatChecker()
    )
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]


PAGE_KEYS = {
    "total_items",
    "total_pages",
    "page_number",
    "size",
    "first_page",
    "last_page",
    "empty",
    "contents",
}


def assert_page(body: dict[str, Any], item_schema: str) -> list[dict[str, Any]]:
    page_schema = json.loads((SCHEMAS / "openapi.json").read_text())["components"]["schemas"][
        "Page"
    ]
    jsonschema.Draft202012Validator(page_schema).validate(body)
    assert set(body) == PAGE_KEYS
    assert body["size"] == len(body["contents"])
    for item in body["contents"]:
        assert_valid(item, item_schema)
    return body["contents"]


@pytest.fixture
async def directory(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        sabou = await make_partner(
            client,
            admin,
            "ONG Sabou",
            acronym="SABOU",
            contact_email="contact@sabou.example.org",
            contact_phone="+22320000001",
        )
        anpe = await make_partner(client, admin, "ANPE", kind="government")
        key = (await make_partner_key(client, admin, sabou["id"]))["key"]
        training = await make_service(
            client,
            key,
            name="Formation couture, Kayes",
            service_type="economic.vocational_training",
            areas=["ML-1", "ML-BKO"],
            eligibility={"sexes": ["female"], "min_age": 18, "max_age": 35},
        )
        counselling = await make_service(
            client,
            admin,
            partner_id=anpe["id"],
            name="Accompagnement psychosocial",
            service_type="psychosocial.individual_counselling",
            areas=["ML"],
        )
        yield {
            "app": app,
            "client": client,
            "admin": admin,
            "key": key,
            "sabou": sabou,
            "anpe": anpe,
            "training": training,
            "counselling": counselling,
        }


async def get(directory, path: str, key: str | None = "admin") -> Any:
    headers = bearer(directory[key]) if key else {}
    response = await directory["client"].get(path, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_root_names_the_version_and_the_openapi_document(directory):
    body = await get(directory, "/hsds/", key="key")
    assert body["version"] == "3.0"
    assert body["openapi_url"].endswith("/openapi.json")
    assert (await directory["client"].get(body["openapi_url"])).status_code == 200


async def test_services_list_and_single_validate_and_map_the_directory(directory):
    body = await get(directory, "/hsds/services")
    items = assert_page(body, "compiled/service_list.json")
    assert body["total_items"] == 2 and body["page_number"] == 1 and not body["empty"]
    by_name = {s["name"]: s for s in items}
    training = by_name["Formation couture, Kayes"]
    assert training["id"] == directory["training"]["id"]
    assert training["organization_id"] == directory["sabou"]["id"]
    assert training["organization"]["alternate_name"] == "SABOU"
    assert training["status"] == "active"
    assert training["minimum_age"] == 18 and training["maximum_age"] == 35
    assert training["eligibility_description"] == "For women, aged 18 to 35."
    assert by_name["Accompagnement psychosocial"]["eligibility_description"] == "All returnees."

    one = await get(directory, f"/hsds/services/{directory['training']['id']}", key="key")
    assert_valid(one, "compiled/service.json")
    assert [(a["extent"], a["name"]) for a in one["service_areas"]] == [
        ("ML-1", "Kayes"),
        ("ML-BKO", "Bamako"),
    ]
    [attribute] = one["attributes"]
    assert attribute["taxonomy_term"]["code"] == "economic.vocational_training"
    terms = {t["id"]: t for t in (await get(directory, "/hsds/taxonomy_terms"))["contents"]}
    assert attribute["taxonomy_term_id"] in terms

    full = await get(directory, "/hsds/services?full=true")
    for item in assert_page(full, "compiled/service.json"):
        assert item["service_areas"] and item["attributes"]


async def test_service_filters_pages_and_an_empty_page(directory):
    terms = (await get(directory, "/hsds/taxonomy_terms?per_page=100"))["contents"]
    by_code = {t["code"]: t for t in terms}
    economic = by_code["economic"]["id"]
    training_term = by_code["economic.vocational_training"]["id"]

    for query in (f"taxonomy_term_id={economic}", f"taxonomy_term_id={training_term}"):
        body = await get(directory, f"/hsds/services?{query}")
        assert [s["name"] for s in assert_page(body, "compiled/service_list.json")] == [
            "Formation couture, Kayes"
        ]
    body = await get(directory, f"/hsds/services?organization_id={directory['anpe']['id']}")
    assert [s["name"] for s in body["contents"]] == ["Accompagnement psychosocial"]
    body = await get(directory, "/hsds/services?search=COUTURE")
    assert [s["name"] for s in body["contents"]] == ["Formation couture, Kayes"]

    first = await get(directory, "/hsds/services?per_page=1")
    second = await get(directory, "/hsds/services?per_page=1&page=2")
    assert (first["total_pages"], first["first_page"], first["last_page"]) == (2, True, False)
    assert (second["page_number"], second["first_page"], second["last_page"]) == (2, False, True)
    assert {first["contents"][0]["id"], second["contents"][0]["id"]} == {
        directory["training"]["id"],
        directory["counselling"]["id"],
    }

    empty = await get(directory, "/hsds/services?modified_after=2999-01-01T00:00:00Z")
    assert_page(empty, "compiled/service_list.json")
    assert (empty["total_items"], empty["size"], empty["empty"]) == (0, 0, True)
    past_the_end = await get(directory, "/hsds/services?page=9")
    assert past_the_end["contents"] == [] and past_the_end["total_items"] == 2
    other_taxonomy = await get(
        directory, "/hsds/services?taxonomy_id=00000000-0000-0000-0000-000000000000"
    )
    assert other_taxonomy["total_items"] == 0


async def test_organizations_validate_and_carry_their_services(directory):
    body = await get(directory, "/hsds/organizations", key="key")
    items = assert_page(body, "compiled/organization_list.json")
    sabou = next(o for o in items if o["id"] == directory["sabou"]["id"])
    assert sabou["alternate_name"] == "SABOU"
    assert sabou["email"] == "contact@sabou.example.org"
    assert "ANPE" in {o["name"] for o in items}

    one = await get(directory, f"/hsds/organizations/{directory['sabou']['id']}")
    assert_valid(one, "compiled/organization.json")
    assert [p["number"] for p in one["phones"]] == ["+22320000001"]
    assert [s["id"] for s in one["services"]] == [directory["training"]["id"]]
    nested = await get(
        directory, f"/hsds/organizations/{directory['sabou']['id']}?full_service=true"
    )
    assert_valid(nested, "compiled/organization.json")
    assert nested["services"][0]["service_areas"]

    full = await get(directory, "/hsds/organizations?full=true&search=sabou")
    [only] = assert_page(full, "compiled/organization.json")
    assert only["id"] == directory["sabou"]["id"]


async def test_the_taxonomy_and_its_terms(directory):
    taxonomies = await get(directory, "/hsds/taxonomies")
    [taxonomy] = assert_page(taxonomies, "taxonomy.json")
    assert_valid(await get(directory, f"/hsds/taxonomies/{taxonomy['id']}"), "taxonomy.json")

    terms = await get(directory, "/hsds/taxonomy_terms?per_page=500")
    contents = assert_page(terms, "taxonomy_term.json")
    dimensions = [t for t in contents if "parent_id" not in t]
    assert {t["code"] for t in dimensions} == {"immediate", "economic", "social", "psychosocial"}
    assert len(contents) == 4 + 24  # the dimensions and the seeded service types
    assert all(t["taxonomy_id"] == taxonomy["id"] for t in contents)
    top = await get(directory, "/hsds/taxonomy_terms?top_only=true")
    assert {t["code"] for t in top["contents"]} == {t["code"] for t in dimensions}
    economic = next(t for t in dimensions if t["code"] == "economic")
    children = await get(directory, f"/hsds/taxonomy_terms?parent_id={economic['id']}")
    types = await get(directory, "/service-types?limit=500")
    economic_types = {t["code"] for t in types["items"] if t["dimension"] == "economic"}
    assert {t["code"] for t in children["contents"]} == economic_types
    one = await get(directory, f"/hsds/taxonomy_terms/{economic['id']}")
    assert_valid(one, "taxonomy_term.json")


async def test_service_at_locations_is_an_empty_page(directory):
    body = await get(directory, "/hsds/service_at_locations")
    assert_page(body, "compiled/service_at_location_list.json")
    assert body["empty"] is True and body["total_items"] == 0


async def test_unknown_ids_answer_404_and_a_key_is_needed(directory):
    client = directory["client"]
    headers = bearer(directory["key"])
    for path in (
        "/hsds/services/00000000-0000-0000-0000-000000000001",
        "/hsds/organizations/00000000-0000-0000-0000-000000000001",
        "/hsds/taxonomies/00000000-0000-0000-0000-000000000001",
        "/hsds/taxonomy_terms/00000000-0000-0000-0000-000000000001",
    ):
        response = await client.get(path, headers=headers)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"
    response = await client.get("/hsds/services")
    assert response.status_code == 401
    response = await client.get("/hsds/services?per_page=501", headers=headers)
    assert response.status_code == 422


async def test_the_view_is_public_only_when_configured(settings):
    app = create_app(settings.model_copy(update={"hsds_public": True}))
    async with running(app) as client:
        response = await client.get("/hsds/services")
        assert response.status_code == 200
        assert_page(response.json(), "compiled/service_list.json")
        # A key that is sent is still checked.
        response = await client.get("/hsds/services", headers=bearer("rk_not_a_key"))
        assert response.status_code == 401
