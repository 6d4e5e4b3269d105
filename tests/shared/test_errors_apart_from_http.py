"""The domain's errors import no framework: an import-linter contract says so and bites, and
importing them loads none."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = ("fastapi", "starlette", "pydantic", "sqlalchemy", "asyncpg")
CONTRACT = "shared.errors imports no framework"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_contract_fails_when_the_errors_import_a_framework(tmp_path, framework):
    copy = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "services", copy / "services", ignore=ignore)
    shutil.copytree(ROOT / "shared", copy / "shared", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    errors = copy / "shared" / "errors.py"
    errors.write_text(f"import {framework} as _forbidden\n" + errors.read_text())
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if "BROKEN" in line]
    assert any(CONTRACT in line for line in broken), result.stdout


def test_importing_the_errors_loads_no_framework():
    probe = (
        f"import sys, shared.errors; print(','.join(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
