"""Every line a service process writes is one JSON object naming the service: its own lines,
the access lines of requests, and uvicorn's lines from start to stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shared.embedded_pg import free_port
from tests.e2e.processes import ROOT

pytestmark = pytest.mark.slow


def _serve_and_stop(name: str, database_url: str, log_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "RELAIS_ENV": "development",
        "RELAIS_LOG_LEVEL": "INFO",
        "RELAIS_RUN_WORKERS": "true",
        f"{name.upper()}_PORT": str(port),
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                while True:
                    assert process.poll() is None, log_path.read_text()
                    try:
                        if client.get("/readyz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    assert time.monotonic() < deadline, f"{name} not ready"
                    time.sleep(0.1)
                assert client.get("/openapi.json").status_code == 200
                assert client.get("/no-such-page", headers={"X-Request-ID": "r-1"}).status_code
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


@pytest.mark.parametrize("name", ["registry", "referrals", "notifications"])
def test_every_log_line_of_a_service_process_is_json_and_names_the_service(
    name, database_url, tmp_path
):
    log_path = tmp_path / f"{name}.log"
    _serve_and_stop(name, database_url, log_path)
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    unnamed = [r for r in records if r.get("service") != name]
    assert not unnamed, unnamed
    events = [r.get("event", "") for r in records]
    # uvicorn's own lines, the service's, and an access line with its request id.
    assert any("Uvicorn running" in e for e in events), events
    assert any("Shutting down" in e or "shutdown" in e.lower() for e in events), events
    assert "service_started" in events and "service_stopped" in events
    access = [r for r in records if r.get("event") == "request"]
    assert any(r.get("request_id") == "r-1" and r["status"] == 404 for r in access), access
