"""The README's curl walkthrough, exactly as written there, run twice with bash against one hub
started as `make run` starts it, where `make demo` ran before: both runs route the new case to
the training centre, which accepts and completes it, and its receiver gets signed webhooks."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.request

import pytest

from shared.embedded_pg import free_port
from tests.e2e.processes import ROOT, LocalHub, run_demo

pytestmark = pytest.mark.slow


def _readme_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The main flows with curl") :]
    return re.search(r"^```sh\n(.*?)^```$", section, re.S | re.M)[1]


def _run(hub: LocalHub, receiver_port: int) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """The block in bash (stopping at the first failing command), then the ids it kept."""
    script = (
        _readme_block() + '\necho; echo "KEPT IOM=$IOM CFP=$CFP CASE=$CASE REFERRAL=$REFERRAL"\n'
    )
    process = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=ROOT,
        env={**hub.env, "RECEIVER_PORT": str(receiver_port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=90)
    finally:
        # The block's background receiver, if the block stopped before it killed it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    run = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    assert run.returncode == 0, out + err
    kept = re.search(r"^KEPT (.*)$", out, re.M)
    assert kept, out
    return run, dict(pair.split("=", 1) for pair in kept[1].split())


def _get(hub: LocalHub, service: str, path: str, key: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{hub.ports[service]}{path}")
    request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_the_readme_curl_flow_runs_twice_on_a_hub_where_the_demo_ran(tmp_path):
    hub = LocalHub(tmp_path / "data")
    hub.run()
    try:
        admin = (tmp_path / "data" / "admin.key").read_text().strip()
        demo = run_demo(hub)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        receiver_port = free_port()
        runs = [_run(hub, receiver_port) for _ in range(2)]

        for run, kept in runs:
            assert "BAD SIGNATURE" not in run.stdout
            assert "webhook: referral.created requested signature ok" in run.stdout, run.stdout
            referral = _get(hub, "referrals", f"/referrals/{kept['REFERRAL']}", admin)
            assert referral["case_id"] == kept["CASE"]
            assert referral["assignee_partner_id"] == kept["CFP"]
            assert referral["status"] == "completed"
            assert [line["status"] for line in referral["history"]][-2:] == [
                "accepted",
                "completed",
            ]
            deadline = time.monotonic() + 15
            while True:
                pathway = _get(hub, "referrals", f"/cases/{kept['CASE']}/pathway", admin)
                if pathway["completed"] or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert [step["status"] for step in pathway["steps"]] == ["completed"], pathway

        (_, one), (_, two) = runs
        assert one["CASE"] != two["CASE"]
        assert (one["IOM"], one["CFP"]) == (two["IOM"], two["CFP"])
        partners = _get(hub, "registry", "/partners?limit=500", admin)["items"]
        names = [p["name"] for p in partners]
        assert names.count("OIM Mali") == 1 and names.count("Centre de formation de Kayes") == 1
        assert _get(hub, "registry", f"/partners/{one['CFP']}", admin)["kind"] == "ngo"
        services = _get(hub, "registry", f"/services?partner_id={one['CFP']}", admin)["items"]
        assert len(services) == 1
        endpoints = _get(hub, "notifications", "/endpoints?limit=500", admin)["items"]
        assert [e["partner_id"] for e in endpoints] == [one["CFP"]]
    finally:
        code = hub.stop()
    assert code == 0, hub.output
