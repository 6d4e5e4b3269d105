"""`make demo` against a hub started as `make run` starts it: the whole journey, twice in a
row on the same hub (the second run finds the partners and services the first created)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_make_run import Hub

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

STEPS = (
    ("1", "immediate.cash", "IOM Mali (demo), direct"),
    ("2", "psychosocial.individual_counselling", "ONG Hakili Sabati (demo)"),
    ("3", "economic.vocational_training", "Centre de formation Kayes (demo)"),
    ("4", "economic.job_placement", "ANPE Mali (demo)"),
)


def _demo(hub: Hub, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in hub.env.items() if k != "RELAIS_ADMIN_KEY"}
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "demo.py"), "--timeout", "30", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_demo_plays_the_whole_pathway_twice_in_a_row(tmp_path):
    hub = Hub(tmp_path / "data")
    hub.run()
    try:
        # The first run finds the ports in REGISTRY_PORT etc. and the admin key in
        # $RELAIS_DATA_DIR/admin.key; the second is given the URLs.
        first = _demo(hub)
        second = _demo(
            hub,
            *(
                arg
                for name, port in hub.ports.items()
                for arg in (f"--{name}", f"http://127.0.0.1:{port}")
            ),
        )
    finally:
        code = hub.stop()
    assert code == 0, hub.output

    for run in (first, second):
        out = run.stdout
        assert run.returncode == 0, out + run.stderr
        assert "case.pathway_completed" in out
        assert re.search(r"^\s+step\s+service type\s+partner\s+status\s+attempts$", out, re.M)
        for key, service_type, partner in STEPS:
            row = rf"^\s+{key}\s+{re.escape(service_type)}\s+{re.escape(partner)}\s+completed\s"
            assert re.search(row, out, re.M), out
        for event in ("referral.created", "referral.accepted", "referral.completed"):
            assert event in out
        received = re.search(r"Webhooks: (\d+) received.*all (\d+) signatures verified", out)
        assert received and int(received[1]) >= 28 and received[1] == received[2], out
        assert "INVALID" not in out
        assert max(len(line) for line in out.splitlines()) <= 100
        assert "The returnee's pathway is complete." in out
    assert "IOM Mali (demo) (un_agency): created" in first.stdout
    assert "IOM Mali (demo) (un_agency): found" in second.stdout
    assert "immediate.cash in ML: found" in second.stdout
    # Two cases, each with its own reference.
    references = {
        re.search(r"Pathway of case (ML-\d{4}-\d+)", run.stdout)[1] for run in (first, second)
    }
    assert len(references) == 2
