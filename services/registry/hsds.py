"""The service directory as Open Referral's HSDS 3.0 (SPEC 11.1): pure mapping, no I/O.

A partner is an HSDS organization, a service a service, the service-type taxonomy one HSDS
taxonomy whose terms are the four dimensions and, under each, its service types. HSDS wants
uuids for every identifier: those of partners and services are theirs; the taxonomy's, its
terms', and those of the service areas and attributes (which Relais keeps as codes) are
name-based uuids (RFC 9562 version 5) derived from the codes, so they are stable across
restarts and databases. HSDS types its fields as plain strings and numbers, so a field Relais
has no value for is left out rather than sent as null.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from shared.standards import SERVICE_TYPES_SYSTEM

HSDS_VERSION = "3.0"
TAXONOMY_NAME = "Relais service types"
# The namespace of the name-based uuids: itself derived from the taxonomy's URI.
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, SERVICE_TYPES_SYSTEM)
TAXONOMY_ID = uuid.uuid5(NAMESPACE, "taxonomy")

DIMENSION_NAMES = {
    "immediate": "Immediate assistance",
    "economic": "Economic reintegration",
    "social": "Social reintegration",
    "psychosocial": "Psychosocial reintegration",
}
PARTNER_KINDS = {
    "government": "Government directorate",
    "ngo": "Non-governmental organisation",
    "un_agency": "United Nations agency",
    "private": "Private company",
    "community": "Community organisation",
}
SEX_WORDS = {"female": "women", "male": "men"}
SERVICE_STATUSES = {"active": "active", "inactive": "inactive"}

DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 500


def compact(values: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that have a value (HSDS has no nulls)."""
    return {k: v for k, v in values.items() if v is not None}


def timestamp(value: datetime) -> str:
    """HSDS's date-time: UTC with milliseconds and `Z`."""
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def term_id(code: str) -> UUID:
    """The taxonomy term of a dimension or a service-type code."""
    return uuid.uuid5(NAMESPACE, f"term:{code}")


def taxonomy() -> dict[str, Any]:
    return {
        "id": str(TAXONOMY_ID),
        "name": TAXONOMY_NAME,
        "description": (
            "The reintegration services of the coordination, in four dimensions: immediate "
            "assistance, economic, social and psychosocial reintegration."
        ),
        "uri": SERVICE_TYPES_SYSTEM,
        "version": "1",
        "metadata": [],
    }


def dimension_term(dimension: str) -> dict[str, Any]:
    return {
        "id": str(term_id(dimension)),
        "code": dimension,
        "name": DIMENSION_NAMES.get(dimension, dimension),
        "description": f"Services of the {dimension} dimension of reintegration.",
        "taxonomy": TAXONOMY_NAME,
        "taxonomy_id": str(TAXONOMY_ID),
        "term_uri": f"{SERVICE_TYPES_SYSTEM}#{dimension}",
        "metadata": [],
    }


def service_type_term(service_type: Mapping[str, Any]) -> dict[str, Any]:
    code = service_type["code"]
    return {
        "id": str(term_id(code)),
        "code": code,
        "name": service_type["name"],
        "description": service_type.get("description") or service_type["name"],
        "parent_id": str(term_id(service_type["dimension"])),
        "taxonomy": TAXONOMY_NAME,
        "taxonomy_id": str(TAXONOMY_ID),
        "term_uri": f"{SERVICE_TYPES_SYSTEM}#{code}",
        "metadata": [],
    }


def taxonomy_terms(service_types: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every term, in the taxonomy's order: each dimension, then its service types by code."""
    types = sorted(service_types, key=lambda t: t["code"])
    dimensions = [d for d in DIMENSION_NAMES if any(t["dimension"] == d for t in types)]
    dimensions += sorted({t["dimension"] for t in types} - set(dimensions))
    terms = []
    for dimension in dimensions:
        terms.append(dimension_term(dimension))
        terms += [service_type_term(t) for t in types if t["dimension"] == dimension]
    return terms


def organization(partner: Mapping[str, Any]) -> dict[str, Any]:
    """A partner as an HSDS organization (the fields of a list item)."""
    kind = PARTNER_KINDS.get(partner["kind"], partner["kind"])
    return compact(
        {
            "id": str(partner["id"]),
            "name": partner["name"],
            "alternate_name": partner.get("acronym") or None,
            "description": f"{kind}, partner of the reintegration coordination.",
            "email": partner.get("contact_email") or None,
        }
    )


def organization_full(
    partner: Mapping[str, Any], services: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """A partner with its phones and its services (as list items): `GET /organizations/{id}`."""
    phones = []
    if partner.get("contact_phone"):
        phones.append(
            {
                "id": str(uuid.uuid5(partner["id"], "phone")),
                "organization_id": str(partner["id"]),
                "number": partner["contact_phone"],
                "type": "voice",
                "attributes": [],
                "metadata": [],
            }
        )
    return {
        **organization(partner),
        "phones": phones,
        "contacts": [],
        "locations": [],
        "programs": [],
        "organization_identifiers": [],
        "funding": [],
        "attributes": [],
        "metadata": [],
        "services": list(services),
    }


def eligibility_description(eligibility: Mapping[str, Any]) -> str:
    """Who the service is for, in words, from its eligibility rules."""
    parts = []
    sexes = eligibility.get("sexes")
    if sexes:
        parts.append("For " + " and ".join(SEX_WORDS.get(sex, sex) for sex in sexes))
    low, high = eligibility.get("min_age"), eligibility.get("max_age")
    if low is not None and high is not None:
        parts.append(f"aged {low} to {high}")
    elif low is not None:
        parts.append(f"aged {low} or over")
    elif high is not None:
        parts.append(f"aged {high} or under")
    vulnerabilities = eligibility.get("vulnerabilities_any")
    if vulnerabilities:
        parts.append("with at least one of these vulnerabilities: " + ", ".join(vulnerabilities))
    if not parts:
        return "All returnees."
    text = ", ".join(parts)
    if not text.startswith("For"):
        text = "Returnees " + text
    return text[0].upper() + text[1:] + "."


def service(
    service_row: Mapping[str, Any], partner: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A service as an HSDS list item (with its organization when given)."""
    eligibility = service_row.get("eligibility") or {}
    item = compact(
        {
            "id": str(service_row["id"]),
            "organization_id": str(service_row["partner_id"]),
            "name": service_row["name"],
            "status": SERVICE_STATUSES.get(service_row["status"], "inactive"),
            "eligibility_description": eligibility_description(eligibility),
            "minimum_age": eligibility.get("min_age"),
            "maximum_age": eligibility.get("max_age"),
            "last_modified": timestamp(service_row["updated_at"]),
        }
    )
    if partner is not None:
        item["organization"] = organization(partner)
    return item


def service_full(
    service_row: Mapping[str, Any],
    partner: Mapping[str, Any],
    *,
    area_names: Mapping[str, str],
    service_type: Mapping[str, Any],
) -> dict[str, Any]:
    """A service with its areas and its taxonomy term: `GET /services/{id}`, or `full=true`."""
    service_id = service_row["id"]
    areas = [
        compact(
            {
                "id": str(uuid.uuid5(service_id, f"area:{code}")),
                "service_id": str(service_id),
                "name": area_names.get(code, code),
                "description": f"Relais area {code}",
                "extent": code,
                "extent_type": "text",
                "attributes": [],
                "metadata": [],
            }
        )
        for code in service_row["areas"]
    ]
    attribute = {
        "id": str(uuid.uuid5(service_id, f"attribute:{service_row['service_type']}")),
        "link_id": str(service_id),
        "taxonomy_term_id": str(term_id(service_row["service_type"])),
        "link_type": "service_type",
        "link_entity": "service",
        "value": service_row["service_type"],
        "taxonomy_term": service_type_term(service_type),
        "metadata": [],
    }
    return {
        **service(service_row, partner),
        "phones": [],
        "schedules": [],
        "service_areas": areas,
        "service_at_locations": [],
        "languages": [],
        "funding": [],
        "cost_options": [],
        "required_documents": [],
        "contacts": [],
        "attributes": [attribute],
        "metadata": [],
    }


def page(contents: list[Any], *, total: int, page_number: int, per_page: int) -> dict[str, Any]:
    """HSDS's page wrapper around one page of a list."""
    total_pages = max(1, math.ceil(total / per_page)) if per_page else 1
    return {
        "total_items": total,
        "total_pages": total_pages,
        "page_number": page_number,
        "size": len(contents),
        "first_page": page_number == 1,
        "last_page": page_number >= total_pages,
        "empty": not contents,
        "contents": contents,
    }
