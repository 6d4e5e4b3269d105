"""Reference data: areas and service types (parsing, validation, loading).

The parsing functions are pure: they take the bytes of a CSV file and return the validated
rows, or raise `ReferenceDataError` listing every problem with its line number (the header
is line 1). The loading functions below them parse and write through the store
(`store/reference.py`, the only place of the queries); the caller owns the transaction.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

import shared
from services.registry.store import Connection
from services.registry.store import reference as store

log = structlog.get_logger("relais.registry.reference")

SEED_DIR = Path(shared.__file__).parent / "data"
AREAS_SEED = "mali-admin-areas.csv"
SERVICE_TYPES_SEED = "service-types.csv"

AREA_COLUMNS = ("code", "name", "level", "parent_code", "code_list_version")
SERVICE_TYPE_COLUMNS = ("code", "name", "dimension", "description")
DIMENSIONS = ("economic", "social", "psychosocial", "immediate")
# How SPEC 5.3 ranks coverage; any other level sits one below its parent.
LEVEL_DEPTHS = {"country": 0, "region": 1, "district": 1, "cercle": 2, "commune": 3}

AREA_CODE_MAX = 32
SERVICE_TYPE_CODE_MAX = 64
NAME_MAX = 200
LEVEL_MAX = 32
CODE_LIST_VERSION_MAX = 100
DESCRIPTION_MAX = 2000
# Codes appear in URL paths (`/areas/{code}`): letters, digits and `.`, `_`, `-` only.
CODE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
CODE_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit"


# --- parsing (pure) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowError:
    """One problem in a CSV file: its line (header = 1), the column ("" for the whole line)."""

    line: int
    column: str
    message: str
    type: str


class ReferenceDataError(ValueError):
    """A CSV file that cannot be loaded; `errors` lists every problem, by line."""

    def __init__(self, errors: Sequence[RowError]) -> None:
        self.errors = sorted(errors, key=lambda e: e.line)
        lines = sorted({e.line for e in self.errors})
        shown = ", ".join(str(n) for n in lines[:20]) + (", ..." if len(lines) > 20 else "")
        super().__init__(
            f"{len(self.errors)} problem{'s' if len(self.errors) != 1 else ''} "
            f"on line{'s' if len(lines) != 1 else ''} {shown}"
        )

    @property
    def lines(self) -> list[int]:
        """The line numbers with at least one problem, in order."""
        return sorted({e.line for e in self.errors})


@dataclass(frozen=True, slots=True)
class Area:
    """An area as stored: `path` holds the ancestor codes from the root, then its own."""

    code: str
    name: str
    level: str
    parent_code: str | None
    code_list_version: str
    depth: int
    path: tuple[str, ...]

    def values(self) -> dict[str, Any]:
        """The row for `hub.areas`."""
        return {
            "code": self.code,
            "name": self.name,
            "level": self.level,
            "parent_code": self.parent_code,
            "code_list_version": self.code_list_version,
            "depth": self.depth,
            "path": list(self.path),
        }


@dataclass(frozen=True, slots=True)
class ParsedAreas:
    """The file's areas, and the known areas outside the file whose depth or path it changes."""

    rows: list[Area]
    rederived: list[Area]


@dataclass(frozen=True, slots=True)
class ServiceType:
    """A service type as stored."""

    code: str
    name: str
    dimension: str
    description: str

    def values(self) -> dict[str, Any]:
        """The row for `hub.service_types`."""
        return {
            "code": self.code,
            "name": self.name,
            "dimension": self.dimension,
            "description": self.description,
        }


@dataclass(frozen=True, slots=True)
class _Record:
    line: int
    values: dict[str, str]


def _decode(data: bytes, errors: list[RowError]) -> str:
    """The text of the file; every line that is not UTF-8 is reported and read with U+FFFD."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            errors.append(
                RowError(
                    number,
                    "",
                    f"not valid UTF-8 (byte {exc.start + 1} of the line); save the file as UTF-8",
                    "encoding",
                )
            )
    return data.decode("utf-8", errors="replace").removeprefix("\ufeff")


def _read_csv(
    data: bytes, columns: Sequence[str], *, optional: Sequence[str], errors: list[RowError]
) -> list[_Record]:
    """The records of a CSV file with the given columns (stripped; unknown columns ignored)."""
    content = _decode(data, errors)
    reader = csv.reader(io.StringIO(content, newline=""))
    records: list[_Record] = []
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            errors.append(
                RowError(1, "", f"the file has no header; expected {','.join(columns)}", "header")
            )
            return []
        names = [h.strip().lower() for h in header]
        for name in sorted({n for n in names if n and names.count(n) > 1}):
            errors.append(RowError(1, name, "column given more than once", "duplicate_column"))
        missing = [c for c in columns if c not in names and c not in optional]
        for column in missing:
            errors.append(RowError(1, column, "missing column in the header", "missing_column"))
        if missing:
            return []
        position = {c: names.index(c) for c in columns if c in names}
        previous = reader.line_num
        for row in reader:
            line, previous = previous + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            extra = [cell for cell in row[len(names) :] if cell.strip()]
            if extra:
                errors.append(
                    RowError(
                        line,
                        "",
                        f"{len(row)} fields where the header has {len(names)}",
                        "too_many_fields",
                    )
                )
            values = {c: (row[i].strip() if i < len(row) else "") for c, i in position.items()}
            records.append(_Record(line, values))
    except csv.Error as exc:
        errors.append(RowError(reader.line_num + 1, "", f"unreadable CSV: {exc}", "csv"))
    return records


def _check_text(
    record: _Record,
    column: str,
    *,
    max_length: int,
    required: bool,
    errors: list[RowError],
) -> str | None:
    """The stripped value of a column, or None after reporting what is wrong with it."""
    value = record.values.get(column, "")
    if not value:
        if required:
            errors.append(RowError(record.line, column, f"{column} is required", "missing"))
            return None
        return ""
    if len(value) > max_length:
        errors.append(
            RowError(
                record.line,
                column,
                f"{column} is {len(value)} characters long; at most {max_length}",
                "too_long",
            )
        )
        return None
    return value


def _check_code(record: _Record, column: str, *, max_length: int, errors: list[RowError]) -> bool:
    value = record.values.get(column, "")
    if value and len(value) <= max_length and not CODE_PATTERN.fullmatch(value):
        errors.append(
            RowError(record.line, column, f"{column} may only hold {CODE_RULE}", "invalid_code")
        )
        return False
    return True


def _check_unique(
    record: _Record, code: str, first_lines: dict[str, int], errors: list[RowError]
) -> bool:
    if code in first_lines:
        errors.append(
            RowError(
                record.line,
                "code",
                f"duplicate code {code!r}, first given on line {first_lines[code]}",
                "duplicate",
            )
        )
        return False
    first_lines[code] = record.line
    return True


def parse_areas(
    data: bytes,
    *,
    known: Iterable[Area] = (),
    code_list_version: str | None = None,
) -> ParsedAreas:
    """Validate an areas CSV and compute each area's depth and path.

    `known` are the areas already stored: a parent may be one of them, and a row of the file
    replaces the known area of the same code. `code_list_version`, when given, is set on
    every row (the column may then be absent or empty).
    """
    errors: list[RowError] = []
    # parent_code stays required in the header: without it every area would become a root.
    optional = ("code_list_version",) if code_list_version else ()
    records = _read_csv(data, AREA_COLUMNS, optional=optional, errors=errors)

    first_lines: dict[str, int] = {}
    drafts: dict[str, tuple[_Record, dict[str, Any]]] = {}
    for record in records:
        code = _check_text(record, "code", max_length=AREA_CODE_MAX, required=True, errors=errors)
        code_ok = _check_code(record, "code", max_length=AREA_CODE_MAX, errors=errors)
        name = _check_text(record, "name", max_length=NAME_MAX, required=True, errors=errors)
        level = _check_text(record, "level", max_length=LEVEL_MAX, required=True, errors=errors)
        parent = _check_text(
            record, "parent_code", max_length=AREA_CODE_MAX, required=False, errors=errors
        )
        version = code_list_version or _check_text(
            record,
            "code_list_version",
            max_length=CODE_LIST_VERSION_MAX,
            required=True,
            errors=errors,
        )
        if code is None or not code_ok or not _check_unique(record, code, first_lines, errors):
            continue
        draft = {
            "code": code,
            "name": name,
            "level": level.lower() if level else None,
            "parent_code": parent or None,
            "code_list_version": version,
        }
        drafts[code] = (record, draft)

    stored = {area.code: area for area in known}
    tree: dict[str, tuple[str | None, str | None]] = {
        code: (area.parent_code, area.level) for code, area in stored.items()
    }
    for code, (record, draft) in drafts.items():
        if record.values.get("parent_code") and draft["parent_code"] is None:
            # An over-long parent_code was reported; keep the row out of the tree's checks.
            tree[code] = (None, draft["level"])
        else:
            tree[code] = (draft["parent_code"], draft["level"])
    placed, cycles, orphans = _place(tree)

    for code, (record, draft) in drafts.items():
        if code in orphans:
            errors.append(
                RowError(
                    record.line,
                    "parent_code",
                    f"unknown parent {draft['parent_code']!r}: neither in the file nor known",
                    "unknown_parent",
                )
            )
        elif code in cycles:
            errors.append(
                RowError(
                    record.line,
                    "parent_code",
                    "cycle: " + " -> ".join(cycles[code]),
                    "cycle",
                )
            )
    if errors:
        raise ReferenceDataError(errors)

    rows: list[Area] = []
    for code, (_record, draft) in drafts.items():
        depth, path = placed[code]
        rows.append(Area(**draft, depth=depth, path=path))
    rederived = [
        Area(
            code=area.code,
            name=area.name,
            level=area.level,
            parent_code=area.parent_code,
            code_list_version=area.code_list_version,
            depth=placed[code][0],
            path=placed[code][1],
        )
        for code, area in stored.items()
        if code not in drafts and code in placed and placed[code] != (area.depth, area.path)
    ]
    return ParsedAreas(rows=rows, rederived=rederived)


def area_depth(level: str | None, parent_depth: int | None) -> int:
    """An area's depth: by level as SPEC 5.3 ranks coverage, else one below its parent."""
    if level is not None and level in LEVEL_DEPTHS:
        return LEVEL_DEPTHS[level]
    return 0 if parent_depth is None else parent_depth + 1


def _place(
    tree: Mapping[str, tuple[str | None, str | None]],
) -> tuple[dict[str, tuple[int, tuple[str, ...]]], dict[str, list[str]], set[str]]:
    """Depth and path of every area whose ancestry reaches a root.

    Also answers the areas on a cycle (with the cycle, for the message) and the areas whose
    own parent is missing; their descendants are left unplaced, without a reproach.
    """
    placed: dict[str, tuple[int, tuple[str, ...]]] = {}
    cycles: dict[str, list[str]] = {}
    orphans: set[str] = set()
    unplaceable: set[str] = set()
    for start in tree:
        chain: list[str] = []
        on_chain: set[str] = set()
        code: str | None = start
        broken = False
        while code is not None and code not in placed:
            if code in unplaceable:
                broken = True
                break
            if code in on_chain:
                loop = chain[chain.index(code) :]
                for i, member in enumerate(loop):
                    cycles[member] = [*loop[i:], *loop[:i], member]
                broken = True
                break
            if code not in tree:
                orphans.add(chain[-1])
                broken = True
                break
            chain.append(code)
            on_chain.add(code)
            code = tree[code][0]
        if broken:
            unplaceable.update(chain)
            continue
        # Reached a root or a placed ancestor: place the chain from the top down.
        for member in reversed(chain):
            parent = tree[member][0]
            parent_depth, parent_path = placed[parent] if parent is not None else (None, ())
            placed[member] = (area_depth(tree[member][1], parent_depth), (*parent_path, member))
    return placed, cycles, orphans


def parse_service_types(data: bytes) -> list[ServiceType]:
    """Validate a service-types CSV; every row's problems are reported at once."""
    errors: list[RowError] = []
    records = _read_csv(data, SERVICE_TYPE_COLUMNS, optional=(), errors=errors)
    first_lines: dict[str, int] = {}
    rows: list[ServiceType] = []
    for record in records:
        code = _check_text(
            record, "code", max_length=SERVICE_TYPE_CODE_MAX, required=True, errors=errors
        )
        code_ok = _check_code(record, "code", max_length=SERVICE_TYPE_CODE_MAX, errors=errors)
        name = _check_text(record, "name", max_length=NAME_MAX, required=True, errors=errors)
        dimension = _check_text(record, "dimension", max_length=32, required=True, errors=errors)
        if dimension is not None:
            dimension = dimension.lower()
            if dimension not in DIMENSIONS:
                errors.append(
                    RowError(
                        record.line,
                        "dimension",
                        f"unknown dimension {dimension!r}; one of {', '.join(DIMENSIONS)}",
                        "unknown_dimension",
                    )
                )
                dimension = None
        description = _check_text(
            record, "description", max_length=DESCRIPTION_MAX, required=False, errors=errors
        )
        unique = code is not None and _check_unique(record, code, first_lines, errors)
        if code and code_ok and unique and name and dimension and description is not None:
            rows.append(ServiceType(code, name, dimension, description))
    if errors:
        raise ReferenceDataError(errors)
    return rows


# --- loading: the parsed rows through the store ----------------------------------------------


async def _store_areas(
    conn: Connection, data: bytes, *, code_list_version: str | None
) -> list[Area]:
    # One writer of the tree at a time: the check against the known areas must hold.
    await store.lock_areas(conn)
    known = [
        Area(
            code=r["code"],
            name=r["name"],
            level=r["level"],
            parent_code=r["parent_code"],
            code_list_version=r["code_list_version"],
            depth=r["depth"],
            path=tuple(r["path"]),
        )
        for r in await store.all_areas(conn)
    ]
    parsed = await asyncio.to_thread(
        parse_areas, data, known=known, code_list_version=code_list_version
    )
    await store.upsert_areas(conn, rows=[a.values() for a in (*parsed.rows, *parsed.rederived)])
    return parsed.rows


async def load_seed_data(conn: Connection) -> None:
    """Load the project's copies of the areas and service types, idempotently."""
    area_data = await asyncio.to_thread((SEED_DIR / AREAS_SEED).read_bytes)
    type_data = await asyncio.to_thread((SEED_DIR / SERVICE_TYPES_SEED).read_bytes)
    loaded = await _store_areas(conn, area_data, code_list_version=None)
    types = parse_service_types(type_data)
    await store.upsert_service_types(conn, rows=[t.values() for t in types])
    log.info("reference_data_loaded", areas=len(loaded), service_types=len(types))


async def import_areas(conn: Connection, *, data: bytes, code_list_version: str) -> int:
    """Load an areas CSV (all rows or, on `ReferenceDataError`, none); the count of its rows.

    Parents may be areas already stored; `code_list_version` is set on every row. Run it in
    one transaction: a refused file writes nothing.
    """
    rows = await _store_areas(conn, data, code_list_version=code_list_version)
    log.info("areas_imported", rows=len(rows), code_list_version=code_list_version)
    return len(rows)
