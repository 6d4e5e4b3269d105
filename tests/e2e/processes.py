"""The hub as processes, for the end-to-end tests: `LocalHub` is `make run`'s launcher
(deploy/local.py) on its own data directory and ports; `Services` the three services started
one by one on a given database; `run_demo` is `make demo` against a `LocalHub`."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import termios
import time
from pathlib import Path

import httpx

from shared.embedded_pg import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("registry", "referrals", "notifications")
ADMIN_KEY = "rk_end-to-end-admin-key-" + "x" * 24

# Every launcher started, so that the e2e conftest ends those a failing test left running.
LAUNCHERS: list[subprocess.Popen] = []


class Services:
    """The three services as `python -m services.<name>` processes on one database."""

    def __init__(self, database_url: str, **env: str) -> None:
        self.ports = {name: free_port() for name in SERVICES}
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "RELAIS_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            "RELAIS_ENV": "development",
            "WEBHOOK_RETRY_SCHEDULE": "0.3,0.3,0.3,0.3,0.3",
            "WEBHOOK_TIMEOUT_SECONDS": "5",
            "RELAIS_POLL_INTERVAL_SECONDS": "0.2",
            "RELAIS_LOG_LEVEL": "WARNING",
            **{f"{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
            **env,
        }
        self.processes: dict[str, subprocess.Popen] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    async def start(self, name: str) -> None:
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], cwd=ROOT, env=self.env
        )
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as client:
            while True:
                assert self.processes[name].poll() is None, f"{name} exited"
                try:
                    if (await client.get(self.url(name) + "/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"{name} not ready"
                await asyncio.sleep(0.1)

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def descendants(pid: int) -> set[int]:
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
    return {p for p in found if alive(p)}


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class LocalHub:
    """`make run`'s launcher on a data directory of its own, with ports of its own."""

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
            LAUNCHERS.append(self.process)
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
        LAUNCHERS.append(self.process)
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
        pids = descendants(self.process.pid)
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
            survivors = {pid for pid in pids if alive(pid)}
            taken = [p for p in [*self.ports.values(), self.pg_port] if not port_free(p)]
            if not survivors and not taken:
                break
            assert time.monotonic() < deadline, (survivors, taken, self.output)
            time.sleep(0.1)
        assert not self.postmaster_pid_file.exists()


def demo_env(hub: LocalHub, changes: dict[str, str | None] | None = None) -> dict[str, str]:
    """The hub's environment for the demo (None removes a variable), without the caller's
    RELAIS_ADMIN_KEY."""
    env = {k: v for k, v in hub.env.items() if k != "RELAIS_ADMIN_KEY"}
    for name, value in (changes or {}).items():
        env.pop(name, None)
        if value is not None:
            env[name] = value
    return env


def run_demo(
    hub: LocalHub, *args: str, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "demo.py"), "--timeout", "30", *args],
        cwd=ROOT,
        env=demo_env(hub, env),
        capture_output=True,
        text=True,
        timeout=60,
    )
