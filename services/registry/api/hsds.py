"""HTTP of the directory as Open Referral's HSDS 3.0 API (SPEC 11.1), under `/hsds`.

The same rows as `/partners` and `/services`, in HSDS's shapes (`services.registry.hsds`):
any key reads it, and no key is needed when `RELAIS_HSDS_PUBLIC=true` (it holds no personal
data). Lists are HSDS pages: `page` (from 1) and `per_page` (1 to 500, default 50), the
filters HSDS names, and the page wrapper with the filter's totals.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials

from services.registry import hsds
from services.registry.store import hsds as store
from shared.auth import Principal
from shared.db import Connection
from shared.deps import DbDep, bearer_scheme, get_caller
from shared.errors import NotFound
from shared.problems import Problem

router = APIRouter(prefix="/hsds", tags=["hsds"])


async def hsds_reader(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal | None:
    """Any valid key; none at all when the HSDS view is public (a key sent is still checked)."""
    if credentials is None and request.app.state.settings.hsds_public:
        return None
    return await get_caller(request, credentials)


Reader = Annotated[Principal | None, Depends(hsds_reader)]
PageQuery = Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1.")]
PerPageQuery = Annotated[
    int,
    Query(ge=1, le=hsds.MAX_PER_PAGE, description="Items per page (default 50, at most 500)."),
]
SearchQuery = Annotated[
    str | None,
    Query(max_length=200, description="Text to find in names (case-insensitive)."),
]
FullQuery = Annotated[bool, Query(description="Fully nested items, as the `/{id}` answers.")]

NOT_FOUND = {404: {"model": Problem, "description": "No such resource."}}


def _hsds_response(
    description: str, schema: str, name: str = "HsdsResource"
) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": f"{description} (validated against HSDS 3.0's `{schema}`).",
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    }


def _page_response(item_schema: str) -> dict[int | str, dict[str, Any]]:
    return _hsds_response("An HSDS page of items", item_schema, "HsdsPage")


@router.get(
    "/",
    summary="This API and its relationship with HSDS",
    description="The HSDS version this API serves (3.0) and where its OpenAPI document is.",
    response_class=JSONResponse,
    responses=_hsds_response("The HSDS version and the OpenAPI document's URL", "/", "HsdsRoot"),
)
async def meta(request: Request, _reader: Reader) -> JSONResponse:
    return JSONResponse(
        {
            "version": hsds.HSDS_VERSION,
            "profile": "https://docs.openreferral.org/en/latest/hsds/",
            "openapi_url": str(request.url_for("openapi")),
        }
    )


async def _service_types_of(
    conn: Connection, term: UUID | None, taxonomy: UUID | None
) -> list[str] | None:
    """The service-type codes a taxonomy filter keeps; None: no filter."""
    if taxonomy is not None and taxonomy != hsds.TAXONOMY_ID:
        return []
    if term is None:
        return None
    types = await store.all_service_types(conn)
    return [
        t["code"] for t in types if term in (hsds.term_id(t["code"]), hsds.term_id(t["dimension"]))
    ]


async def _full_services(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not rows:
        return []
    partners = await store.partners_by_id(conn, ids=[r["partner_id"] for r in rows])
    types = {t["code"]: t for t in await store.all_service_types(conn)}
    names = await store.area_names(conn, codes=[code for r in rows for code in r["areas"]])
    return [
        hsds.service_full(
            r, partners[r["partner_id"]], area_names=names, service_type=types[r["service_type"]]
        )
        for r in rows
    ]


@router.get(
    "/services",
    summary="Services (HSDS)",
    description="The directory's services as HSDS list items (each with its organization), "
    "ordered by name; `full=true` nests each fully (areas, taxonomy term). Filters: `search` "
    "(the service's or partner's name), `taxonomy_term_id` (a service type, or a dimension "
    "for all its types), `taxonomy_id`, `organization_id`, `modified_after` (at or after).",
    response_class=JSONResponse,
    responses=_page_response("compiled/service_list.json (service.json with full=true)"),
)
async def list_services(
    _reader: Reader,
    db: DbDep,
    page: PageQuery = 1,
    per_page: PerPageQuery = hsds.DEFAULT_PER_PAGE,
    search: SearchQuery = None,
    taxonomy_term_id: Annotated[
        UUID | None, Query(description="A term of /hsds/taxonomy_terms.")
    ] = None,
    taxonomy_id: Annotated[UUID | None, Query(description="The taxonomy's id.")] = None,
    organization_id: Annotated[UUID | None, Query(description="A partner's id.")] = None,
    modified_after: Annotated[
        datetime | None, Query(description="Changed at or after this time (ISO 8601).")
    ] = None,
    full: FullQuery = False,
) -> JSONResponse:
    async with db.connection() as conn:
        service_types = await _service_types_of(conn, taxonomy_term_id, taxonomy_id)
        filters = {
            "search": search,
            "organization_id": organization_id,
            "service_types": service_types,
            "modified_after": modified_after,
        }
        if service_types == []:
            rows, total = [], 0
        else:
            rows, total = await store.service_page(
                conn, **filters, limit=per_page, offset=(page - 1) * per_page
            )
        if full:
            contents = await _full_services(conn, rows)
        else:
            partners = await store.partners_by_id(conn, ids=[r["partner_id"] for r in rows])
            contents = [hsds.service(r, partners[r["partner_id"]]) for r in rows]
    return JSONResponse(hsds.page(contents, total=total, page_number=page, per_page=per_page))


@router.get(
    "/services/{service_id}",
    summary="One service, fully nested (HSDS)",
    description="A service with its organization, its service areas (one per covered area: "
    "`extent` the area code) and its service type as an attribute with its taxonomy term.",
    response_class=JSONResponse,
    responses={**_hsds_response("The service", "compiled/service.json"), **NOT_FOUND},
)
async def get_service(service_id: UUID, _reader: Reader, db: DbDep) -> JSONResponse:
    async with db.connection() as conn:
        row = await store.get_service(conn, service_id=service_id)
        if row is None:
            raise NotFound("No such service.")
        [body] = await _full_services(conn, [row])
    return JSONResponse(body)


@router.get(
    "/organizations",
    summary="Organizations: the partners (HSDS)",
    description="The partners as HSDS organizations, ordered by name; `search` in the name "
    "or the acronym; `full=true` adds phones and services (`full_service` nests them fully).",
    response_class=JSONResponse,
    responses=_page_response("compiled/organization_list.json (organization.json with full)"),
)
async def list_organizations(
    _reader: Reader,
    db: DbDep,
    page: PageQuery = 1,
    per_page: PerPageQuery = hsds.DEFAULT_PER_PAGE,
    search: SearchQuery = None,
    full: FullQuery = False,
    full_service: Annotated[
        bool, Query(description="With `full`, each organization's services fully nested.")
    ] = False,
) -> JSONResponse:
    async with db.connection() as conn:
        rows, total = await store.partner_page(
            conn, search=search, limit=per_page, offset=(page - 1) * per_page
        )
        if full:
            contents = await _full_organizations(conn, rows, full_service=full_service)
        else:
            contents = [hsds.organization(r) for r in rows]
    return JSONResponse(hsds.page(contents, total=total, page_number=page, per_page=per_page))


async def _full_organizations(
    conn: Connection, rows: list[dict[str, Any]], *, full_service: bool
) -> list[dict[str, Any]]:
    services = await store.services_of(conn, partner_ids=[r["id"] for r in rows])
    result = []
    for partner in rows:
        own = services.get(partner["id"], [])
        nested = await _full_services(conn, own) if full_service else [hsds.service(s) for s in own]
        result.append(hsds.organization_full(partner, nested))
    return result


@router.get(
    "/organizations/{organization_id}",
    summary="One organization with its services (HSDS)",
    description="A partner with its contact phone and its services (fully nested with "
    "`full_service=true`).",
    response_class=JSONResponse,
    responses={**_hsds_response("The partner", "compiled/organization.json"), **NOT_FOUND},
)
async def get_organization(
    organization_id: UUID,
    _reader: Reader,
    db: DbDep,
    full_service: Annotated[bool, Query(description="Its services fully nested.")] = False,
) -> JSONResponse:
    async with db.connection() as conn:
        partners = await store.partners_by_id(conn, ids=[organization_id])
        if organization_id not in partners:
            raise NotFound("No such organization.")
        [body] = await _full_organizations(
            conn, [partners[organization_id]], full_service=full_service
        )
    return JSONResponse(body)


@router.get(
    "/taxonomies",
    summary="Taxonomies: the service types (HSDS)",
    description="One taxonomy: Relais's service types (`uri` `urn:relais:service-types`).",
    response_class=JSONResponse,
    responses=_page_response("taxonomy.json"),
)
async def list_taxonomies(
    _reader: Reader,
    page: PageQuery = 1,
    per_page: PerPageQuery = hsds.DEFAULT_PER_PAGE,
    search: SearchQuery = None,
) -> JSONResponse:
    taxonomies = [hsds.taxonomy()]
    if search:
        taxonomies = [t for t in taxonomies if search.lower() in t["name"].lower()]
    return JSONResponse(_sliced(taxonomies, page=page, per_page=per_page))


@router.get(
    "/taxonomies/{taxonomy_id}",
    summary="The service-type taxonomy (HSDS)",
    description="The service-type taxonomy by its id (the only one).",
    response_class=JSONResponse,
    responses={**_hsds_response("The taxonomy", "taxonomy.json"), **NOT_FOUND},
)
async def get_taxonomy(taxonomy_id: UUID, _reader: Reader) -> JSONResponse:
    if taxonomy_id != hsds.TAXONOMY_ID:
        raise NotFound("No such taxonomy.")
    return JSONResponse(hsds.taxonomy())


@router.get(
    "/taxonomy_terms",
    summary="Taxonomy terms: the dimensions and the service types (HSDS)",
    description="The four dimensions and, under each (`parent_id`), its service types "
    "(`code` the Relais code); `top_only` for the dimensions, `parent_id` for one's types.",
    response_class=JSONResponse,
    responses=_page_response("taxonomy_term.json"),
)
async def list_taxonomy_terms(
    _reader: Reader,
    db: DbDep,
    page: PageQuery = 1,
    per_page: PerPageQuery = hsds.DEFAULT_PER_PAGE,
    search: SearchQuery = None,
    taxonomy_id: Annotated[UUID | None, Query(description="The taxonomy's id.")] = None,
    top_only: Annotated[bool, Query(description="Only the dimensions.")] = False,
    parent_id: Annotated[UUID | None, Query(description="Only the children of this term.")] = None,
) -> JSONResponse:
    async with db.connection() as conn:
        terms = hsds.taxonomy_terms(await store.all_service_types(conn))
    if taxonomy_id is not None and taxonomy_id != hsds.TAXONOMY_ID:
        terms = []
    if top_only:
        terms = [t for t in terms if "parent_id" not in t]
    if parent_id is not None:
        terms = [t for t in terms if t.get("parent_id") == str(parent_id)]
    if search:
        needle = search.lower()
        terms = [t for t in terms if needle in t["name"].lower() or needle in t["code"].lower()]
    return JSONResponse(_sliced(terms, page=page, per_page=per_page))


@router.get(
    "/taxonomy_terms/{term_id}",
    summary="One taxonomy term (HSDS)",
    description="A dimension or a service type by its term id (a name-based uuid of its code).",
    response_class=JSONResponse,
    responses={**_hsds_response("The term", "taxonomy_term.json"), **NOT_FOUND},
)
async def get_taxonomy_term(term_id: UUID, _reader: Reader, db: DbDep) -> JSONResponse:
    async with db.connection() as conn:
        terms = hsds.taxonomy_terms(await store.all_service_types(conn))
    for term in terms:
        if term["id"] == str(term_id):
            return JSONResponse(term)
    raise NotFound("No such taxonomy term.")


@router.get(
    "/service_at_locations",
    summary="Services at locations: none (HSDS)",
    description="Always empty: Relais describes where a service is offered by the areas it "
    "covers (`service_areas` of each service), not by locations.",
    response_class=JSONResponse,
    responses=_page_response("compiled/service_at_location_list.json"),
)
async def list_service_at_locations(
    _reader: Reader,
    page: PageQuery = 1,
    per_page: PerPageQuery = hsds.DEFAULT_PER_PAGE,
) -> JSONResponse:
    return JSONResponse(hsds.page([], total=0, page_number=page, per_page=per_page))


def _sliced(items: list[dict[str, Any]], *, page: int, per_page: int) -> dict[str, Any]:
    start = (page - 1) * per_page
    return hsds.page(
        items[start : start + per_page], total=len(items), page_number=page, per_page=per_page
    )


# The view's shapes in the OpenAPI document: named, with the fields every HSDS object of its
# kind has; the full shapes are HSDS 3.0's own schemas, which every answer validates against.
HSDS_SCHEMAS: dict[str, dict[str, Any]] = {
    "HsdsRoot": {
        "type": "object",
        "title": "HsdsRoot",
        "properties": {
            "version": {"type": "string", "examples": ["3.0"]},
            "profile": {"type": "string", "format": "uri"},
            "openapi_url": {"type": "string", "format": "uri"},
        },
    },
    "HsdsResource": {
        "type": "object",
        "title": "HsdsResource",
        "description": "An HSDS 3.0 object (service, organization, taxonomy, taxonomy term) as "
        "Open Referral's schema of its kind defines it.",
        "required": ["id"],
        "properties": {"id": {"type": "string", "format": "uuid"}},
    },
    "HsdsPage": {
        "type": "object",
        "title": "HsdsPage",
        "description": "HSDS 3.0's page of a list.",
        "properties": {
            "total_items": {"type": "integer"},
            "total_pages": {"type": "integer"},
            "page_number": {"type": "integer"},
            "size": {"type": "integer"},
            "first_page": {"type": "boolean"},
            "last_page": {"type": "boolean"},
            "empty": {"type": "boolean"},
            "contents": {"type": "array", "items": {"$ref": "#/components/schemas/HsdsResource"}},
        },
    },
}
