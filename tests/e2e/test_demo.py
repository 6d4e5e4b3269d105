"""`make demo` against a hub started as `make run` starts it: the whole journey, twice in a
row on the same hub (the second run finds the partners and services the first created); the
admin key it finds; the hub it leaves behind, for other cases, when it ends or is interrupted."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.e2e.processes import ROOT, LocalHub, demo_env, run_demo

pytestmark = pytest.mark.slow

STEPS = (
    ("1", "immediate.cash", "IOM Mali (demo), direct"),
    ("2", "psychosocial.individual_counselling", "ONG Hakili Sabati (demo)"),
    ("3", "economic.vocational_training", "Centre de formation Kayes (demo)"),
    ("4", "economic.job_placement", "ANPE Mali (demo)"),
)
DEMO_PARTNERS = {
    "IOM Mali (demo)",
    "ONG Hakili Sabati (demo)",
    "Centre de formation Kayes (demo)",
    "ANPE Mali (demo)",
}
CUSTOM_KEY = "coordination-admin-key-0123456789abcdefghij"


def test_the_demo_plays_the_whole_pathway_twice_in_a_row(tmp_path):
    hub = LocalHub(tmp_path / "data")
    hub.run()
    try:
        # The first run finds the ports in REGISTRY_PORT etc. and the admin key in
        # $RELAIS_DATA_DIR/admin.key; the second is given the URLs.
        first = run_demo(hub)
        second = run_demo(
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
        # It ends with the coordination's dashboard.
        dashboard = f"http://127.0.0.1:{hub.ports['referrals']}/dashboard"
        assert out.strip().splitlines()[-1].endswith(f": {dashboard}"), out
    assert "IOM Mali (demo) (un_agency): created" in first.stdout
    assert "IOM Mali (demo) (un_agency): found" in second.stdout
    assert "immediate.cash in ML: found" in second.stdout
    # Two cases, each with its own reference.
    references = {
        re.search(r"Pathway of case (ML-\d{4}-\d+)", run.stdout)[1] for run in (first, second)
    }
    assert len(references) == 2


def _api(hub: LocalHub, service: str, method: str, path: str, key: str, body: dict | None = None):
    """The hub's answer to one call: (status, JSON body or None)."""
    request = urllib.request.Request(f"http://127.0.0.1:{hub.ports[service]}{path}", method=method)
    request.add_header("Authorization", f"Bearer {key}")
    data = None
    if body is not None:
        request.add_header("Content-Type", "application/json")
        data = json.dumps(body).encode()
    try:
        with urllib.request.urlopen(request, data=data, timeout=10) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    return status, json.loads(text) if text else None


def _demo_services(hub: LocalHub, admin: str) -> dict[str, dict]:
    """The demo partners' services, by service type."""
    _, page = _api(hub, "registry", "GET", "/partners?limit=500", admin)
    found = {}
    for partner in page["items"]:
        if partner["name"] in DEMO_PARTNERS:
            _, services = _api(
                hub, "registry", "GET", f"/services?partner_id={partner['id']}", admin
            )
            found.update({s["service_type"]: s for s in services["items"]})
    return found


def _training_goes_to(hub: LocalHub, admin: str) -> str | None:
    """The partner a new case in the cercle of Kayes would be routed to for training."""
    _, preview = _api(
        hub,
        "referrals",
        "POST",
        "/routing/preview",
        admin,
        {
            "case": {
                "beneficiary": {"sex": "female", "birth_year": 1998},
                "return": {"area_code": "ML-1-03"},
            },
            "service_type": "economic.vocational_training",
        },
    )
    return preview["chosen_partner_id"]


def _left_as_found(hub: LocalHub, admin: str) -> None:
    services = _demo_services(hub, admin)
    assert len(services) == 4 and {s["status"] for s in services.values()} == {"inactive"}
    _, endpoints = _api(hub, "notifications", "GET", "/endpoints?limit=500", admin)
    assert not [e for e in endpoints["items"] if "demo" in (e["description"] or "")]
    # The router hears of the change by event, a moment later.
    centre = services["economic.vocational_training"]["partner_id"]
    deadline = time.monotonic() + 15
    while _training_goes_to(hub, admin) == centre:
        assert time.monotonic() < deadline, "new cases are still routed to the demo's centre"
        time.sleep(0.2)


def test_the_demo_finds_the_key_the_hub_was_started_with_or_says_where_it_looked(tmp_path):
    hub = LocalHub(tmp_path / "data")
    hub.env["RELAIS_BOOTSTRAP_ADMIN_KEY"] = CUSTOM_KEY  # no admin.key is written then
    hub.run()
    try:
        nothing = run_demo(hub, env={"RELAIS_BOOTSTRAP_ADMIN_KEY": None})
        wrong = run_demo(
            hub, env={"RELAIS_BOOTSTRAP_ADMIN_KEY": None, "RELAIS_ADMIN_KEY": "rk_x" * 9}
        )
        custom = run_demo(hub)
    finally:
        code = hub.stop()
    assert code == 0, hub.output
    assert not (tmp_path / "data" / "admin.key").exists()

    assert nothing.returncode == 1
    assert len(nothing.stderr.strip().splitlines()) == 1, nothing.stderr
    for place in ("RELAIS_ADMIN_KEY (unset)", "RELAIS_BOOTSTRAP_ADMIN_KEY (unset)", "admin.key"):
        assert place in nothing.stderr
    assert "set RELAIS_ADMIN_KEY" in nothing.stderr

    assert wrong.returncode == 1
    assert len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
    assert "refused the admin key from RELAIS_ADMIN_KEY (401" in wrong.stderr
    assert "set RELAIS_ADMIN_KEY" in wrong.stderr

    assert custom.returncode == 0, custom.stdout + custom.stderr
    assert re.search(r"admin key\s+from RELAIS_BOOTSTRAP_ADMIN_KEY", custom.stdout)
    assert "The returnee's pathway is complete." in custom.stdout


def test_the_demo_leaves_its_services_inactive_after_it_ends_even_on_ctrl_c(tmp_path):
    hub = LocalHub(tmp_path / "data")
    hub.run()
    try:
        admin = (tmp_path / "data" / "admin.key").read_text().strip()
        done = run_demo(hub)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "services set inactive" in done.stdout
        _left_as_found(hub, admin)

        interrupted = subprocess.Popen(
            [sys.executable, str(ROOT / "tools" / "demo.py"), "--timeout", "30"],
            cwd=ROOT,
            env=demo_env(hub),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        out = ""
        while "The journey" not in out:
            line = interrupted.stdout.readline()
            assert line, out
            out += line
        interrupted.send_signal(signal.SIGINT)
        rest, err = interrupted.communicate(timeout=60)
        out += rest
        assert interrupted.returncode == 130, out + err
        assert "re-activated" in out and "services set inactive" in out, out
        _left_as_found(hub, admin)
    finally:
        code = hub.stop()
    assert code == 0, hub.output
