"""The referrals service's layers: only its store (and its table definitions) touch SQL."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "services" / "referrals"
WITHOUT_SQL = (
    "api.py",
    "app.py",
    "lifecycle.py",
    "projections.py",
    "rebuild.py",
    "reconciler.py",
    "resources.py",
    "routing.py",
    "routing_inputs.py",
    "schemas.py",
    "sweeper.py",
    "worker.py",
)


def imported(path: Path) -> set[str]:
    """Every module `path` imports, by its full dotted name."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("module", WITHOUT_SQL)
def test_the_module_imports_no_database_library(module):
    found = {
        name
        for name in imported(SERVICE / module)
        if name.split(".")[0] in ("sqlalchemy", "asyncpg")
    }
    assert not found, found


def test_every_module_outside_the_store_is_checked():
    assert {p.name for p in SERVICE.glob("*.py")} - set(WITHOUT_SQL) == {
        "__init__.py",
        "__main__.py",
        "tables.py",
    }


def test_the_api_does_not_reach_the_reconciler():
    assert not {n for n in imported(SERVICE / "api.py") if "reconciler" in n or "router" in n}
