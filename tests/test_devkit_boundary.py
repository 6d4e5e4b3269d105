"""The devkit (the hub client and webhook receiver of the tests, the demo and the bench) stays
outside the product: `make lint` fails when a service or `shared` imports it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = "The services and shared do not import the devkit"


@pytest.mark.parametrize(
    "module",
    ["services/notifications/sender.py", "shared/pagination.py"],
    ids=["service", "shared"],
)
def test_lint_fails_when_the_product_imports_the_devkit(tmp_path, module):
    for package in ("services", "shared", "devkit"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text("from devkit.receiver import Receiver as _forbidden\n" + target.read_text())
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert f"{CONTRACT} BROKEN" in result.stdout
