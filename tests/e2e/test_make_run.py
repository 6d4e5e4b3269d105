"""`make run`'s launcher, as a new user runs it (and misuses it): the embedded PostgreSQL,
three services ready with their docs, the admin key, the data kept for the next run; a second
launcher on the same data refused, taken ports named before anything starts, and every
process it started gone after SIGINT, SIGTERM, SIGHUP, Ctrl-C during start-up, or its own
death."""

from __future__ import annotations

import json
import signal
import socket
import urllib.request

import pytest

from tests.e2e.processes import ROOT, SERVICES, LocalHub, alive

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


def _readme_sample() -> str:
    """The output of a first `make run` as the README shows it."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Two commands", 1)[1]
    return section.split("the admin key:\n\n```\n", 1)[1].split("```", 1)[0]


def _as_in_the_readme(hub: LocalHub, output: str, key: str) -> str:
    """The launcher's output with this test's data directory, ports and key written as a
    first run with the defaults would print them."""
    defaults = {"registry": 8001, "referrals": 8002, "notifications": 8003}
    output = output.replace(str(hub.data_dir), ".data").replace(key, "rk_...")
    for name, port in hub.ports.items():
        output = output.replace(f"port {port} ", f"port {defaults[name]} ")
        output = output.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{defaults[name]}/")
    return output.replace(f"127.0.0.1:{hub.pg_port} ", "127.0.0.1:54329 ")


def test_make_run_serves_three_services_stops_cleanly_and_reuses_its_data(tmp_path):
    data_dir = tmp_path / "data"
    hub = LocalHub(data_dir)
    hub.run()
    try:
        key = (data_dir / "admin.key").read_text().strip()
        assert key in hub.output
        assert "(new" in hub.output
        assert _as_in_the_readme(hub, hub.output, key) == _readme_sample()
        for port in hub.ports.values():
            assert f"http://127.0.0.1:{port}/docs" in hub.output
            assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
            assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 200
            status, page = _get(f"http://127.0.0.1:{port}/docs")
            assert status == 200 and "swagger" in page.lower()
        dashboard = f"http://127.0.0.1:{hub.ports['referrals']}/dashboard"
        assert dashboard in hub.output
        assert _get(dashboard)[0] == 200
        status, _ = _get(
            f"http://127.0.0.1:{hub.ports['registry']}/partners",
            key,
            {"name": "Kept across runs", "kind": "ngo"},
        )
        assert status == 201
        started = hub.processes()
        assert len(started) >= len(SERVICES) + 1
    finally:
        code = hub.stop()
    assert code == 0, hub.output
    assert "embedded PostgreSQL stopped" in hub.output
    hub.assert_nothing_survives(started)
    logs = (data_dir / "logs" / "registry.log").read_text().splitlines()
    assert logs and all(json.loads(line) for line in logs if line.strip())

    again = LocalHub(data_dir)
    again.run()
    try:
        assert "admin.key" in again.output and "(new" not in again.output
        assert key not in again.output
        status, body = _get(f"http://127.0.0.1:{again.ports['registry']}/partners", key)
        assert status == 200
        assert [p["name"] for p in json.loads(body)["items"]] == ["Kept across runs"]
    finally:
        assert again.stop() == 0, again.output


def test_a_second_make_run_refuses_naming_the_running_hub_which_runs_until_its_terminal_closes(
    tmp_path,
):
    data_dir = tmp_path / "data"
    key = "rk_from_the_environment_" + "x" * 20
    hub = LocalHub(data_dir, RELAIS_BOOTSTRAP_ADMIN_KEY=key)
    hub.launch(in_terminal=True)
    hub.wait_for("Press Ctrl-C to stop.")
    try:
        assert "RELAIS_BOOTSTRAP_ADMIN_KEY" in hub.output and key not in hub.output
        assert not (data_dir / "admin.key").exists()
        started = hub.processes()
        postmaster = int(hub.postmaster_pid_file.read_text().split()[0])

        second = LocalHub(data_dir)
        second.env = dict(hub.env)  # the same `make run`, once more
        second.launch()
        code = second.finish(timeout=30)
        assert code != 0, second.output
        assert f"pid {hub.process.pid}" in second.output
        assert "Relais is running" not in second.output
        assert "Traceback" not in second.output

        assert hub.process.poll() is None
        assert alive(postmaster)
        assert {pid for pid in started if alive(pid)} == started
        for port in hub.ports.values():
            assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        status, _ = _get(
            f"http://127.0.0.1:{hub.ports['registry']}/partners",
            key,
            {"name": "Still served", "kind": "ngo"},
        )
        assert status == 201
    finally:
        code = hub.close_terminal()
    assert code == 0, hub.output
    hub.assert_nothing_survives(started)


@pytest.mark.parametrize("setting", ["REFERRALS_PORT", "RELAIS_EMBEDDED_PG_PORT"])
def test_a_taken_port_is_named_in_one_line_before_anything_starts(tmp_path, setting):
    hub = LocalHub(tmp_path / "data")
    port = int(hub.env[setting])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        hub.launch()
        code = hub.finish(timeout=30)
    assert code != 0, hub.output
    lines = [line for line in hub.output.splitlines() if str(port) in line]
    assert len(lines) == 1, hub.output
    assert setting in lines[0] and "in use" in lines[0]
    assert "Traceback" not in hub.output
    assert "starting" not in hub.output
    assert not (hub.data_dir / "postgres").exists()


def test_postgresql_that_cannot_start_is_explained_in_a_few_lines(tmp_path):
    hub = LocalHub(tmp_path / "data")
    pgdata = hub.data_dir / "postgres" / "pgdata"
    pgdata.mkdir(parents=True, mode=0o700)
    (pgdata / "PG_VERSION").write_text("12\n")
    (pgdata / "postgresql.conf").write_text("")
    hub.launch()
    code = hub.finish(timeout=60)
    assert code != 0, hub.output
    assert "Traceback" not in hub.output
    assert "PostgreSQL did not start" in hub.output
    assert "version 12" in hub.output
    assert len(hub.output.splitlines()) < 20, hub.output


def test_ctrl_c_during_start_up_stops_everything_promptly(tmp_path):
    hub = LocalHub(tmp_path / "data")
    hub.launch()
    hub.wait_for("applying migrations")
    started = hub.processes()
    hub.process.send_signal(signal.SIGINT)
    code = hub.finish(timeout=30)
    assert "Relais is running" not in hub.output
    assert "Traceback" not in hub.output
    assert code == 0, hub.output
    hub.assert_nothing_survives(started | hub.processes())


def test_a_killed_launcher_takes_its_processes_with_it_and_the_next_start_works(tmp_path):
    data_dir = tmp_path / "data"
    hub = LocalHub(data_dir)
    hub.run()
    started = hub.processes()
    hub.process.kill()
    hub.process.wait()
    hub.assert_nothing_survives(started, within=30)

    again = LocalHub(data_dir)
    again.run()
    try:
        for port in again.ports.values():
            assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        started = again.processes()
    finally:
        code = again.stop(signal.SIGTERM)
    assert code == 0, again.output
    again.assert_nothing_survives(started)
