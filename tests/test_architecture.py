"""The architecture contracts: no service imports another; `shared` imports no service; only
the stores import the database libraries; the referrals API does not reach into its worker."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "lint-imports"
    return subprocess.run(
        [str(exe), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_committed_code_keeps_the_contract():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("services/registry/app.py", "from services.referrals import app as _forbidden\n"),
        ("shared/db.py", "import services.notifications.app as _forbidden\n"),
        # SQL lives in the stores: an API module that imports the database library itself.
        ("services/registry/api/cases.py", "from sqlalchemy import text as _forbidden\n"),
        ("services/notifications/dispatcher.py", "import asyncpg as _forbidden\n"),
        ("services/referrals/api.py", "from services.referrals import reconciler as _forbidden\n"),
        # A module added later is checked as it comes.
        ("services/registry/new_module.py", "import asyncpg as _forbidden\n"),
        # Decisions live in pure modules: no store, no network.
        ("services/registry/plan.py", "from services.registry import store as _forbidden\n"),
        ("services/notifications/delivery_rules.py", "import aiohttp as _forbidden\n"),
    ],
    ids=[
        "service-to-service",
        "shared-to-service",
        "sql-in-api",
        "driver-in-worker",
        "api-to-worker",
        "sql-in-a-new-module",
        "store-in-a-pure-module",
        "network-in-a-pure-module",
    ],
)
def test_the_contract_fails_when_a_forbidden_import_is_added(tmp_path, module, line):
    copy = tmp_path / "repo"
    shutil.copytree(
        ROOT / "services", copy / "services", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(ROOT / "shared", copy / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    target = copy / module
    target.write_text(line + (target.read_text() if target.exists() else ""))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "BROKEN" in result.stdout or "broken" in result.stdout.lower()


def _private_names_of_others(path: Path) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]


def test_no_code_uses_the_private_names_of_another_object():
    """`engine.sync_engine.pool._invalidate(...)` and the like break on a library's upgrade:
    only `self` and `cls` have their private names used."""
    found = [
        hit
        for folder in ("services", "shared")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if "migrations" not in path.parts
        for hit in _private_names_of_others(path)
    ]
    assert not found, found


# SQL runs straight on asyncpg through `shared.db` (README, "Architecture"): the runtime code
# opens no SQLAlchemy session or engine. SQLAlchemy stays for the table definitions, for
# statements compiled once, and for Alembic's migrations.
SESSION_MODULES = ("sqlalchemy.ext.asyncio", "sqlalchemy.orm")


def _session_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    hits = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        hits += [
            f"{path.relative_to(ROOT)}:{node.lineno} {name}"
            for name in names
            if name.startswith(SESSION_MODULES)
        ]
    return hits


def _runtime_session_imports(root: Path) -> list[str]:
    return [
        hit
        for folder in ("services", "shared")
        for path in sorted((root / folder).rglob("*.py"))
        if "migrations" not in path.parts
        for hit in _session_imports(path)
    ]


def test_the_runtime_opens_no_sqlalchemy_session():
    assert _runtime_session_imports(ROOT) == []


def test_the_session_check_finds_a_session_import(tmp_path, monkeypatch):
    module = tmp_path / "services" / "registry" / "api" / "cases.py"
    module.parent.mkdir(parents=True)
    module.write_text("from sqlalchemy.ext.asyncio import AsyncSession\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _runtime_session_imports(tmp_path) == [
        "services/registry/api/cases.py:1 sqlalchemy.ext.asyncio"
    ]
