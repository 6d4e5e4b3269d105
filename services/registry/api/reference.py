"""HTTP of the reference data: areas and service types."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, UploadFile, status

from services.registry import reference
from services.registry.schemas import NO_NUL
from services.registry.schemas_reference import (
    AreaDetail,
    AreaImportResult,
    AreaRead,
    Dimension,
    ServiceTypeCreate,
    ServiceTypeRead,
)
from services.registry.store import reference as store
from shared.deps import Admin, Caller, DbDep
from shared.errors import FieldError, NotFound, Unprocessable
from shared.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from shared.problems import PROBLEM_BASE, Problem

router = APIRouter()

# A file with every row wrong would otherwise answer megabytes of errors.
MAX_REPORTED_ERRORS = 1000

AREA_CSV_EXAMPLE = """code,name,level,parent_code,code_list_version
ML-BKO,Bamako,district,ML,
ML-BKO-01,Commune I,commune,ML-BKO,
"""

BAD_FILE_EXAMPLE = {
    "type": PROBLEM_BASE + "validation",
    "title": "Invalid request",
    "status": 422,
    "detail": "2 problems on lines 3, 7; nothing was imported.",
    "errors": [
        {
            "field": "file.line[3].parent_code",
            "message": "unknown parent 'ML-99': neither in the file nor known",
            "type": "unknown_parent",
        },
        {"field": "file.line[7].name", "message": "name is required", "type": "missing"},
    ],
}


@router.get(
    "/areas",
    tags=["reference"],
    summary="List areas (every key)",
    description="The areas of the code list, ordered by code. `parent` keeps the direct "
    "children of one area (e.g. `ML-BKO` for Bamako's communes); `level` keeps one level "
    "(`country`, `region`, `district`, `cercle`, `commune`, ...). Paginated with `limit` and "
    "`cursor`.",
)
async def list_areas(
    _caller: Caller,
    db: DbDep,
    parent: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=NO_NUL,
            description="Only the direct children of this area code.",
        ),
    ] = None,
    level: Annotated[
        str | None,
        Query(max_length=200, pattern=NO_NUL, description="Only areas of this level."),
    ] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[AreaRead]:
    async with db.connection() as conn:
        rows, next_cursor = await store.list_areas(
            conn, parent=parent, level=level, limit=limit, cursor=cursor
        )
    return Page[AreaRead](items=[AreaRead.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/areas/{code}",
    tags=["reference"],
    summary="Get an area with its ancestors (every key)",
    description="One area and the areas above it, from the root (the country) down.",
    responses={404: {"model": Problem, "description": "No area with this code."}},
)
async def get_area(
    code: Annotated[
        str, Path(description="The area's code.", pattern=NO_NUL, examples=["ML-BKO-01"])
    ],
    _caller: Caller,
    db: DbDep,
) -> AreaDetail:
    async with db.connection() as conn:
        row = await store.get_area(conn, code=code)
    if row is None:
        raise NotFound(f"No area with code {code!r}.")
    return AreaDetail.model_validate(row)


@router.post(
    "/areas/import",
    tags=["reference"],
    summary="Import a code list of areas from CSV (admin)",
    description="Upload a UTF-8 CSV file with the header "
    "`code,name,level,parent_code,code_list_version` (the last column may be left empty or "
    "out: the form field `code_list_version` is set on every row). `parent_code` is empty for "
    "a root, or the code of an area in the file or already loaded. Areas are added, or "
    "updated when their code exists; none are deleted.\n\n"
    "The file is checked as a whole: if any row is wrong, nothing is imported and the answer "
    "names each problem as `file.line[<n>].<column>` (the header is line 1). Files are "
    "limited to 1 MiB.\n\n"
    "Example file:\n\n```\n" + AREA_CSV_EXAMPLE + "```",
    responses={
        422: {
            "model": Problem,
            "description": "The file has bad rows (nothing was imported) or a field is missing.",
            "content": {"application/problem+json": {"example": BAD_FILE_EXAMPLE}},
        },
        413: {"model": Problem, "description": "The file is larger than 1 MiB."},
    },
)
async def import_areas(
    file: Annotated[
        UploadFile, File(description="The CSV file (UTF-8, comma-separated, with a header).")
    ],
    code_list_version: Annotated[
        str,
        Form(
            min_length=1,
            max_length=reference.CODE_LIST_VERSION_MAX,
            description="The version of the code list, set on every imported row.",
            examples=["ml-iso3166-2+cercles-2016"],
        ),
    ],
    _admin: Admin,
    db: DbDep,
) -> AreaImportResult:
    data = await file.read()
    version = code_list_version.strip()
    if not version:
        raise Unprocessable(
            "code_list_version is empty.",
            errors=[
                FieldError(
                    field="body.code_list_version", message="must not be blank", type="missing"
                )
            ],
        )
    try:
        async with db.transaction() as conn:
            imported = await reference.import_areas(conn, data=data, code_list_version=version)
    except reference.ReferenceDataError as exc:
        raise _bad_file(exc) from None
    return AreaImportResult(imported=imported, code_list_version=version)


def _bad_file(exc: reference.ReferenceDataError) -> Unprocessable:
    errors = [
        FieldError(
            field=f"file.line[{e.line}]" + (f".{e.column}" if e.column else ""),
            message=e.message,
            type=e.type,
        )
        for e in exc.errors
    ]
    shown = errors[:MAX_REPORTED_ERRORS]
    more = f" (the first {len(shown)} are listed)" if len(errors) > len(shown) else ""
    return Unprocessable(f"{exc}; nothing was imported{more}.", errors=shown)


@router.get(
    "/service-types",
    tags=["reference"],
    summary="List service types (every key)",
    description="The taxonomy of services, ordered by code; `dimension` keeps one of the "
    "four dimensions of reintegration. Paginated with `limit` and `cursor`.",
)
async def list_service_types(
    _caller: Caller,
    db: DbDep,
    dimension: Annotated[
        Dimension | None, Query(description="Only service types of this dimension.")
    ] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[ServiceTypeRead]:
    async with db.connection() as conn:
        rows, next_cursor = await store.list_service_types(
            conn, dimension=dimension, limit=limit, cursor=cursor
        )
    return Page[ServiceTypeRead](
        items=[ServiceTypeRead.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.post(
    "/service-types",
    tags=["reference"],
    status_code=status.HTTP_201_CREATED,
    summary="Add a service type (admin)",
    description="Adds a code to the taxonomy, so that partners can offer the service and "
    "plans can ask for it. A code that already exists answers 409.",
    responses={409: {"model": Problem, "description": "A service type has this code."}},
)
async def create_service_type(body: ServiceTypeCreate, _admin: Admin, db: DbDep) -> ServiceTypeRead:
    async with db.transaction() as conn:
        row = await store.create_service_type(conn, values=body.model_dump())
    return ServiceTypeRead.model_validate(row)
