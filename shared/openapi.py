"""What makes each service's OpenAPI document exact for the clients integrators generate
from it (SPEC 7), beyond what FastAPI infers from the routes: `Idempotency-Key` declared on
every POST, optional request bodies optional rather than a union with null, and, for the
notifications service, the `webhooks` section."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from shared.idempotency import MAX_KEY_LENGTH

IDEMPOTENCY_KEY = "IdempotencyKey"
IDEMPOTENCY_KEY_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Send the same key to retry safely: the same key with the same body "
    "returns the first answer (with `Idempotent-Replayed: true`); another body answers 422; "
    "a request still in flight 409. Scoped to your key, the method and the path; kept 24 h.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
    "example": "intake-0001",
}

Webhooks = Callable[[dict[str, Any]], dict[str, Any]]


def _declare_idempotency_key(document: dict[str, Any]) -> None:
    """Every POST takes the header; the middleware, not the route, implements it."""
    components = document.setdefault("components", {})
    components.setdefault("parameters", {})[IDEMPOTENCY_KEY] = IDEMPOTENCY_KEY_PARAMETER
    reference = {"$ref": f"#/components/parameters/{IDEMPOTENCY_KEY}"}
    for item in document.get("paths", {}).values():
        operation = item.get("post")
        if operation is not None and reference not in operation.get("parameters", []):
            operation.setdefault("parameters", []).append(dict(reference))


def _optional_bodies_are_optional(document: dict[str, Any]) -> None:
    """FastAPI documents `body: Model | None = None` as a required-less body whose schema is
    `anyOf[Model, null]`; clients generated from that send `null` or fail without a body.
    The body is optional: `required: false` and the model itself."""
    for item in document.get("paths", {}).values():
        for operation in item.values():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if not body or body.get("required"):
                continue
            for media in body.get("content", {}).values():
                options = media.get("schema", {}).get("anyOf", [])
                models = [o for o in options if o != {"type": "null"}]
                if len(options) == 2 and len(models) == 1 and "$ref" in models[0]:
                    media["schema"] = models[0]
            body["required"] = False


def make_exact(
    app: FastAPI,
    *,
    webhooks: Webhooks | None = None,
    schemas: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Refine `app`'s document once, when it is first built. `webhooks` builds the OpenAPI
    3.1 `webhooks` section from the document's components, to which it adds what it needs;
    `schemas` are components the routes refer to by hand (`#/components/schemas/<name>`)."""
    build = app.openapi
    refined: dict[str, Any] | None = None

    def openapi() -> dict[str, Any]:
        nonlocal refined
        if refined is None:
            document = build()
            _declare_idempotency_key(document)
            _optional_bodies_are_optional(document)
            if schemas:
                document.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
            if webhooks is not None:
                document["webhooks"] = webhooks(document.setdefault("components", {}))
            refined = app.openapi_schema = document
        return refined

    app.openapi = openapi  # type: ignore[method-assign]
