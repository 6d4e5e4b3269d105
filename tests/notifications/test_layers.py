"""The notifications service's layers: only its store (and its table definitions) touch SQL,
and nothing reaches into a library's private API."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "services" / "notifications"
WITHOUT_SQL = (
    "api.py",
    "app.py",
    "delivery_rules.py",
    "dispatcher.py",
    "fanout.py",
    "feed.py",
    "retry.py",
    "schemas.py",
    "sender.py",
    "signing.py",
    "ssrf.py",
    "webhook_docs.py",
    "worker.py",
)
PURE = ("delivery_rules.py", "retry.py", "signing.py")


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


@pytest.mark.parametrize("module", PURE)
def test_the_decisions_do_no_io(module):
    found = {
        name
        for name in imported(SERVICE / module)
        if name.split(".")[0] in ("aiohttp", "httpx", "asyncio", "socket", "services", "shared")
        and not name.startswith("services.notifications.retry")
    }
    assert not found, found


@pytest.mark.parametrize(
    "path", sorted(SERVICE.rglob("*.py")), ids=lambda p: str(p.relative_to(SERVICE))
)
def test_no_private_name_of_another_object_is_used(path):
    """`engine.sync_engine.pool._invalidate(...)` and the like: only `self` and `cls` have
    their private names used."""
    found = [
        f"{path.name}:{node.lineno} .{node.attr}"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]
    assert not found, found
