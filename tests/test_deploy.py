"""deploy/ passes tools/validate_deploy.py and the linters .ci/run runs before it (hadolint,
yamllint, the compose schema), and each catches broken copies of it: the validator what is
particular to Relais, the linters what any Dockerfile, YAML or compose file must be."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VALIDATOR = ROOT / "tools" / "validate_deploy.py"
HAVE_SCHEMAS = importlib.util.find_spec("kubernetes_validate") is not None
SKIP_SCHEMAS = [] if HAVE_SCHEMAS else ["--skip-schemas"]
needs_schemas = pytest.mark.skipif(
    not HAVE_SCHEMAS, reason="kubernetes-validate is not installed (dev extra)"
)


def _load_validator():
    spec = importlib.util.spec_from_file_location("validate_deploy", VALIDATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("validate_deploy", module)
    spec.loader.exec_module(module)
    return module


validate_deploy = _load_validator()


def check(root: Path) -> list[str]:
    return validate_deploy.validate(root, schemas=HAVE_SCHEMAS)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A repository whose deploy/ is a copy to break; the rest links to the real one."""
    shutil.copytree(
        ROOT / "deploy", tmp_path / "deploy", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md", "shared", "services"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path}: update the test"
    path.write_text(text.replace(old, new, 1))


def edit_yaml(path: Path, change: Callable[[list], None]) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    change(documents)
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))


def test_deploy_is_valid() -> None:
    assert check(ROOT) == []


def test_cli_passes_on_the_repository() -> None:
    result = subprocess.run(
        [sys.executable, str(VALIDATOR), *SKIP_SCHEMAS],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "deploy/ is valid" in result.stdout


def test_an_unchanged_copy_is_valid(copy: Path) -> None:
    assert check(copy) == []


def test_cli_fails_on_a_broken_copy(copy: Path) -> None:
    edit(
        copy / "deploy" / "docker-compose.yml",
        "      condition: service_healthy\n",
        "      condition: service_healthy\n    ghost:\n      condition: service_started\n",
    )
    result = subprocess.run(
        [sys.executable, str(VALIDATOR), "--root", str(copy), *SKIP_SCHEMAS],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "ERROR deploy/docker-compose.yml: service" in result.stderr
    assert "depends_on 'ghost', which is not a service" in result.stderr


def _drop_selector(docs: list) -> None:
    del docs[0]["spec"]["selector"]


def _drop_container_name(docs: list) -> None:
    del docs[0]["spec"]["template"]["spec"]["containers"][0]["name"]


SERVICE_SELECTOR = (
    "  selector:\n    app.kubernetes.io/name: relais\n    app.kubernetes.io/component: "
)

BROKEN = {
    "deployment without its selector": (
        lambda root: edit_yaml(root / "deploy/kubernetes/referrals.yaml", _drop_selector),
        "Deployment relais-referrals",
        "selector",
    ),
    "compose depends_on a missing service": (
        lambda root: edit(
            root / "deploy/docker-compose.yml",
            "    migrate:\n      condition: service_completed_successfully",
            "    migrations:\n      condition: service_completed_successfully",
        ),
        "docker-compose.yml",
        "depends_on 'migrations', which is not a service",
    ),
    "compose secret written inline": (
        lambda root: edit(
            root / "deploy/docker-compose.yml",
            "${RELAIS_BOOTSTRAP_ADMIN_KEY:?set RELAIS_BOOTSTRAP_ADMIN_KEY}",
            "rk_0123456789abcdef0123456789abcdef",
        ),
        "docker-compose.yml",
        "RELAIS_BOOTSTRAP_ADMIN_KEY is a secret written inline",
    ),
    "compose secret with a default": (
        lambda root: edit(
            root / "deploy/docker-compose.yml",
            "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}@",
            "${POSTGRES_PASSWORD:-postgres}@",
        ),
        "docker-compose.yml",
        "${POSTGRES_PASSWORD} has a default value",
    ),
    "one-shot migration restarted forever": (
        lambda root: edit(root / "deploy/docker-compose.yml", '    restart: "no"\n', ""),
        "docker-compose.yml",
        "waits for migrate to complete",
    ),
    "compose command unknown to the entrypoint": (
        lambda root: edit(
            root / "deploy/docker-compose.yml",
            'command: ["referrals-worker"]',
            'command: ["router"]',
        ),
        "docker-compose.yml",
        "the entrypoint knows no command 'router'",
    ),
    "Dockerfile running as root": (
        lambda root: edit(root / "deploy/Dockerfile", "USER 10001:10001\n", ""),
        "deploy/Dockerfile",
        "no USER",
    ),
    "Dockerfile on another base image": (
        lambda root: edit(
            root / "deploy/Dockerfile",
            "ARG PYTHON_IMAGE=python:3.11-slim",
            "ARG PYTHON_IMAGE=python:3.13",
        ),
        "deploy/Dockerfile",
        "not python:3.11-slim",
    ),
    "entrypoint not executable": (
        lambda root: (root / "deploy/entrypoint.sh").chmod(0o644),
        "deploy/entrypoint.sh",
        "not executable",
    ),
    "entrypoint command running a missing module": (
        lambda root: edit(
            root / "deploy/entrypoint.sh",
            "exec python -m services.referrals.worker",
            "exec python -m services.referrals.workers",
        ),
        "deploy/entrypoint.sh",
        "module services.referrals.workers does not exist",
    ),
    "entrypoint migrate importing a missing function": (
        lambda root: edit(
            root / "deploy/entrypoint.sh",
            "from shared.migrate import upgrade",
            "from shared.migrate import upgrayedd",
        ),
        "deploy/entrypoint.sh",
        "shared.migrate defines no upgrayedd",
    ),
    "entrypoint without a worker command": (
        lambda root: edit(
            root / "deploy/entrypoint.sh",
            '    notifications-worker) exec python -m services.notifications.worker "$@" ;;\n',
            "",
        ),
        "deploy/entrypoint.sh",
        "lacks the commands notifications-worker",
    ),
    "manifest without its kind": (
        lambda root: edit(root / "deploy/kubernetes/namespace.yaml", "kind: Namespace\n", ""),
        "deploy/kubernetes/namespace.yaml",
        "document 1: missing kind",
    ),
    "Dockerfile without a health check": (
        lambda root: edit(
            root / "deploy/Dockerfile",
            "HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \\\n"
            '    CMD ["relais-healthcheck"]\n',
            "HEALTHCHECK NONE\n",
        ),
        "deploy/Dockerfile",
        "HEALTHCHECK NONE",
    ),
    "kustomization listing a missing file": (
        lambda root: (root / "deploy/kubernetes/workers.yaml").rename(
            root / "deploy/kubernetes/worker.yaml"
        ),
        "kustomization.yaml",
        "lists workers.yaml, which does not exist",
    ),
    "real value in the Secret template": (
        lambda root: edit(
            root / "deploy/kubernetes/secret.yaml",
            "RELAIS_BOOTSTRAP_ADMIN_KEY: REPLACE-ME",
            "RELAIS_BOOTSTRAP_ADMIN_KEY: rk_0123456789abcdef0123456789abcdef",
        ),
        "secret.yaml",
        "RELAIS_BOOTSTRAP_ADMIN_KEY is not a REPLACE-ME placeholder",
    ),
    "API without its readiness probe": (
        lambda root: edit(
            root / "deploy/kubernetes/notifications.yaml", "path: /readyz", "path: /healthz"
        ),
        "Deployment relais-notifications",
        "readinessProbe must GET /readyz",
    ),
    "writable root file system": (
        lambda root: edit(
            root / "deploy/kubernetes/migrate-job.yaml",
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: false",
        ),
        "Job relais-migrate",
        "readOnlyRootFilesystem: true",
    ),
    "Secret reference to a missing key": (
        lambda root: edit(
            root / "deploy/kubernetes/registry.yaml",
            "key: RELAIS_BOOTSTRAP_ADMIN_KEY",
            "key: ADMIN_KEY",
        ),
        "registry.yaml",
        "refers to key ADMIN_KEY missing from relais-secrets",
    ),
    "Service selecting no pods": (
        lambda root: edit(
            root / "deploy/kubernetes/referrals.yaml",
            f"{SERVICE_SELECTOR}referrals\n  ports:",
            f"{SERVICE_SELECTOR}referral\n  ports:",
        ),
        "Service relais-referrals",
        "matches no pods",
    ),
    "workload running an unknown command": (
        lambda root: edit(
            root / "deploy/kubernetes/workers.yaml",
            'args: ["registry-worker"]',
            'args: ["projector"]',
        ),
        "workers.yaml",
        "args ['projector'] is not a command of the entrypoint",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_copy_fails(copy: Path, case: str) -> None:
    breaks, where, message = BROKEN[case]
    breaks(copy)
    problems = check(copy)
    assert any(where in line and message in line for line in problems), problems


@needs_schemas
def test_the_schemas_catch_a_missing_required_field(copy: Path) -> None:
    edit_yaml(copy / "deploy/kubernetes/workers.yaml", _drop_container_name)
    problems = check(copy)
    assert any(
        "Deployment relais-registry-worker: Kubernetes" in line
        and "'name' is a required property" in line
        for line in problems
    ), problems


@needs_schemas
def test_the_schemas_catch_an_unknown_field(copy: Path) -> None:
    edit(copy / "deploy/kubernetes/registry.yaml", "  minReplicas: 2", "  minReplica: 2")
    problems = check(copy)
    assert any(
        "HorizontalPodAutoscaler relais-registry: Kubernetes" in line
        and "'minReplica' was unexpected" in line
        for line in problems
    ), problems


@needs_schemas
def test_the_schemas_catch_a_wrong_type(copy: Path) -> None:
    edit(copy / "deploy/kubernetes/referrals.yaml", "containerPort: 8002", "containerPort: http")
    problems = check(copy)
    assert any("Deployment relais-referrals: Kubernetes" in line for line in problems), problems


def test_a_file_that_does_not_parse_is_named(copy: Path) -> None:
    """Why is yamllint's (below); the validator names the file and skips what it cannot read."""
    edit(copy / "deploy/kubernetes/configmap.yaml", "data:\n", "data:\n  - [\n")
    problems = check(copy)
    assert "deploy/kubernetes/configmap.yaml: invalid YAML (yamllint --strict says where)" in (
        problems
    )
    assert "deploy/kubernetes: the manifests are checked further once every file parses" in (
        problems
    )


def test_the_packaging_must_carry_the_migrations(copy: Path) -> None:
    (copy / "pyproject.toml").unlink()
    text = (ROOT / "pyproject.toml").read_text()
    old = 'shared = ["data/*.csv", "data/*.json", "migrations/*.ini", "migrations/*.mako"]'
    assert old in text
    (copy / "pyproject.toml").write_text(
        text.replace(old, 'shared = ["data/*.csv", "data/*.json"]')
    )
    problems = check(copy)
    assert any("alembic.ini: not in the wheel" in line for line in problems), problems
    assert any("script.py.mako: not in the wheel" in line for line in problems), problems


# --- what any Dockerfile, YAML or compose file must be: the tools .ci/run runs ----------

BIN = Path(sys.executable).parent
LINTERS = {
    "hadolint": [str(BIN / "hadolint"), "--config", str(ROOT / ".hadolint.yaml")],
    "yamllint": [str(BIN / "yamllint"), "--strict", "--config-file", str(ROOT / ".yamllint.yaml")],
    "compose schema": [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec"],
}
LINTED = {
    "hadolint": "deploy/Dockerfile",
    "yamllint": "deploy",
    "compose schema": "deploy/docker-compose.yml",
}


def lint(tool: str, root: Path) -> subprocess.CompletedProcess:
    executable = Path(LINTERS[tool][0])
    assert executable.is_file(), f"{executable.name} is missing: `make install` (dev extra)"
    return subprocess.run(
        [*LINTERS[tool], str(root / LINTED[tool])],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )


@pytest.mark.parametrize("tool", sorted(LINTERS))
def test_the_linters_pass_on_the_repository(tool: str) -> None:
    result = lint(tool, ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


LINTER_BREAKS = {
    "hadolint: a root USER": (
        "hadolint",
        lambda root: edit(root / "deploy/Dockerfile", "USER 10001:10001\n", "USER root\n"),
        "DL3002",
    ),
    "hadolint: a USER by name, not uid": (
        "hadolint",
        lambda root: edit(root / "deploy/Dockerfile", "USER 10001:10001\n", "USER relais\n"),
        "DL3066",
    ),
    "hadolint: no HEALTHCHECK in the final stage": (
        "hadolint",
        lambda root: edit(
            root / "deploy/Dockerfile",
            "HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \\\n"
            '    CMD ["relais-healthcheck"]\n',
            "",
        ),
        "DL3057",
    ),
    "yamllint: trailing spaces": (
        "yamllint",
        lambda root: edit(
            root / "deploy/kubernetes/configmap.yaml",
            "  RELAIS_LOG_LEVEL: INFO\n",
            "  RELAIS_LOG_LEVEL:   INFO   \n",
        ),
        "trailing-spaces",
    ),
    "yamllint: invalid YAML": (
        "yamllint",
        lambda root: edit(root / "deploy/kubernetes/configmap.yaml", "data:\n", "data:\n  - [\n"),
        "syntax error",
    ),
    "yamllint: a duplicate key": (
        "yamllint",
        lambda root: edit(
            root / "deploy/kubernetes/configmap.yaml",
            "  RELAIS_LOG_LEVEL: INFO\n",
            "  RELAIS_LOG_LEVEL: INFO\n  RELAIS_LOG_LEVEL: DEBUG\n",
        ),
        'duplication of key "RELAIS_LOG_LEVEL"',
    ),
    "compose schema: an unknown key": (
        "compose schema",
        lambda root: edit(
            root / "deploy/docker-compose.yml", '    restart: "no"\n', "    restart_policy: never\n"
        ),
        "restart_policy",
    ),
    "compose schema: a service that is not a mapping": (
        "compose schema",
        lambda root: edit(
            root / "deploy/docker-compose.yml", "services:\n", "services:\n  ghost: 1\n"
        ),
        "$.services.ghost",
    ),
}


@pytest.mark.parametrize("case", sorted(LINTER_BREAKS))
def test_the_linters_catch_a_broken_copy(copy: Path, case: str) -> None:
    tool, breaks, message = LINTER_BREAKS[case]
    assert lint(tool, copy).returncode == 0, f"{tool} refuses the unchanged copy"
    breaks(copy)
    result = lint(tool, copy)
    assert result.returncode != 0 and message in result.stdout + result.stderr, result
