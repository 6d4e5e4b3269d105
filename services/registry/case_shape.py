"""The Case resource, defined once: its fields are those of `schemas_cases.CaseRead` (and
of `StepRead` for each step of its plan). The snapshot that `case.*` events carry, the JSON
that PostgreSQL builds for GET /cases and the response model all come from here. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.registry.schemas_cases import CaseRead, StepRead

# The steps' fields, in the order of `StepRead` (each is a column of `registry.plan_steps`).
STEP_FIELDS: tuple[str, ...] = tuple(StepRead.model_fields)

# Where the resource's field is stored under another name; `plan` is the case's steps.
_STORED_AS: dict[str, str | None] = {"return": "return_info", "plan": None}

# Each field of the Case resource, in the order of `CaseRead`, and the column of
# `registry.cases` it reads (None: the plan).
CASE_COLUMNS: dict[str, str | None] = {
    (field.alias or name): _STORED_AS.get(field.alias or name, field.alias or name)
    for name, field in CaseRead.model_fields.items()
}


def step_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A step of the plan, as the Case resource shows it."""
    return {name: row[name] for name in STEP_FIELDS}


def case_snapshot(case: Mapping[str, Any], steps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The Case resource of a stored case and its steps: what the owner reads and what
    `case.*` events carry."""
    snapshot: dict[str, Any] = {}
    for field, column in CASE_COLUMNS.items():
        if column is None:
            snapshot[field] = [step_view(s) for s in steps]
        else:
            value = case[column]
            snapshot[field] = list(value) if isinstance(value, list | tuple) else value
    return snapshot
