"""`make run`'s launcher, as a new user runs it: the embedded PostgreSQL, three services
ready with their docs, the admin key, a clean stop on Ctrl-C, and the data kept for the
next run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from shared.embedded_pg import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _get(url: str, key: str | None = None, body: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, method="POST" if body is not None else "GET")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    data = None
    if body is not None:
        request.add_header("Content-Type", "application/json")
        data = json.dumps(body).encode()
    with urllib.request.urlopen(request, data=data, timeout=5) as response:
        return response.status, response.read().decode()


class Hub:
    def __init__(self, data_dir: Path) -> None:
        self.ports = {name: free_port() for name in ("registry", "referrals", "notifications")}
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL"}},
            "RELAIS_DATA_DIR": str(data_dir),
            "RELAIS_EMBEDDED_PG_PORT": str(free_port()),
            "RELAIS_ENV": "development",
            **{f"{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
        }
        self.env.pop("RELAIS_BOOTSTRAP_ADMIN_KEY", None)
        self.output = ""

    def run(self) -> subprocess.Popen:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "deploy" / "local.py")],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 90
        while "Press Ctrl-C to stop." not in self.output:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                raise AssertionError(f"launcher exited early:\n{self.output}")
            self.output += line
            assert time.monotonic() < deadline, self.output
        return self.process

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        rest, _ = self.process.communicate(timeout=60)
        self.output += rest
        return self.process.returncode


def test_make_run_serves_three_services_stops_cleanly_and_reuses_its_data(tmp_path):
    data_dir = tmp_path / "data"
    hub = Hub(data_dir)
    hub.run()
    try:
        key = (data_dir / "admin.key").read_text().strip()
        assert key in hub.output
        for port in hub.ports.values():
            assert f"http://127.0.0.1:{port}/docs" in hub.output
            assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
            assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 200
            status, page = _get(f"http://127.0.0.1:{port}/docs")
            assert status == 200 and "swagger" in page.lower()
        status, _ = _get(
            f"http://127.0.0.1:{hub.ports['registry']}/partners",
            key,
            {"name": "Kept across runs", "kind": "ngo"},
        )
        assert status == 201
    finally:
        code = hub.stop()
    assert code == 0, hub.output
    assert "embedded PostgreSQL stopped" in hub.output
    assert not (data_dir / "postgres" / "pgdata" / "postmaster.pid").exists()
    logs = (data_dir / "logs" / "registry.log").read_text().splitlines()
    assert logs and all(json.loads(line) for line in logs if line.strip())

    again = Hub(data_dir)
    again.run()
    try:
        assert "admin.key" in again.output and "(new)" not in again.output
        status, body = _get(f"http://127.0.0.1:{again.ports['registry']}/partners", key)
        assert status == 200
        assert [p["name"] for p in json.loads(body)["items"]] == ["Kept across runs"]
    finally:
        assert again.stop() == 0, again.output
