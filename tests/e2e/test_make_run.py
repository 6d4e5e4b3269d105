"""`make run`'s launcher, as a new user runs it (and misuses it): the embedded PostgreSQL,
three services ready with their docs, the admin key, the data kept for the next run; a second
launcher on the same data refused, taken ports named before anything starts, and every
process it started gone after SIGINT, SIGTERM, SIGHUP, Ctrl-C during start-up, or its own
death."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import termios
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.embedded_pg import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("registry", "referrals", "notifications")

pytestmark = pytest.mark.slow

_launchers: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_launcher_outlives_its_test() -> Iterator[None]:
    """A test that fails half-way still ends its launchers (which end their processes)."""
    yield
    while _launchers:
        launcher = _launchers.pop()
        if launcher.poll() is None:
            launcher.terminate()
            try:
                launcher.wait(timeout=30)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()


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


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def _descendants(pid: int) -> set[int]:
    """Every living process below `pid`, at any depth."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return {p for p in found if _alive(p)}


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Hub:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.ports = {name: free_port() for name in SERVICES}
        self.pg_port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL"}},
            "RELAIS_DATA_DIR": str(data_dir),
            "RELAIS_EMBEDDED_PG_PORT": str(self.pg_port),
            "RELAIS_ENV": "development",
            **{f"{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
        }
        self.env.pop("RELAIS_BOOTSTRAP_ADMIN_KEY", None)
        self.env.update(env)
        self.output = ""
        self.terminal: int | None = None

    @property
    def postmaster_pid_file(self) -> Path:
        return self.data_dir / "postgres" / "pgdata" / "postmaster.pid"

    def launch(self, *, in_terminal: bool = False) -> subprocess.Popen:
        """The launcher with its output in a pipe, or in a terminal of its own (it is the
        terminal's session leader, as in a shell window or an SSH session)."""
        if not in_terminal:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "deploy" / "local.py")],
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            _launchers.append(self.process)
            return self.process
        self.terminal, side = os.openpty()
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "deploy" / "local.py")],
            cwd=ROOT,
            env=self.env,
            stdin=side,
            stdout=side,
            stderr=side,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(side)
        _launchers.append(self.process)
        return self.process

    def _read(self) -> str:
        if self.terminal is None:
            return self.process.stdout.readline()
        try:
            return os.read(self.terminal, 4096).decode(errors="replace").replace("\r\n", "\n")
        except OSError as exc:  # EIO: the launcher closed its side
            if exc.errno != errno.EIO:
                raise
            return ""

    def close_terminal(self) -> int:
        """What closing the window does: the launcher gets SIGHUP and can no longer write."""
        os.close(self.terminal)
        return self.process.wait(timeout=60)

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + 90
        while text not in self.output:
            line = self._read()
            if not line and self.process.poll() is not None:
                raise AssertionError(f"launcher exited before {text!r}:\n{self.output}")
            self.output += line
            assert time.monotonic() < deadline, self.output

    def run(self) -> subprocess.Popen:
        self.launch()
        self.wait_for("Press Ctrl-C to stop.")
        return self.process

    def processes(self) -> set[int]:
        """The launcher's processes now: its descendants and the postmaster."""
        pids = _descendants(self.process.pid)
        if self.postmaster_pid_file.exists():
            pids.add(int(self.postmaster_pid_file.read_text().split()[0]))
        return pids

    def finish(self, timeout: float = 60) -> int:
        rest, _ = self.process.communicate(timeout=timeout)
        self.output += rest
        return self.process.returncode

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        self.process.send_signal(sig)
        return self.finish()

    def assert_nothing_survives(self, pids: set[int], *, within: float = 0.0) -> None:
        deadline = time.monotonic() + within
        while True:
            survivors = {pid for pid in pids if _alive(pid)}
            taken = [p for p in [*self.ports.values(), self.pg_port] if not _port_free(p)]
            if not survivors and not taken:
                break
            assert time.monotonic() < deadline, (survivors, taken, self.output)
            time.sleep(0.1)
        assert not self.postmaster_pid_file.exists()


def _readme_sample() -> str:
    """The output of a first `make run` as the README shows it."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Two commands", 1)[1]
    return section.split("the admin key:\n\n```\n", 1)[1].split("```", 1)[0]


def _as_in_the_readme(hub: Hub, output: str, key: str) -> str:
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
    hub = Hub(data_dir)
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

    again = Hub(data_dir)
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
    hub = Hub(data_dir, RELAIS_BOOTSTRAP_ADMIN_KEY=key)
    hub.launch(in_terminal=True)
    hub.wait_for("Press Ctrl-C to stop.")
    try:
        assert "RELAIS_BOOTSTRAP_ADMIN_KEY" in hub.output and key not in hub.output
        assert not (data_dir / "admin.key").exists()
        started = hub.processes()
        postmaster = int(hub.postmaster_pid_file.read_text().split()[0])

        second = Hub(data_dir)
        second.env = dict(hub.env)  # the same `make run`, once more
        second.launch()
        code = second.finish(timeout=30)
        assert code != 0, second.output
        assert f"pid {hub.process.pid}" in second.output
        assert "Relais is running" not in second.output
        assert "Traceback" not in second.output

        assert hub.process.poll() is None
        assert _alive(postmaster)
        assert {pid for pid in started if _alive(pid)} == started
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
    hub = Hub(tmp_path / "data")
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
    hub = Hub(tmp_path / "data")
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
    hub = Hub(tmp_path / "data")
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
    hub = Hub(data_dir)
    hub.run()
    started = hub.processes()
    hub.process.kill()
    hub.process.wait()
    hub.assert_nothing_survives(started, within=30)

    again = Hub(data_dir)
    again.run()
    try:
        for port in again.ports.values():
            assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        started = again.processes()
    finally:
        code = again.stop(signal.SIGTERM)
    assert code == 0, again.output
    again.assert_nothing_survives(started)
