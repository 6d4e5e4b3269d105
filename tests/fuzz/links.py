"""OpenAPI links added to the loaded documents for the stateful fuzz runs.

A link says which response feeds which request: `POST /cases` answers the case whose `id`
the `/cases/{case_id}/...` actions take, with the `version` an update must carry (else 412)
and the ids of its own steps. The services' documents declare none; schemathesis (4.x) can
infer some, but infers a dense graph that spreads a short run over every action-to-action
pair and still misses what matters here (a case with one of *its* steps, the version, an
unassigned referral's owner as the partner to assign it to). So the stateful runs use
these links alone (inference is turned off where the documents are loaded), added to the
loaded copy of each document: what the services serve is unchanged.

Lists feed only the read of one item (`GET /cases` -> `GET /cases/{case_id}`); the item's
response then feeds the actions, so that every value of one request comes from the same
resource.
"""

from __future__ import annotations

from typing import Any

Source = tuple[str, str, str]  # method, path, status code of the response that links
# method, path, parameters, and a body merged into the generated one (or None)
Target = tuple[str, str, dict[str, str], dict[str, Any] | None]

VERSION = {"version": "$response.body#/version"}


def item_of(method: str, path: str, parameter: str, field: str = "id") -> tuple[Source, Target]:
    """A list's response -> the read of one of its items."""
    return (method, path, "200"), (
        "GET",
        f"{path}/{{{parameter}}}",
        {f"path.{parameter}": f"$response.body#/items/*/{field}"},
        None,
    )


def every(sources: list[Source], targets: list[Target]) -> list[tuple[Source, Target]]:
    return [(source, target) for source in sources for target in targets]


# --- registry ---------------------------------------------------------------------------

PARTNER_ID = {"path.partner_id": "$response.body#/id"}
PARTNER_SOURCES: list[Source] = [
    ("POST", "/partners", "201"),
    ("GET", "/partners/{partner_id}", "200"),
    ("PATCH", "/partners/{partner_id}", "200"),
]
PARTNER_TARGETS: list[Target] = [
    ("GET", "/partners/{partner_id}", PARTNER_ID, None),
    ("PATCH", "/partners/{partner_id}", PARTNER_ID, VERSION),
    ("POST", "/partners/{partner_id}/api-keys", PARTNER_ID, None),
    ("GET", "/partners/{partner_id}/api-keys", PARTNER_ID, None),
]

SERVICE_ID = {"path.service_id": "$response.body#/id"}
SERVICE_SOURCES: list[Source] = [
    ("POST", "/services", "201"),
    ("GET", "/services/{service_id}", "200"),
    ("PATCH", "/services/{service_id}", "200"),
]
SERVICE_TARGETS: list[Target] = [
    ("GET", "/services/{service_id}", SERVICE_ID, None),
    ("PATCH", "/services/{service_id}", SERVICE_ID, VERSION),
]

CASE_ID = {"path.case_id": "$response.body#/id"}
# One step of the very case the response is: both ids from one body.
CASE_STEP = {**CASE_ID, "path.step_id": "$response.body#/plan/*/id"}
# Responses that are the whole case, as its owner (or an admin) reads it.
CASE_SOURCES: list[Source] = [
    ("POST", "/cases", "201"),
    ("PUT", "/cases/by-external-id/{external_id}", "200"),
    ("PUT", "/cases/by-external-id/{external_id}", "201"),
    ("GET", "/cases/{case_id}", "200"),
]
CASE_ACTIONS: list[Target] = [
    ("PATCH", "/cases/{case_id}", CASE_ID, VERSION),
    ("POST", "/cases/{case_id}/consent", CASE_ID, VERSION),
    ("POST", "/cases/{case_id}/steps", CASE_ID, VERSION),
    ("POST", "/cases/{case_id}/close", CASE_ID, VERSION),
    ("POST", "/cases/{case_id}/reopen", CASE_ID, VERSION),
    ("POST", "/cases/{case_id}/steps/{step_id}/cancel", CASE_STEP, VERSION),
    ("POST", "/cases/{case_id}/steps/{step_id}/complete", CASE_STEP, VERSION),
]
CASE_TARGETS: list[Target] = [
    ("GET", "/cases/{case_id}", CASE_ID, None),
    *CASE_ACTIONS,
    ("GET", "/cases/{case_id}/export", CASE_ID, None),
    # The same case again by its owner's own id (an admin names the owner).
    (
        "PUT",
        "/cases/by-external-id/{external_id}",
        {"path.external_id": "$response.body#/external_id"},
        {**VERSION, "owner_partner_id": "$response.body#/owner_partner_id"},
    ),
]
# What an action answered (the case after it) -> the case read again, which links on.
CASE_AFTER_ACTIONS: list[tuple[Source, Target]] = [
    ((method, path, "201" if path.endswith("/steps") else "200"), CASE_TARGETS[0])
    for method, path, _, _ in CASE_ACTIONS
]

DUPLICATE_ID = {"path.duplicate_id": "$response.body#/items/*/id"}
DUPLICATE_TARGETS: list[Target] = [
    ("POST", "/duplicates/{duplicate_id}/dismiss", DUPLICATE_ID, None),
    ("POST", "/duplicates/{duplicate_id}/link", DUPLICATE_ID, None),
    # A merge keeps one of the pair's own cases: both ids from the same (first) pair.
    (
        "POST",
        "/duplicates/{duplicate_id}/merge",
        {"path.duplicate_id": "$response.body#/items/0/id"},
        {"keep_case_id": "$response.body#/items/0/case_ids/0"},
    ),
]

REGISTRY: list[tuple[Source, Target]] = [
    item_of("GET", "/partners", "partner_id"),
    *every(PARTNER_SOURCES, PARTNER_TARGETS),
    (
        ("POST", "/partners/{partner_id}/api-keys", "201"),
        ("DELETE", "/api-keys/{key_id}", {"path.key_id": "$response.body#/id"}, None),
    ),
    (
        ("GET", "/partners/{partner_id}/api-keys", "200"),
        ("DELETE", "/api-keys/{key_id}", {"path.key_id": "$response.body#/items/*/id"}, None),
    ),
    # An admin key created is revoked again (the fuzzing admin key is spared: conftest).
    (
        ("POST", "/admin-keys", "201"),
        ("DELETE", "/api-keys/{key_id}", {"path.key_id": "$response.body#/id"}, None),
    ),
    item_of("GET", "/areas", "code", field="code"),
    item_of("GET", "/services", "service_id"),
    *every(SERVICE_SOURCES, SERVICE_TARGETS),
    item_of("GET", "/cases", "case_id"),
    *every(CASE_SOURCES, CASE_TARGETS),
    *CASE_AFTER_ACTIONS,
    *every([("GET", "/duplicates", "200")], DUPLICATE_TARGETS),
]

# --- referrals --------------------------------------------------------------------------

REFERRAL_ID = {"path.referral_id": "$response.body#/id"}
REFERRAL_ACTIONS = ("accept", "reject", "start", "complete", "fail", "cancel")
REFERRAL_SOURCES: list[Source] = [
    ("GET", "/referrals/{referral_id}", "200"),
    *(("POST", f"/referrals/{{referral_id}}/{action}", "200") for action in REFERRAL_ACTIONS),
    ("POST", "/referrals/{referral_id}/assign", "200"),
]
REFERRAL_TARGETS: list[Target] = [
    ("GET", "/referrals/{referral_id}", REFERRAL_ID, None),
    *(
        ("POST", f"/referrals/{{referral_id}}/{action}", REFERRAL_ID, VERSION)
        for action in REFERRAL_ACTIONS
    ),
    # Any active partner may take an unassigned referral: its owner is one.
    (
        "POST",
        "/referrals/{referral_id}/assign",
        REFERRAL_ID,
        {**VERSION, "partner_id": "$response.body#/owner_partner_id"},
    ),
]
REFERRALS: list[tuple[Source, Target]] = [
    item_of("GET", "/referrals", "referral_id"),
    (
        ("GET", "/queues/unassigned", "200"),
        item_of("GET", "/referrals", "referral_id")[1],
    ),
    *every(REFERRAL_SOURCES, REFERRAL_TARGETS),
    (
        ("GET", "/referrals/{referral_id}", "200"),
        ("GET", "/cases/{case_id}/pathway", {"path.case_id": "$response.body#/case_id"}, None),
    ),
]

# --- notifications ----------------------------------------------------------------------

ENDPOINT_ID = {"path.endpoint_id": "$response.body#/id"}
DELIVERY_ID = {"path.delivery_id": "$response.body#/id"}
ENDPOINT_SOURCES: list[Source] = [
    ("POST", "/endpoints", "201"),
    ("GET", "/endpoints/{endpoint_id}", "200"),
    ("PATCH", "/endpoints/{endpoint_id}", "200"),
    ("POST", "/endpoints/{endpoint_id}/rotate-secret", "200"),
    ("POST", "/endpoints/{endpoint_id}/enable", "200"),
]
ENDPOINT_TARGETS: list[Target] = [
    ("GET", "/endpoints/{endpoint_id}", ENDPOINT_ID, None),
    ("PATCH", "/endpoints/{endpoint_id}", ENDPOINT_ID, VERSION),
    ("POST", "/endpoints/{endpoint_id}/test", ENDPOINT_ID, None),
    ("POST", "/endpoints/{endpoint_id}/enable", ENDPOINT_ID, None),
    ("POST", "/endpoints/{endpoint_id}/recover", ENDPOINT_ID, None),
    ("POST", "/endpoints/{endpoint_id}/rotate-secret", ENDPOINT_ID, None),
    ("DELETE", "/endpoints/{endpoint_id}", ENDPOINT_ID, None),
]
NOTIFICATIONS: list[tuple[Source, Target]] = [
    item_of("GET", "/endpoints", "endpoint_id"),
    *every(ENDPOINT_SOURCES, ENDPOINT_TARGETS),
    item_of("GET", "/deliveries", "delivery_id"),
    (
        ("GET", "/deliveries", "200"),
        (
            "POST",
            "/deliveries/{delivery_id}/retry",
            {"path.delivery_id": "$response.body#/items/*/id"},
            None,
        ),
    ),
    *every(
        [
            ("GET", "/deliveries/{delivery_id}", "200"),
            ("POST", "/deliveries/{delivery_id}/retry", "200"),
        ],
        [
            ("GET", "/deliveries/{delivery_id}", DELIVERY_ID, None),
            ("POST", "/deliveries/{delivery_id}/retry", DELIVERY_ID, None),
            (
                "GET",
                "/endpoints/{endpoint_id}",
                {"path.endpoint_id": "$response.body#/endpoint_id"},
                None,
            ),
        ],
    ),
]

LINKS: dict[str, list[tuple[Source, Target]]] = {
    "registry": REGISTRY,
    "referrals": REFERRALS,
    "notifications": NOTIFICATIONS,
}


def link_object(target: Target) -> dict[str, Any]:
    """The OpenAPI link object that calls `target`."""
    method, path, parameters, body = target
    pointer = path.replace("~", "~0").replace("/", "~1")
    link: dict[str, Any] = {"operationRef": f"#/paths/{pointer}/{method.lower()}"}
    if parameters:
        link["parameters"] = dict(parameters)
    if body is not None:
        link["requestBody"] = dict(body)
    if any("/*/" in expression for expression in [*parameters.values(), *(body or {}).values()]):
        # schemathesis reads `*` in a JSON pointer as "any one item" only in the links it
        # infers itself, which its extension marks so; elsewhere `*` is a key.
        link["x-schemathesis"] = {"is_inferred": True}
    return link


def add_links(raw: dict[str, Any], service: str) -> int:
    """Add the links of `service` to `raw`, its loaded OpenAPI document; how many."""
    for (method, path, status), target in LINKS[service]:
        response = raw["paths"][path][method.lower()]["responses"][status]
        name = f"{target[0]} {target[1]}"
        links = response.setdefault("links", {})
        assert name not in links, f"two links from {method} {path} {status} to {name}"
        links[name] = link_object(target)
    return len(LINKS[service])
