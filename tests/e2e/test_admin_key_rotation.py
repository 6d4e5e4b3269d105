"""The README's "Rotating the admin key", as written there, on a hub started as `make run`
starts it; then what the start-up key in `.data/admin.key` does across restarts: revoked
through the API, it stays revoked; a new one revokes the previous one."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.e2e.processes import ROOT, LocalHub

pytestmark = pytest.mark.slow


def _readme_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Rotating the admin key") :]
    return re.search(r"^```sh\n(.*?)^```$", section, re.S | re.M)[1]


def _status(hub: LocalHub, key: str) -> int:
    url = f"http://127.0.0.1:{hub.ports['registry']}/admin-keys?limit=500"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _logged(hub: LocalHub, event: str) -> list[dict]:
    log = (hub.data_dir / "logs" / "registry.log").read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


def test_the_readme_rotation_and_the_start_up_key_across_restarts(tmp_path):
    data_dir = tmp_path / "data"
    key_file = data_dir / "admin.key"
    hub = LocalHub(data_dir)
    hub.run()
    try:
        old = key_file.read_text().strip()
        script = _readme_block() + '\necho "NEW=$NEW"\n'
        run = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=ROOT,
            env=hub.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.splitlines()[:2] == ["200", "204"], run.stdout
        new = re.search(r"^NEW=(\S+)$", run.stdout, re.M)[1]
        assert _status(hub, old) == 401 and _status(hub, new) == 200
    finally:
        assert hub.stop() == 0, hub.output

    # The start-up key revoked through the API stays revoked, and the log says so.
    hub = LocalHub(data_dir)
    hub.run()
    try:
        assert _status(hub, old) == 401 and _status(hub, new) == 200
        [line] = _logged(hub, "bootstrap_admin_key_revoked")
        assert line["level"] == "warning" and old not in json.dumps(line)
    finally:
        assert hub.stop() == 0, hub.output

    # Without the file, the launcher makes a new start-up key, which works beside the new one.
    key_file.unlink()
    hub = LocalHub(data_dir)
    hub.run()
    try:
        assert "(new; kept in" in hub.output
        fresh = key_file.read_text().strip()
        assert _status(hub, fresh) == 200 and _status(hub, new) == 200
    finally:
        assert hub.stop() == 0, hub.output

    # The operator puts another key in the file: the previous start-up key stops working.
    replacement = "rk_replaced-by-the-operator-" + "r" * 30
    key_file.write_text(replacement + "\n")
    hub = LocalHub(data_dir)
    hub.run()
    try:
        assert _status(hub, replacement) == 200
        assert _status(hub, fresh) == 401 and _status(hub, old) == 401
        assert _status(hub, new) == 200
    finally:
        assert hub.stop() == 0, hub.output
