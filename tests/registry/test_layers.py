"""The registry's layers: only its store (and its table definitions) touch SQL, and its
pure modules reach neither the store nor any I/O."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.referrals.test_layers import imported

SERVICE = Path(__file__).resolve().parents[2] / "services" / "registry"
WITHOUT_SQL = sorted(
    str(p.relative_to(SERVICE))
    for p in SERVICE.rglob("*.py")
    if p.relative_to(SERVICE).parts[0] != "store" and p.name != "tables.py"
)
PURE = ("case_rules.py", "case_shape.py", "matching.py", "plan.py")


@pytest.mark.parametrize("module", WITHOUT_SQL)
def test_the_module_imports_no_database_library(module):
    found = {
        name
        for name in imported(SERVICE / module)
        if name.split(".")[0] in ("sqlalchemy", "asyncpg")
    }
    assert not found, found


def test_the_api_the_worker_and_the_actions_are_among_the_modules_checked():
    assert {
        "api/cases.py",
        "api/duplicates.py",
        "api/partners.py",
        "app.py",
        "case_actions.py",
        "projector.py",
        "reference.py",
        "worker.py",
        *PURE,
    } <= set(WITHOUT_SQL)


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_reaches_no_store_and_no_io(module):
    found = {
        name
        for name in imported(SERVICE / module)
        if name.startswith(("services.registry.store", "shared.eventlog", "shared.db"))
        or name.split(".")[0] in ("structlog", "httpx", "fastapi")
    }
    assert not found, found
