"""`make run`: the whole hub on one machine, until Ctrl-C.

Takes RELAIS_DATA_DIR for itself (a second launcher on it refuses), checks that every port it
needs is free, starts the embedded PostgreSQL there (unless DATABASE_URL is set), applies the
migrations, makes sure an admin key exists, and runs the three services (each with its
workers) as child processes. SIGINT, SIGTERM and SIGHUP stop all of it, PostgreSQL included,
at any moment, start-up too. The children are tied to the launcher: on Linux the kernel stops
them if it is killed outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stop_before_anything_started(signum: int, _frame: object) -> None:
    with contextlib.suppress(OSError):
        os.write(1, f"[relais] {signal.Signals(signum).name} received; stopped\n".encode())
    os._exit(0)


if __name__ == "__main__":  # a stop signal during the imports below
    for _signal in STOP_SIGNALS:
        signal.signal(_signal, _stop_before_anything_started)

import asyncpg  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.auth import KEY_PREFIX  # noqa: E402
from shared.child_process import dies_with_parent  # noqa: E402
from shared.db import plain_url  # noqa: E402
from shared.embedded_pg import EmbeddedPostgres, PostgresStartError  # noqa: E402
from shared.migrate import upgrade  # noqa: E402
from shared.settings import Settings  # noqa: E402

SERVICES = ("registry", "referrals", "notifications")
EMBEDDED_DATABASE = "relais"
EMBEDDED_PG_PORT_SETTING = "RELAIS_EMBEDDED_PG_PORT"
READY_TIMEOUT = 90.0
SERVICE_STOP_TIMEOUT = 15.0
LOCK_FILE = "relais.lock"
LOG_TAIL_LINES = 3


def show(text: str) -> None:
    """Write to the terminal; once it is gone (a closed terminal), write nowhere and go on."""
    try:
        print(text, flush=True)
    except OSError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open for the process's life


def say(message: str) -> None:
    show(f"[relais] {message}")


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it lies below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class StopRequested(KeyboardInterrupt):
    """A stop signal arrived. A KeyboardInterrupt, so that asyncio and the libraries under it
    let it through, wherever the launcher is, as they do Ctrl-C."""

    def __init__(self, sig: signal.Signals) -> None:
        super().__init__(sig.name)
        self.signal = sig


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP each stop the launcher, at any moment: the first one raises
    StopRequested where the launcher is; once it is stopping, later ones are ignored."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._held = False
        self._stopping = False
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        # Raised inside a finaliser (an asyncio transport collected during the migrations),
        # StopRequested is swallowed by Python and printed as "Exception ignored": say
        # nothing of it there; the next checkpoint stops the launcher.
        default_hook = sys.unraisablehook

        def quiet_stop(unraisable: sys.UnraisableHookArgs) -> None:
            if not isinstance(unraisable.exc_value, StopRequested):
                default_hook(unraisable)

        sys.unraisablehook = quiet_stop

    def checkpoint(self) -> None:
        """Stop here if a stop signal arrived and its exception was lost on the way."""
        if self.received is not None and not self._stopping:
            raise StopRequested(self.received)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.received is not None or self._stopping:
            return
        self.received = signal.Signals(signum)
        if not self._held:
            raise StopRequested(self.received)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """A stop signal arriving inside the block takes effect at its end, so a child
        process is never started without the launcher knowing it."""
        self._held = True
        try:
            yield
        finally:
            self._held = False
        if self.received is not None:
            raise StopRequested(self.received)

    def stopping(self) -> None:
        """The launcher is stopping: stop signals change nothing any more."""
        self._stopping = True


class HubAlreadyRunning(Exception):
    def __init__(self, pid: int | None) -> None:
        super().__init__(pid)
        self.pid = pid


class ServiceStartError(Exception):
    """A service ended before it was ready: why, and the last lines of its log."""

    def __init__(self, reason: str, log_tail: list[str]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_tail = log_tail


def lock_data_dir(data_dir: Path) -> int:
    """Take the data directory for this launcher's life, its pid written in the lock file.

    An flock, which the kernel releases when the process ends however it ends: a crashed
    launcher leaves no stale lock. Raises HubAlreadyRunning with the holder's pid.
    """
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            raise HubAlreadyRunning(_lock_holder(fd)) from None
        finally:
            os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _lock_holder(fd: int) -> int | None:
    deadline = time.monotonic() + 1.0
    while True:  # the holder writes its pid just after it takes the lock
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return int(text)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def _port_of(settings: Settings, name: str) -> int:
    return int(getattr(settings, f"{name}_port"))


def _embedded_pg_port() -> int:
    return int(os.environ.get(EMBEDDED_PG_PORT_SETTING, "54329"))


def _cannot_listen(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port, or None if it could."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As the servers do: a port whose last connections are in TIME_WAIT can be had.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return "is already in use" if exc.errno == errno.EADDRINUSE else f"fails: {exc}"
    return None


def taken_port(ports: list[tuple[str, str, int]]) -> str | None:
    """The first of `ports` (setting, host, port) that cannot be had, said in one line."""
    seen: dict[int, str] = {}
    for setting, host, port in ports:
        if port in seen:
            return f"{seen[port]} and {setting} are both {port}: give each a port of its own"
        seen[port] = setting
        problem = _cannot_listen(host, port)
        if problem:
            other = port + 10000 if port + 10000 < 65536 else port - 10000
            return (
                f"port {port} ({setting}) {problem}: stop what uses it, or choose another "
                f"port, e.g. `{setting}={other} make run`"
            )
    return None


def _ports(settings: Settings, embedded: EmbeddedPostgres | None) -> list[tuple[str, str, int]]:
    ports = [
        (f"{name.upper()}_PORT", settings.bind_host, _port_of(settings, name)) for name in SERVICES
    ]
    if embedded is not None:
        ports.append((EMBEDDED_PG_PORT_SETTING, embedded.host, embedded.port))
    return ports


async def _ensure_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(plain_url(server_url))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@dataclass(frozen=True)
class AdminKey:
    key: str
    kept_in: str  # the file, or the environment variable
    new: bool

    def banner(self) -> str:
        """The key in full only when it was just created; afterwards, where it is kept."""
        if self.new:
            return f"  admin key      {self.key}\n                 (new; kept in {self.kept_in})\n"
        if self.kept_in == "RELAIS_BOOTSTRAP_ADMIN_KEY":
            return f"  admin key      from {self.kept_in}\n"
        return f"  admin key      kept in {self.kept_in}\n"


def _admin_key(settings: Settings, data_dir: Path) -> AdminKey:
    if settings.bootstrap_admin_key:
        return AdminKey(settings.bootstrap_admin_key, "RELAIS_BOOTSTRAP_ADMIN_KEY", new=False)
    path = data_dir / "admin.key"
    if path.exists():
        return AdminKey(path.read_text().strip(), _shown(path), new=False)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        file.write(key + "\n")
    return AdminKey(key, _shown(path), new=True)


def _log_tail(path: Path) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    return [line for line in lines if line.strip()][-LOG_TAIL_LINES:]


def _wait_ready(name: str, port: int, process: subprocess.Popen, log: Path, deadline: float):
    url = f"http://127.0.0.1:{port}/readyz"
    while True:
        if process.poll() is not None:
            raise ServiceStartError(
                f"{name} exited with code {process.returncode} before it was ready; "
                f"the end of {_shown(log)}:",
                _log_tail(log),
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise ServiceStartError(
                f"{name} was not ready after {READY_TIMEOUT:.0f} s; see {_shown(log)}", []
            )
        time.sleep(0.25)


def _watch(children: dict[str, subprocess.Popen], embedded: EmbeddedPostgres | None) -> int:
    """Wait until a process ends by itself (exit code 1); a stop signal interrupts it."""
    while True:
        for name, child in children.items():
            if child.poll() is not None:
                say(f"{name} exited with code {child.returncode}; stopping the hub")
                return 1
        if embedded is not None and (code := embedded.exit_code()) is not None:
            say(f"the embedded PostgreSQL exited with code {code}; stopping the hub")
            return 1
        time.sleep(0.2)


def _stop_all(children: dict[str, subprocess.Popen], embedded: EmbeddedPostgres | None) -> None:
    say("stopping ...")
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    for name, child in children.items():
        try:
            child.wait(timeout=SERVICE_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            say(f"{name} did not stop in {SERVICE_STOP_TIMEOUT:.0f} s; killing it")
            child.kill()
            child.wait()
    if embedded is not None:
        embedded.stop()
        say("embedded PostgreSQL stopped")
    say("stopped")


def _banner(settings: Settings, data_dir: Path, admin: AdminKey, embedded: bool) -> str:
    where = f"embedded, {_shown(data_dir / 'postgres' / 'pgdata')}" if embedded else "DATABASE_URL"
    return (
        "\nRelais is running.\n"
        + "".join(
            f"  {name:<14} http://127.0.0.1:{_port_of(settings, name)}/docs\n" for name in SERVICES
        )
        + f"  {'dashboard':<14} http://127.0.0.1:{_port_of(settings, 'referrals')}/dashboard\n"
        + "\n"
        + admin.banner()
        + f"  database       {where}\n"
        f"  logs           {_shown(data_dir / 'logs')}/*.log (JSON lines)\n"
        "\nPress Ctrl-C to stop.\n"
    )


def run(stop: StopSignals) -> int:
    settings = Settings()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = lock_data_dir(data_dir)
    except HubAlreadyRunning as exc:
        holder = f"launcher pid {exc.pid}" if exc.pid else "launcher pid unknown"
        kill = f", or `kill {exc.pid}`" if exc.pid else ""
        say(
            f"a hub is already running on {_shown(data_dir)} ({holder}): use it, "
            f"or stop it first (Ctrl-C in its terminal{kill})"
        )
        return 1

    embedded: EmbeddedPostgres | None = None
    if not settings.database_url:
        embedded = EmbeddedPostgres(data_dir / "postgres", _embedded_pg_port(), attached=True)
        leftover = embedded.leftover_pid()
        if leftover is not None:
            say(f"stopping the PostgreSQL server (pid {leftover}) an earlier run left running")
            embedded.stop_running_server()
    problem = taken_port(_ports(settings, embedded))
    if problem:
        say(problem)
        return 1

    (data_dir / "logs").mkdir(exist_ok=True)
    children: dict[str, subprocess.Popen] = {}
    exit_code = 0
    try:
        database_url = settings.database_url or ""
        if embedded is not None:
            say(
                f"{'starting' if embedded.initialised() else 'initialising'} the embedded "
                f"PostgreSQL in {_shown(embedded.pgdata)} on 127.0.0.1:{embedded.port} ..."
            )
            embedded.start()
            asyncio.run(_ensure_database(embedded.url(), EMBEDDED_DATABASE))
            stop.checkpoint()
            database_url = embedded.url(EMBEDDED_DATABASE)
        say("applying migrations ...")
        upgrade(database_url)
        stop.checkpoint()
        admin = _admin_key(settings, data_dir)
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "RELAIS_BOOTSTRAP_ADMIN_KEY": admin.key,
            "RELAIS_ENV": settings.env.value,
            "PYTHONUNBUFFERED": "1",
        }
        logs = {name: data_dir / "logs" / f"{name}.log" for name in SERVICES}
        tied_to_launcher = dies_with_parent(signal.SIGTERM)  # a clean stop if it is killed
        for name in SERVICES:
            say(f"starting {name} on port {_port_of(settings, name)} (logs: {_shown(logs[name])})")
            with logs[name].open("ab") as log_file, stop.held():
                children[name] = subprocess.Popen(  # noqa: S603 - this interpreter, fixed module
                    [sys.executable, "-m", f"services.{name}"],
                    cwd=ROOT,
                    env=env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches the launcher, which stops them
                    preexec_fn=tied_to_launcher,
                )
        deadline = time.monotonic() + READY_TIMEOUT
        for name in SERVICES:
            _wait_ready(name, _port_of(settings, name), children[name], logs[name], deadline)
            say(f"{name} ready")
        show(_banner(settings, data_dir, admin, embedded is not None))
        exit_code = _watch(children, embedded)
    except StopRequested as exc:
        stop.stopping()
        say(f"{exc.signal.name} received")
    except (PostgresStartError, ServiceStartError) as exc:
        stop.stopping()
        say(exc.reason)
        for line in exc.log_tail:
            show(f"    {line}")
        exit_code = 1
    finally:
        stop.stopping()
        _stop_all(children, embedded)
        os.close(lock)
    return exit_code


def main() -> int:
    stop = StopSignals()  # first: a stop signal at any later moment is a clean stop
    try:
        return run(stop)
    except StopRequested as exc:  # before anything was started
        say(f"{exc.signal.name} received; stopped")
        return 0


if __name__ == "__main__":
    sys.exit(main())
