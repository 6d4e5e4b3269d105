"""The OpenAPI pages let the coordination run the hub from /docs alone: every operation has
a tag, a summary, a description, its error responses and the bearer security scheme, and
every request body has an example."""

from __future__ import annotations

import pytest

from services.notifications.app import create_app as notifications_app
from services.referrals.app import create_app as referrals_app
from services.registry.app import create_app as registry_app
from shared.settings import Settings

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
