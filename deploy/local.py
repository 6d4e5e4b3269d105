"""`make run`: the whole hub on one machine, until Ctrl-C.

Starts the embedded PostgreSQL under RELAIS_DATA_DIR (unless DATABASE_URL is set), applies
the migrations, makes sure an admin key exists, runs the three services (each with its
workers) as child processes, and stops all of it, PostgreSQL included, on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.auth import KEY_PREFIX  # noqa: E402
from shared.db import plain_url  # noqa: E402
from shared.embedded_pg import EmbeddedPostgres  # noqa: E402
from shared.migrate import upgrade  # noqa: E402
from shared.settings import Settings  # noqa: E402

SERVICES = ("registry", "referrals", "notifications")
EMBEDDED_DATABASE = "relais"
READY_TIMEOUT = 90.0


def say(message: str) -> None:
    print(f"[relais] {message}", flush=True)


def _port_of(settings: Settings, name: str) -> int:
    return int(getattr(settings, f"{name}_port"))


async def _ensure_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(plain_url(server_url))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _admin_key(settings: Settings) -> tuple[str, str]:
    """The bootstrap admin key and where it came from."""
    if settings.bootstrap_admin_key:
        return settings.bootstrap_admin_key, "RELAIS_BOOTSTRAP_ADMIN_KEY"
    path = settings.data_dir / "admin.key"
    if path.exists():
        return path.read_text().strip(), str(path)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key, f"{path} (new)"


def _wait_ready(url: str, process: subprocess.Popen, deadline: float) -> None:
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} was not ready after {READY_TIMEOUT:.0f} s")
        time.sleep(0.25)


def main() -> int:
    settings = Settings()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "logs").mkdir(exist_ok=True)

    embedded: EmbeddedPostgres | None = None
    database_url = settings.database_url
    if not database_url:
        port = int(os.environ.get("RELAIS_EMBEDDED_PG_PORT", "54329"))
        embedded = EmbeddedPostgres(data_dir / "postgres", port)
        fresh = not embedded.initialised()
        say(
            f"{'initialising' if fresh else 'starting'} the embedded PostgreSQL in "
            f"{embedded.pgdata} on 127.0.0.1:{port} ..."
        )
        embedded.start()
        asyncio.run(_ensure_database(embedded.url(), EMBEDDED_DATABASE))
        database_url = embedded.url(EMBEDDED_DATABASE)
    say("applying migrations ...")
    upgrade(database_url)
    admin_key, key_origin = _admin_key(settings)

    children: dict[str, subprocess.Popen] = {}
    stopping = False

    def stop_all(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)

    exit_code = 0
    try:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "RELAIS_BOOTSTRAP_ADMIN_KEY": admin_key,
            "RELAIS_ENV": settings.env.value,
            "PYTHONUNBUFFERED": "1",
        }
        for name in SERVICES:
            log_path = data_dir / "logs" / f"{name}.log"
            say(f"starting {name} on port {_port_of(settings, name)} (logs: {log_path})")
            log_file = log_path.open("ab")
            children[name] = subprocess.Popen(  # noqa: S603 - this interpreter, fixed module
                [sys.executable, "-m", f"services.{name}"],
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the launcher, which stops them in order
            )
        deadline = time.monotonic() + READY_TIMEOUT
        for name in SERVICES:
            base = f"http://127.0.0.1:{_port_of(settings, name)}"
            _wait_ready(f"{base}/readyz", children[name], deadline)
            say(f"{name} ready")
        where = f"embedded, {embedded.pgdata}" if embedded else "DATABASE_URL"
        print(
            "\nRelais is running.\n"
            + "".join(
                f"  {name:<14} http://127.0.0.1:{_port_of(settings, name)}/docs\n"
                for name in SERVICES
            )
            + f"\n  admin key      {admin_key}\n"
            f"                 (from {key_origin})\n"
            f"  database       {where}\n"
            f"  logs           {data_dir / 'logs'}/*.log (JSON lines)\n"
            "\nPress Ctrl-C to stop.\n",
            flush=True,
        )
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    say(f"{name} exited with code {child.returncode}; stopping the hub")
                    stopping = True
                    exit_code = 1
            time.sleep(0.2)
    except RuntimeError as exc:
        say(f"error: {exc}")
        exit_code = 1
    finally:
        say("stopping ...")
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        for name, child in children.items():
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                say(f"{name} did not stop in 15 s; killing it")
                child.kill()
                child.wait()
        if embedded is not None:
            embedded.stop()
            say("embedded PostgreSQL stopped")
        say("stopped")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
