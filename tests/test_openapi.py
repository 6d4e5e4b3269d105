"""The OpenAPI pages let the coordination run the hub from /docs alone: every operation has
a tag, a summary, a description, its error responses and the bearer security scheme, and
every request body has an example."""

from __future__ import annotations

import pytest

from services.notifications.app import create_app as notifications_app
from services.referrals.app import create_app as referrals_app
from services.referrals.tables import REFERRAL_STATUSES
from services.registry.app import create_app as registry_app
from shared.events_catalog import EVENT_TYPES
from shared.settings import Settings
from tests.conftest import running
from tests.factories import bearer, make_admin_key

APPS = {"registry": registry_app, "referrals": referrals_app, "notifications": notifications_app}
PROBES = {"/healthz", "/readyz", "/metrics"}


def _operations(name: str):
    spec = APPS[name](Settings(database_url="postgresql://unused/none")).openapi()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield spec, path, method, operation


def _resolve(spec: dict, schema: dict) -> dict:
    if "anyOf" in schema:  # an optional body: its model, not null
        schema = next((s for s in schema["anyOf"] if "$ref" in s), schema)
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _has_example(spec: dict, media: dict) -> bool:
    if media.get("example") is not None or media.get("examples"):
        return True
    schema = _resolve(spec, media.get("schema", {}))
    if schema.get("examples") or schema.get("example"):
        return True
    props = schema.get("properties", {})
    return bool(props) and any(
        p.get("examples")
        or p.get("example")
        or p.get("default") is not None
        or _resolve(spec, p).get("examples")
        for p in props.values()
    )


@pytest.mark.parametrize("name", sorted(APPS))
def test_every_operation_is_documented_for_the_docs_page(name):
    problems = []
    for spec, path, method, op in _operations(name):
        where = f"{method.upper()} {path}"
        if not op.get("tags"):
            problems.append(f"{where}: no tag")
        if not op.get("summary"):
            problems.append(f"{where}: no summary")
        if path in PROBES:
            continue
        if not op.get("description"):
            problems.append(f"{where}: no description")
        if not op.get("security"):
            problems.append(f"{where}: no security scheme")
        responses = op.get("responses", {})
        for status in ("401", "422"):
            if status not in responses:
                problems.append(f"{where}: no {status} response")
        body = op.get("requestBody", {}).get("content", {})
        for media in body.values():
            if not _has_example(spec, media):
                problems.append(f"{where}: request body without an example")
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("name", sorted(APPS))
def test_the_bearer_scheme_is_declared(name):
    spec = APPS[name](Settings(database_url="postgresql://unused/none")).openapi()
    scheme = spec["components"]["securitySchemes"]["ApiKey"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"


# --- What generated clients rely on (SPEC 7: "the OpenAPI documents ... are exact") ------


def _document(name: str) -> dict:
    return APPS[name](Settings(database_url="postgresql://unused/none")).openapi()


def _parameters(spec: dict, operation: dict) -> list[dict]:
    """The operation's parameters with `$ref`s to shared parameters resolved."""
    shared = spec.get("components", {}).get("parameters", {})
    return [
        shared[p["$ref"].rsplit("/", 1)[-1]] if "$ref" in p else p
        for p in operation.get("parameters", [])
    ]


def _header(spec: dict, operation: dict, name: str) -> dict | None:
    return next(
        (p for p in _parameters(spec, operation) if p["in"] == "header" and p["name"] == name),
        None,
    )


def _body_schema(spec: dict, operation: dict) -> dict:
    content = operation.get("requestBody", {}).get("content", {})
    media = content.get("application/json") or next(iter(content.values()), {})
    return _resolve(spec, media.get("schema", {}))


@pytest.mark.parametrize("name", sorted(APPS))
def test_idempotency_key_and_if_match_are_declared_optional_headers_where_accepted(name):
    problems = []
    for spec, path, method, op in _operations(name):
        where = f"{method.upper()} {path}"
        takes_version = "version" in _body_schema(spec, op).get("properties", {})
        for header, expected in (
            ("Idempotency-Key", method == "post"),
            ("If-Match", method == "patch" or takes_version),
        ):
            declared = _header(spec, op, header)
            if expected and declared is None:
                problems.append(f"{where}: no {header} header parameter")
            if declared is not None and (
                declared.get("required") or not declared.get("description")
            ):
                problems.append(f"{where}: {header} is required or undescribed")
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("name", sorted(APPS))
def test_if_match_documents_the_versions_it_takes(name):
    import re

    seen = 0
    for spec, path, method, op in _operations(name):
        declared = _header(spec, op, "If-Match")
        if declared is None:
            continue
        seen += 1
        pattern = re.compile(declared["schema"]["pattern"])
        for taken in ("3", '"3"', 'W/"3"', "*"):
            assert pattern.match(taken), f"{method} {path}: {taken}"
        for refused in ("three", "", "3.0"):
            assert not pattern.match(refused), f"{method} {path}: {refused}"
    assert seen


@pytest.mark.parametrize("name", sorted(APPS))
def test_optional_request_bodies_are_optional_and_not_a_union_with_null(name):
    optional = set()
    for _spec, path, method, op in _operations(name):
        body = op.get("requestBody")
        if body is None:
            continue
        for media in body["content"].values():
            assert "anyOf" not in media["schema"], f"{method.upper()} {path}: {media['schema']}"
        if not body.get("required", False):
            assert body.get("required") is False, f"{method.upper()} {path}"
            optional.add(f"{method.upper()} {path}")
    expected = {
        "registry": {
            "POST /cases/{case_id}/steps/{step_id}/cancel",
            "POST /cases/{case_id}/steps/{step_id}/complete",
            "POST /cases/{case_id}/reopen",
        },
        "referrals": {
            "POST /referrals/{referral_id}/accept",
            "POST /referrals/{referral_id}/start",
        },
        "notifications": set(),
    }[name]
    assert optional == expected


async def test_accept_takes_no_body_an_empty_body_or_an_empty_object_as_the_document_says(
    settings,
):
    operation = _document("referrals")["paths"]["/referrals/{referral_id}/accept"]["post"]
    assert operation["requestBody"]["required"] is False
    app = referrals_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        url = "/referrals/7b0f3c52-1d7e-4c1a-9f0e-2b6a1d5e8c43/accept"
        json_type = {"content-type": "application/json"}
        for extra in ({}, {"headers": json_type}, {"headers": json_type, "content": b"{}"}):
            headers = {**bearer(admin), **extra.get("headers", {})}
            response = await client.post(url, headers=headers, content=extra.get("content"))
            # Read and handled: no such referral, rather than a refused body.
            assert response.status_code == 404, (extra, response.text)


ENUMERATED_QUERIES = {
    ("referrals", "/referrals", "role"): {"incoming", "outgoing"},
    ("referrals", "/referrals", "status"): set(REFERRAL_STATUSES),
    ("registry", "/cases", "status"): {"open", "closed"},
    ("registry", "/duplicates", "status"): {"open", "dismissed", "merged", "linked"},
    ("notifications", "/deliveries", "status"): {"pending", "succeeded", "failed"},
    ("referrals", "/gaps", "level"): {"region", "cercle"},
}


@pytest.mark.parametrize(("name", "path", "parameter"), sorted(ENUMERATED_QUERIES))
def test_enumerated_query_parameters_are_enums(name, path, parameter):
    spec = _document(name)
    (declared,) = [
        p
        for p in _parameters(spec, spec["paths"][path]["get"])
        if p["in"] == "query" and p["name"] == parameter
    ]
    options = declared["schema"].get("anyOf", [declared["schema"]])
    (schema,) = [_resolve(spec, o) for o in options if o != {"type": "null"}]
    assert set(schema.get("enum", ())) == ENUMERATED_QUERIES[(name, path, parameter)]


# Free-form objects that are free-form by nature: a map keyed by partner id, the JSON merge
# patches of a case's beneficiary and return, and an event's `data` in a feed item or a
# subject access export (any resource; the webhooks section gives each type's).
FREE_FORM = {
    "RoutingDecision.excluded_partners",
    "CaseUpdate.beneficiary",
    "CaseUpdate.return",
    "CloudEvent.data",
    "ExportedEvent.data",
}


def _inline_objects(node, where: str, found: list[str]) -> None:
    if isinstance(node, dict):
        inline = node.get("type") == "object" and "title" not in node
        if (inline or node.get("additionalProperties") is True) and where not in FREE_FORM:
            found.append(where)
        for key, value in node.items():
            if key == "properties":
                for prop, schema in value.items():
                    _inline_objects(schema, f"{where}.{prop}", found)
            elif key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties"):
                _inline_objects(value, where, found)
    elif isinstance(node, list):
        for value in node:
            _inline_objects(value, where, found)


@pytest.mark.parametrize("name", sorted(APPS))
def test_every_nested_object_has_a_named_schema(name):
    spec = _document(name)
    found: list[str] = []
    for component, schema in spec["components"]["schemas"].items():
        if schema.get("additionalProperties") is True or (
            schema.get("type") == "object" and not schema.get("properties")
        ):
            found.append(component)  # a catch-all where the shape is known
        for prop, sub in schema.get("properties", {}).items():
            _inline_objects(sub, f"{component}.{prop}", found)
    for path, item in spec["paths"].items():
        if path in PROBES:
            continue
        for method, op in item.items():
            for status, response in op.get("responses", {}).items():
                for media in response.get("content", {}).values():
                    _inline_objects(media.get("schema", {}), f"{method} {path} {status}", found)
    assert sorted(set(found)) == []
    # openapi-python-client names a class after each component: two names that give the
    # same class name would collide.
    names = [n.replace("_", "").replace("-", "").lower() for n in spec["components"]["schemas"]]
    assert len(names) == len(set(names))


def test_referrals_nest_the_minimised_case_the_decision_and_history_lines_by_name():
    schemas = _document("referrals")["components"]["schemas"]
    read = schemas["ReferralRead"]["properties"]
    assert {o.get("$ref", "").rsplit("/", 1)[-1] for o in read["case"]["anyOf"]} == {
        "MinimisedCase",
        "CaseReference",
    }
    assert {"$ref": "#/components/schemas/RoutingDecision"} in read["decision"]["anyOf"]
    assert read["history"]["items"] == {"$ref": "#/components/schemas/HistoryEntry"}
    decision = schemas["RoutingDecision"]["properties"]
    assert decision["candidates"]["items"] == {"$ref": "#/components/schemas/RoutingCandidate"}
    assert decision["excluded"]["items"] == {"$ref": "#/components/schemas/RoutingExclusion"}
    minimised = schemas["MinimisedCase"]["properties"]
    assert {"beneficiary", "return", "steps", "referring_partner"} <= set(minimised)
    steps = schemas["PathwayRead"]["properties"]["steps"]["items"]
    assert steps == {"$ref": "#/components/schemas/PathwayStep"}
    feed = _document("notifications")["components"]["schemas"]["FeedPage"]["properties"]
    assert feed["items"]["items"] == {"$ref": "#/components/schemas/CloudEvent"}


# --- The notifications document's webhooks (SPEC 3, 7, 8) --------------------------------

SPEC_EVENT_TYPES = {
    "PartnerRead": ["partner.created", "partner.updated"],
    "ServiceRead": ["service.created", "service.updated"],
    "CaseRead": [
        "case.created",
        "case.updated",
        "case.consent_changed",
        "case.plan_changed",
        "case.step_completed",
        "case.closed",
        "case.reopened",
        "case.merged",
    ],
    "CaseErased": ["case.erased"],
    "Referral": [
        "referral.created",
        "referral.accepted",
        "referral.rejected",
        "referral.started",
        "referral.completed",
        "referral.failed",
        "referral.cancelled",
        "referral.expired",
        "referral.assigned",
    ],
    "PathwayCompleted": ["case.pathway_completed"],
    "EndpointRead": ["endpoint.disabled", "endpoint.enabled"],
    "EndpointTestMessage": ["endpoint.test"],
}


def test_the_notifications_document_has_a_webhook_for_each_event_type_with_its_data():
    spec = _document("notifications")
    schemas = spec["components"]["schemas"]
    carried = {t: resource for resource, types in SPEC_EVENT_TYPES.items() for t in types}
    assert set(spec["webhooks"]) == set(carried) == set(EVENT_TYPES)
    for event_type, resource in carried.items():
        operation = spec["webhooks"][event_type]["post"]
        headers = {p["name"]: p for p in _parameters(spec, operation) if p["in"] == "header"}
        assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= set(headers)
        assert all(headers[h]["required"] for h in headers if h.startswith("webhook-"))
        assert "2XX" in operation["responses"]
        (media_type,) = operation["requestBody"]["content"]
        assert media_type == "application/cloudevents+json"
        event = _resolve(spec, operation["requestBody"]["content"][media_type]["schema"])
        assert event["properties"]["type"]["const"] == event_type
        assert event["properties"]["data"] == {"$ref": f"#/components/schemas/{resource}"}
        assert {"specversion", "id", "source", "time", "sequence", "data"} <= set(event["required"])
        assert schemas[resource]["properties"], resource
    # Referral events carry the Referral without its routing decision.
    assert "decision" not in schemas["Referral"]["properties"]
    assert schemas["Referral"]["properties"]["case"]["anyOf"]


def test_the_event_data_schemas_in_shared_are_the_owning_services_own():
    from tools.event_data_schemas import TARGET, render

    assert TARGET.read_text(encoding="utf-8") == render(), (
        "shared/data/event_data.schema.json differs from the registry's and the referrals "
        "service's models: run `.venv/bin/python tools/event_data_schemas.py`"
    )
