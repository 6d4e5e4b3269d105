"""Exploration draft."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import FuzzHub

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
]


def _variants(values: dict[str, Any], names: set[str], existing: list[dict[str, str]]):
    out = []
    for group in existing:
        if group.keys() & names and all(name in names for name in group if name != "area"):
            pass
    for group in existing:
        usable = {k: v for k, v in group.items() if k in names}
        if usable:
            out.append({**values, **usable})
    return out


def load(hub: FuzzHub, service: str, role: str):
    schema = schemathesis.openapi.from_asgi("/openapi.json", hub.apps[service])
    schema.config.update(headers={"Authorization": f"Bearer {hub.keys[role]}"})
    existing = hub.existing

    @schema.hook("flatmap_path_parameters")
    def existing_path(context, path_parameters):
        names = {p.name for p in context.operation.path_parameters}
        variants = _variants(path_parameters, names, existing)
        return (
            st.sampled_from([path_parameters, *variants]) if variants else st.just(path_parameters)
        )

    @schema.hook("map_query")
    def short_wait(context, query):
        if context.operation.path == "/feed" and query and "wait" in query:
            try:
                wait = float(query["wait"])
            except (TypeError, ValueError):
                return query
            if 0.1 < wait <= 30:
                query["wait"] = 0.1
        return query

    return schema


@pytest.fixture(params=["admin", "partner"])
def role(request):
    return request.param


@pytest.fixture
def registry_schema(fuzz_hub, role):
    return load(fuzz_hub, "registry", role)


@pytest.fixture
def referrals_schema(fuzz_hub, role):
    return load(fuzz_hub, "referrals", role)


@pytest.fixture
def notifications_schema(fuzz_hub, role):
    return load(fuzz_hub, "notifications", role)


SETTINGS = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

registry = schemathesis.pytest.from_fixture("registry_schema")
referrals = schemathesis.pytest.from_fixture("referrals_schema")
notifications = schemathesis.pytest.from_fixture("notifications_schema")


@registry.parametrize()
@SETTINGS
def test_registry(case):
    case.call_and_validate(checks=CHECKS)


@referrals.parametrize()
@SETTINGS
def test_referrals(case):
    case.call_and_validate(checks=CHECKS)


@notifications.parametrize()
@SETTINGS
def test_notifications(case):
    case.call_and_validate(checks=CHECKS)
