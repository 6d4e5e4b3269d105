"""The notifications document's OpenAPI 3.1 `webhooks` section (SPEC 7, 8): one entry per
event type of the catalog, each the CloudEvent a receiver gets, its `data` the schema of the
resource the type carries, with the Standard Webhooks headers and the answer expected."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from services.notifications.schemas import CloudEvent, EndpointRead, EndpointTestMessage
from shared.events_catalog import CATALOG, EventType

CONTENT_TYPE = "application/cloudevents+json"
REF = "#/components/schemas/{model}"
OWN_MODELS: tuple[type[BaseModel], ...] = (CloudEvent, EndpointRead, EndpointTestMessage)

HEADERS: dict[str, dict[str, Any]] = {
    "WebhookId": {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "description": "The event's `id`: the same on every retry. Deduplicate on it.",
        "schema": {"type": "string", "format": "uuid"},
    },
    "WebhookTimestamp": {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "description": "Unix seconds of this attempt; refuse one too far from your clock.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
        "example": "1764403200",
    },
    "WebhookSignature": {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "description": 'Space-separated `v1,<base64 HMAC-SHA256 of "{webhook-id}.'
        '{webhook-timestamp}.{body}">` with each valid secret (two for 24 h after a '
        "rotation). Verify with any Standard Webhooks library.",
        "schema": {"type": "string"},
        "example": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
    },
}

ANSWERS = {
    "2XX": {
        "description": "Received. Answer any 2xx within 15 s. Anything else is retried "
        "(5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; `Retry-After` on 429 and 503 is "
        "honoured); a redirect is not followed; 410 disables the endpoint."
    }
}


@cache
def event_data_schemas() -> dict[str, Any]:
    """The registry's and the referrals service's resource schemas, as they generate them
    (`tools/event_data_schemas.py`)."""
    text = resources.files("shared").joinpath("data/event_data.schema.json").read_text("utf-8")
    return json.loads(text)


def _component_name(event_type: str) -> str:
    words = event_type.replace(".", "_").split("_")
    return "".join(w.capitalize() for w in words) + "Event"


def _add(schemas: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    if name in schemas and schemas[name] != schema:
        raise ValueError(f"two different schemas named {name!r} in the notifications document")
    schemas[name] = schema


def _event_schema(event: EventType, envelope: dict[str, Any]) -> dict[str, Any]:
    properties = dict(envelope["properties"])
    properties["type"] = {"type": "string", "const": event.name, "title": "Type"}
    properties["source"] = {"type": "string", "const": event.source, "title": "Source"}
    properties["data"] = {"$ref": REF.format(model=event.carries)}
    return {
        **envelope,
        "title": _component_name(event.name),
        "description": f"`{event.name}`: {event.summary}",
        "properties": properties,
    }


def webhooks(components: dict[str, Any]) -> dict[str, Any]:
    """The `webhooks` section; adds the schemas and headers it refers to to the document's
    `components`, each name once."""
    components.setdefault("parameters", {}).update(HEADERS)
    schemas = components.setdefault("schemas", {})
    _, own = models_json_schema([(m, "serialization") for m in OWN_MODELS], ref_template=REF)
    for name, schema in {**event_data_schemas(), **own["$defs"]}.items():
        _add(schemas, name, schema)
    envelope = schemas[CloudEvent.__name__]
    section: dict[str, Any] = {}
    for event in CATALOG:
        component = _component_name(event.name)
        _add(schemas, component, _event_schema(event, envelope))
        section[event.name] = {
            "post": {
                "tags": ["webhooks"],
                "summary": event.summary,
                "description": f"Sent by Relais to your endpoints whose `event_types` select "
                f"`{event.name}`, signed with Standard Webhooks headers. The body is a "
                f"CloudEvent whose `data` is the {event.carries} after the change.",
                "operationId": f"webhooks-{event.name}",
                "parameters": [{"$ref": f"#/components/parameters/{name}"} for name in HEADERS],
                "requestBody": {
                    "required": True,
                    "content": {CONTENT_TYPE: {"schema": {"$ref": REF.format(model=component)}}},
                },
                "responses": ANSWERS,
            }
        }
    return section
