#!/usr/bin/env python3
"""Health check of a Relais container (the image's HEALTHCHECK; standard library only).

    relais-healthcheck [ROLE] [--ready]

ROLE is the entrypoint command the container runs (`registry`, `referrals-worker`, ...). Without
it, the role is found from the running processes (`python -m services.<name>[.worker]`).

- An API (`registry`, `referrals`, `notifications`): GET http://127.0.0.1:<port>/healthz, or
  /readyz with `--ready` (database reachable and schema migrated). The port is REGISTRY_PORT,
  REFERRALS_PORT or NOTIFICATIONS_PORT, else 8001, 8002, 8003.
- A worker has no HTTP server: healthy while its process runs. It reconnects to PostgreSQL by
  itself and exits on a fatal error, so the container's restart policy does the rest.
- `migrate`: healthy while it runs (it is a one-shot container).

Exit 0 when healthy, 1 otherwise, with one line saying why.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

API_PORTS = {
    "registry": ("REGISTRY_PORT", 8001),
    "referrals": ("REFERRALS_PORT", 8002),
    "notifications": ("NOTIFICATIONS_PORT", 8003),
}
WORKERS = {f"{name}-worker" for name in API_PORTS}
TIMEOUT_SECONDS = 4.0


def _role_of(argv: list[str]) -> str | None:
    """The entrypoint command behind a process's argv, if it is a Relais process."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "-m":
            module = argv[i + 1]
            parts = module.split(".")
            if len(parts) == 2 and parts[0] == "services" and parts[1] in API_PORTS:
                return parts[1]
            if len(parts) == 3 and parts[0] == "services" and parts[2] == "worker":
                return f"{parts[1]}-worker" if parts[1] in API_PORTS else None
        if arg == "-c" and "shared.migrate" in argv[i + 1]:
            return "migrate"
    return None


def running_roles() -> list[str]:
    """The roles of the Relais processes visible in /proc."""
    roles = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            raw = cmdline.read_bytes()
        except OSError:  # the process ended meanwhile, or is not ours
            continue
        role = _role_of([a.decode(errors="replace") for a in raw.split(b"\0") if a])
        if role:
            roles.append(role)
    return roles


def check_api(name: str, path: str) -> tuple[bool, str]:
    variable, default = API_PORTS[name]
    port = int(os.environ.get(variable, default))
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return response.status == 200, f"{url} answered {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url} did not answer: {exc}"


def main(args: list[str]) -> int:
    ready = "--ready" in args
    named = [a for a in args if not a.startswith("-")]
    if named:
        role = named[0]
        if role in WORKERS or role == "migrate":
            running = role in running_roles()
            return _report(running, f"{role} {'is running' if running else 'is not running'}")
    else:
        roles = running_roles()
        if not roles:
            return _report(False, "no Relais process is running")
        role = roles[0]
    if role in API_PORTS:
        return _report(*check_api(role, "/readyz" if ready else "/healthz"))
    if role in WORKERS or role == "migrate":
        return _report(True, f"{role} is running")
    return _report(False, f"unknown role {role!r}")


def _report(healthy: bool, message: str) -> int:
    print(("healthy: " if healthy else "unhealthy: ") + message)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
