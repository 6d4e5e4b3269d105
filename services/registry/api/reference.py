"""HTTP of the reference data: areas and service types."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
