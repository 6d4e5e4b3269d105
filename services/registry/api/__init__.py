"""HTTP of the registry, one module per resource."""

from __future__ import annotations

from fastapi import APIRouter

from services.registry.api import (
    cases,
    directory,
    duplicates,
    erasure,
    hsds,
    partners,
    reference,
    retention,
    subject_access,
)

routers: list[APIRouter] = [
    partners.router,
    reference.router,
    directory.router,
    cases.router,
    duplicates.router,
    erasure.router,
    subject_access.router,
    retention.router,
    hsds.router,
]
