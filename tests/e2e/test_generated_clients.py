"""A partner integrates as SPEC 7 promises: it generates Python clients with
`openapi-python-client` from the three running services' `/openapi.json`, without a warning,
and runs the README journey (partners, keys, a service, an endpoint, a case with an
idempotency key, accept, complete, pathway, feed, a signed webhook) with those clients
alone, reading typed results."""

from __future__ import annotations

import asyncio
import enum
import importlib
import inspect
import json
import os
import subprocess
import sys
import time
import typing
import uuid
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import httpx
import pytest
from openapi_python_client.strings import ClassName
from standardwebhooks.webhooks import Webhook

from shared.events_catalog import CATALOG
from tests.e2e.processes import ADMIN_KEY, SERVICES, Services
from tests.notifications.receiver import Receiver

pytestmark = pytest.mark.slow


@dataclass
class Generated:
    document: dict
    returncode: int
    output: str
    package: ModuleType

    def operation(self, tag: str, name: str) -> ModuleType:
        """The generated module of one operation: `asyncio_detailed`, `asyncio`, ..."""
        return importlib.import_module(f"{self.package.__name__}.api.{tag}.{name}")

    def model(self, name: str) -> type:
        return getattr(importlib.import_module(f"{self.package.__name__}.models"), name)

    def client(self, base_url: str, key: str | None = None) -> Any:
        timeout = httpx.Timeout(30)
        if key is None:
            return self.package.Client(base_url=base_url, timeout=timeout)
        return self.package.AuthenticatedClient(
            base_url=base_url, token=key, timeout=timeout, raise_on_unexpected_status=True
        )


@pytest.fixture(scope="module")
def generated(
    hub_processes: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Generated]]:
    """Each service's client, generated once from the document the running service serves.
    The generator runs its default post-hooks (ruff) with the ruff installed beside Python,
    so nothing outside this machine is needed."""
    root = tmp_path_factory.mktemp("generated-clients")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    results: dict[str, Generated] = {}
    sys.path.insert(0, str(root))
    try:
        for name in SERVICES:
            document = httpx.get(hub_processes.url(name) + "/openapi.json", timeout=30).json()
            path = root / f"{name}.json"
            path.write_text(json.dumps(document))
            package = f"relais_{name}_client"
            config = root / f"{name}-config.json"
            config.write_text(json.dumps({"package_name_override": package}))
            run = subprocess.run(
                [
                    *(sys.executable, "-m", "openapi_python_client", "generate"),
                    *("--path", str(path), "--meta", "none", "--config", str(config)),
                    *("--output-path", str(root / package), "--fail-on-warning"),
                ],
                capture_output=True,
                text=True,
                env=env,
                cwd=root,
                timeout=300,
            )
            output = run.stdout + run.stderr
            assert (root / package).is_dir(), f"no {name} client was generated:\n{output}"
            results[name] = Generated(
                document=document,
                returncode=run.returncode,
                output=output,
                package=importlib.import_module(package),
            )
        yield results
    finally:
        sys.path.remove(str(root))
        for module in [m for m in sys.modules if m.startswith("relais_") and "_client" in m]:
            del sys.modules[module]


@pytest.mark.parametrize("name", SERVICES)
def test_generation_is_free_of_warnings(generated, name):
    result = generated[name]
    assert result.returncode == 0, result.output
    assert "Warning" not in result.output, result.output
    assert "Error" not in result.output, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Generating ") and line.endswith(f"relais_{name}_client"), line


def enum_member(function: Callable, parameter: str, value: str) -> enum.Enum:
    """The member `value` of the enum that `function` takes for `parameter`."""
    annotation = inspect.signature(function).parameters[parameter].annotation
    for option in typing.get_args(annotation) or (annotation,):
        if isinstance(option, type) and issubclass(option, enum.Enum):
            return option(value)
    raise AssertionError(f"{function.__module__}: `{parameter}` is {annotation}, not an enum")


def assert_typed(value: Any, what: str) -> None:
    """`value` (or the class `value`) is a generated model with named fields, not a bag of
    `additional_properties`."""
    model = value if isinstance(value, type) else type(value)
    assert attrs.has(model), f"{what}: {model.__name__} is not a model"
    names = {field.name for field in attrs.fields(model)} - {"additional_properties"}
    assert names, f"{what}: {model.__name__} has no named field"


def webhook_model(generated: Generated, event_type: str) -> type:
    """The generated model of an event as the notifications document's `webhooks` section
    describes it."""
    webhooks = generated.document.get("webhooks")
    assert webhooks, "the notifications document has no `webhooks` section"
    operation = webhooks[event_type]["post"]
    (media,) = operation["requestBody"]["content"].values()
    reference = media["schema"]["$ref"]
    return generated.model(ClassName(reference.rsplit("/", 1)[-1], ""))


async def new_partner(registry: Generated, hub_processes: Services, body: dict) -> tuple[Any, str]:
    """Admin registers a partner and gives it a key: (partner, key)."""
    admin = registry.client(hub_processes.url("registry"), ADMIN_KEY)
    async with admin:
        created = await registry.operation("partners", "partners_create_partner").asyncio_detailed(
            client=admin, body=registry.model("PartnerCreate").from_dict(body)
        )
        assert created.status_code == 201, created.content
        partner = created.parsed
        key = await registry.operation("api_keys", "api_keys_create_api_key").asyncio_detailed(
            partner.id, client=admin, body=registry.model("ApiKeyCreate")(name="integration")
        )
        assert key.status_code == 201, key.content
    return partner, key.parsed.key


async def test_a_post_replayed_with_its_idempotency_key_returns_the_first_answer(
    generated, hub_processes
):
    registry = generated["registry"]
    create = registry.operation("partners", "partners_create_partner")
    body = registry.model("PartnerCreate").from_dict({"name": "ONG Replay", "kind": "ngo"})
    key = f"partner-{uuid.uuid4()}"
    async with registry.client(hub_processes.url("registry"), ADMIN_KEY) as admin:
        first = await create.asyncio_detailed(client=admin, body=body, idempotency_key=key)
        again = await create.asyncio_detailed(client=admin, body=body, idempotency_key=key)
    assert first.status_code == again.status_code == 201
    assert again.parsed.id == first.parsed.id


async def test_accept_is_called_without_a_body(generated, hub_processes):
    _partner, key = await new_partner(
        generated["registry"], hub_processes, {"name": "Centre sans corps", "kind": "ngo"}
    )
    referrals = generated["referrals"]
    async with referrals.client(hub_processes.url("referrals"), key) as client:
        client.raise_on_unexpected_status = False
        response = await referrals.operation("referrals", "referrals_accept").asyncio_detailed(
            uuid.uuid4(), client=client
        )
    # Sent, and answered: no referral of that id is visible to this partner.
    assert response.status_code == 404
    assert response.parsed.status == 404


async def test_the_referral_filters_are_enums(generated, hub_processes):
    _partner, key = await new_partner(
        generated["registry"], hub_processes, {"name": "Centre filtres", "kind": "ngo"}
    )
    referrals = generated["referrals"]
    listing = referrals.operation("referrals", "referrals_list_referrals")
    async with referrals.client(hub_processes.url("referrals"), key) as client:
        page = await listing.asyncio_detailed(
            client=client,
            role=enum_member(listing.asyncio_detailed, "role", "incoming"),
            status=enum_member(listing.asyncio_detailed, "status", "requested"),
        )
    assert page.status_code == 200
    assert page.parsed.items == []


async def test_feed_items_are_typed_events(generated, hub_processes):
    partner, key = await new_partner(
        generated["registry"], hub_processes, {"name": "Centre flux", "kind": "ngo"}
    )
    notifications = generated["notifications"]
    feed = notifications.operation("feed", "feed_feed")
    async with notifications.client(hub_processes.url("notifications"), key) as client:
        page = await feed.asyncio_detailed(client=client, types="partner.*", wait=10)
    assert page.status_code == 200
    (item,) = page.parsed.items
    assert_typed(item, "a feed item")
    assert item.type_ == "partner.created"
    assert item.data.to_dict()["id"] == str(partner.id)


def test_every_event_type_has_a_webhook_with_a_generated_model(generated):
    notifications = generated["notifications"]
    for event_type in CATALOG:
        model = webhook_model(notifications, event_type.name)
        assert_typed(model, f"the {event_type.name} webhook")


async def test_the_readme_journey_with_generated_clients_only(generated, hub_processes):
    registry, referrals, notifications = (generated[name] for name in SERVICES)
    receiver = Receiver()
    await receiver.start()
    try:
        async with AsyncExitStack() as stack:
            await journey(stack, registry, referrals, notifications, hub_processes, receiver)
    finally:
        await receiver.stop()


async def journey(
    stack: AsyncExitStack,
    registry: Generated,
    referrals: Generated,
    notifications: Generated,
    hub_processes: Services,
    receiver: Receiver,
) -> None:
    reg, ref, notif = (hub_processes.url(name) for name in SERVICES)
    models = registry.model

    # The coordination registers two partners and gives each a key.
    iom, iom_key = await new_partner(
        registry, hub_processes, {"name": "OIM Mali", "acronym": "OIM", "kind": "un_agency"}
    )
    cfp, cfp_key = await new_partner(
        registry, hub_processes, {"name": "Centre de formation de Kayes", "kind": "ngo"}
    )
    assert iom.id != cfp.id

    # The training centre offers vocational training in the Kayes region, and wants webhooks.
    cfp_registry = await stack.enter_async_context(registry.client(reg, cfp_key))
    service = await registry.operation("services", "services_create_service").asyncio_detailed(
        client=cfp_registry,
        body=models("ServiceCreate")(
            service_type="economic.vocational_training", name="Formation", areas=["ML-1"]
        ),
    )
    assert service.status_code == 201, service.content
    assert service.parsed.partner_id == cfp.id
    cfp_notifications = await stack.enter_async_context(notifications.client(notif, cfp_key))
    endpoint = await notifications.operation(
        "endpoints", "endpoints_create_endpoint"
    ).asyncio_detailed(
        client=cfp_notifications,
        body=notifications.model("EndpointCreate")(url=receiver.url, event_types=["referral.*"]),
    )
    assert endpoint.status_code == 201, endpoint.content
    assert endpoint.parsed.status == "active"
    secret = endpoint.parsed.secret

    # IOM creates a case with consent and a one-step plan, with an idempotency key; a replay
    # with the same key answers the same case.
    iom_registry = await stack.enter_async_context(registry.client(reg, iom_key))
    case_body = models("CaseCreate").from_dict(
        {
            "external_id": "OIM-0001",
            "beneficiary": {
                "given_name": "Awa",
                "family_name": "Keita",
                "sex": "female",
                "birth_year": 1998,
            },
            "return": {"area_code": "ML-1-03", "country_from": "LY"},
            "consent": {"referral": "granted", "method": "written"},
            "plan": [{"service_type": "economic.vocational_training"}],
        }
    )
    create_case = registry.operation("cases", "cases_create_case")
    created = await create_case.asyncio_detailed(
        client=iom_registry, body=case_body, idempotency_key="intake-0001"
    )
    assert created.status_code == 201, created.content
    case = created.parsed
    assert case.owner_partner_id == iom.id and case.status == "open"
    replay = await create_case.asyncio_detailed(
        client=iom_registry, body=case_body, idempotency_key="intake-0001"
    )
    assert replay.status_code == 201, replay.content
    assert replay.parsed.id == case.id and replay.parsed.reference == case.reference

    # The centre sees the referral, accepts it without a body and completes it.
    cfp_referrals = await stack.enter_async_context(referrals.client(ref, cfp_key))
    listing = referrals.operation("referrals", "referrals_list_referrals")
    role = enum_member(listing.asyncio_detailed, "role", "incoming")
    requested = enum_member(listing.asyncio_detailed, "status", "requested")
    deadline = time.monotonic() + 30
    while True:
        page = await listing.asyncio_detailed(client=cfp_referrals, role=role, status=requested)
        assert page.status_code == 200, page.content
        if page.parsed.items:
            break
        assert time.monotonic() < deadline, "the centre got no referral"
        await asyncio.sleep(0.1)
    (incoming,) = page.parsed.items
    assert incoming.case_id == case.id and incoming.assignee_partner_id == cfp.id
    assert incoming.service_id == service.parsed.id and incoming.status == "requested"

    accepted = await referrals.operation("referrals", "referrals_accept").asyncio_detailed(
        incoming.id, client=cfp_referrals
    )
    assert accepted.status_code == 200, accepted.content
    assert accepted.parsed.status == "accepted"
    assert_typed(accepted.parsed.case, "the minimised case")
    assert accepted.parsed.case.reference == case.reference

    completed = await referrals.operation("referrals", "referrals_complete").asyncio_detailed(
        incoming.id,
        client=cfp_referrals,
        body=referrals.model("CompleteBody")(outcome="Certificate in tailoring"),
    )
    assert completed.status_code == 200, completed.content
    assert completed.parsed.status == "completed"
    assert completed.parsed.outcome == "Certificate in tailoring"
    assert [line.status for line in completed.parsed.history] == [
        "requested",
        "accepted",
        "completed",
    ]

    # IOM follows the pathway, the referral with its routing decision, and its feed.
    iom_referrals = await stack.enter_async_context(referrals.client(ref, iom_key))
    pathway = await referrals.operation("referrals", "referrals_pathway").asyncio_detailed(
        case.id, client=iom_referrals
    )
    assert pathway.status_code == 200, pathway.content
    (step,) = pathway.parsed.steps
    assert step.status == "completed"
    assert [r.id for r in step.referrals] == [incoming.id]
    detail = await referrals.operation("referrals", "referrals_get_referral").asyncio_detailed(
        incoming.id, client=iom_referrals
    )
    assert detail.status_code == 200, detail.content
    assert_typed(detail.parsed.decision, "the routing decision")

    iom_notifications = await stack.enter_async_context(notifications.client(notif, iom_key))
    feed = notifications.operation("feed", "feed_feed")
    seen: list[Any] = []
    after: Any = None
    deadline = time.monotonic() + 30
    while not any(item.type_ == "case.pathway_completed" for item in seen):
        assert time.monotonic() < deadline, [item.type_ for item in seen]
        kwargs = {} if after is None else {"after": after}
        page = await feed.asyncio_detailed(
            client=iom_notifications,
            types="referral.*,case.pathway_completed",
            wait=10,
            **kwargs,
        )
        assert page.status_code == 200, page.content
        seen += page.parsed.items
        after = page.parsed.next_cursor
    for item in seen:
        assert_typed(item, "a feed item")
    assert [item.type_ for item in seen] == [
        "referral.created",
        "referral.accepted",
        "referral.completed",
        "case.pathway_completed",
    ]
    data = [item.data.to_dict() for item in seen]
    assert [d["id"] for d in data[:3]] == [str(incoming.id)] * 3
    assert data[3]["case_id"] == str(case.id)

    # The centre's endpoint got the referral, signed with its secret, as the document says.
    deadline = time.monotonic() + 30
    while len(receiver.requests) < 3:
        assert time.monotonic() < deadline, len(receiver.requests)
        await asyncio.sleep(0.1)
    events = []
    for request in receiver.requests:
        headers = {k: v for k, v in request.headers.items() if k.startswith("webhook-")}
        Webhook(secret).verify(request.body, headers)  # raises if the signature is wrong
        payload = json.loads(request.body)
        event = webhook_model(notifications, payload["type"]).from_dict(payload)
        assert_typed(event.data, f"the data of a {payload['type']} webhook")
        events.append(event)
    by_type = {event.type_: event for event in events}
    assert set(by_type) == {"referral.created", "referral.accepted", "referral.completed"}
    created_event = by_type["referral.created"]
    assert created_event.data.id == incoming.id
    assert created_event.data.status == "requested"
    assert created_event.data.assignee_partner_id == cfp.id
