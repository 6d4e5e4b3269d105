#!/usr/bin/env python3
"""Offline checks of deploy/ that are about Relais: what the services, their settings, the
entrypoint and the migrations need of the Dockerfile, the compose file and the Kubernetes
manifests. No network, no Docker engine, no cluster.

    .venv/bin/python tools/validate_deploy.py [--root DIR] [--kubernetes-version 1.30 ...]
                                              [--skip-schemas]

What any Dockerfile, YAML file or compose file must be is left to the tools made for it, which
.ci/run runs before this script: hadolint (deploy/Dockerfile, .hadolint.yaml: a root or
non-numeric USER, a missing HEALTHCHECK, a shell-form ENTRYPOINT, ...), yamllint --strict
(deploy/, .yamllint.yaml: syntax, duplicate keys, indentation, ...) and check-jsonschema with
the compose specification's schema (deploy/docker-compose.yml: its structure, keys and
types). The Kubernetes manifests are validated here, strictly, against the schemas the
`kubernetes-validate` package bundles (default: 1.30 and the newest it knows), so that each
error names its resource. A YAML file that does not parse is only named here.

- Dockerfile: python:3.11-slim, a USER whose uid Kubernetes' runAsUser must be, the project
  installed with its sources in the build context, the entrypoint script copied, the health
  check script sound and not turned off, RELAIS_BIND_HOST=0.0.0.0; each entrypoint command
  runs a module of this repository; the packaging carries the migrations and data files.
- Compose: depends_on targets, health checks and the one-shot migration; no inline secret;
  each Relais container runs a command the entrypoint knows, with its port and settings.
- Kubernetes: non-root, read-only root file system, resources, probes of the APIs,
  references between Services, HorizontalPodAutoscalers, ConfigMaps and Secrets,
  placeholders only in Secrets, the kustomization listing every file.

Exit status 0 when deploy/ is valid, 1 with one line per problem otherwise.
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import re
import shlex
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]

# The entrypoint's commands: the APIs with their ports, their workers, the migrations.
API_PORTS = {"registry": 8001, "referrals": 8002, "notifications": 8003}
WORKER_COMMANDS = {f"{name}-worker" for name in API_PORTS}
MIGRATE_COMMAND = "migrate"
REQUIRED_COMMANDS = {*API_PORTS, *WORKER_COMMANDS, MIGRATE_COMMAND}

BASE_IMAGE = "python:3.11-slim"
POSTGRES_IMAGE = "postgres:16"
IMAGE_NAME = "relais"
PLACEHOLDER = "REPLACE-ME"
DEFAULT_KUBERNETES_VERSIONS = ("1.30", "latest")

# Environment variables whose values are secrets.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PASSPHRASE|(^|_)KEY($|_)|DATABASE_URL|DSN", re.I)
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}")
URL_PASSWORD = re.compile(r"://[^/:@\s]*:(?P<password>(?:\$\{[^}]*\}|[^@/\s$])*)@")

POD_KINDS = {"Deployment", "Job", "StatefulSet", "DaemonSet"}


@dataclass
class Problems:
    """What is wrong, one line per problem, each naming its file."""

    root: Path
    lines: list[str] = field(default_factory=list)

    def add(self, where: Path | str, message: str) -> None:
        if isinstance(where, Path):
            try:
                where = where.relative_to(self.root).as_posix()
            except ValueError:
                where = str(where)
        self.lines.append(f"{where}: {message}")


def _dict(value: Any) -> dict[str, Any]:
    """A mapping, or {} for anything else (the schemas name what else it is)."""
    return value if isinstance(value, dict) else {}


def load_yaml(path: Path, problems: Problems) -> list[Any] | None:
    """The documents of a YAML file (empty ones dropped), or None if it does not parse."""
    try:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (yaml.YAMLError, UnicodeDecodeError):
        problems.add(path, "invalid YAML (yamllint --strict says where)")
        return None
    return [doc for doc in documents if doc is not None]


# --- the entrypoint and the modules it runs ----------------------------------------------

# `role | other-role) exec python ... ;;`, one role per line.
_CASE_ARM = re.compile(r"^\s*(?P<labels>[\w-]+(?:\s*\|\s*[\w-]+)*)\)\s*(?P<body>exec\s.*)$")


def _module_path(root: Path, dotted: str) -> Path | None:
    """The file of a module (or a package's __init__.py) of this repository."""
    base = root.joinpath(*dotted.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _defines(path: Path, name: str) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return True
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and any(
            (alias.asname or alias.name.split(".")[0]) == name for alias in node.names
        ):
            return True
    return False


def _check_python_command(root: Path, args: list[str]) -> str | None:
    """Why `python <args>` would not run a module of this repository (None: it would)."""
    if len(args) >= 2 and args[0] == "-m":
        module = args[1]
        base = root.joinpath(*module.split("."))
        if (base / "__init__.py").is_file():
            return (
                None if (base / "__main__.py").is_file() else f"package {module} has no __main__.py"
            )
        path = _module_path(root, module)
        if path is None:
            return f"module {module} does not exist ({base.relative_to(root)}.py)"
        if "__main__" not in path.read_text(encoding="utf-8"):
            return f"module {module} has no `if __name__ == '__main__'` block"
        return None
    if len(args) >= 2 and args[0] == "-c":
        try:
            tree = ast.parse(args[1])
        except SyntaxError as exc:
            return f"python -c code does not parse: {exc}"
        ours = 0
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if not (root / node.module.split(".")[0]).is_dir():
                    continue
                ours += 1
                path = _module_path(root, node.module)
                if path is None:
                    return f"module {node.module} does not exist"
                for alias in node.names:
                    if not _defines(path, alias.name):
                        return f"{node.module} defines no {alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if (root / alias.name.split(".")[0]).is_dir():
                        ours += 1
                        if _module_path(root, alias.name) is None:
                            return f"module {alias.name} does not exist"
        return None if ours else "python -c code imports no module of this repository"
    return f"expected `python -m MODULE` or `python -c CODE`, not `python {shlex.join(args)}`"


def check_entrypoint(root: Path, script: Path, problems: Problems) -> set[str]:
    """The commands the entrypoint accepts, each checked to run an existing module."""
    if not script.is_file():
        problems.add(script, "the entrypoint script does not exist")
        return set()
    if not script.stat().st_mode & 0o111:
        problems.add(script, "the entrypoint script is not executable (chmod +x)")
    text = script.read_text(encoding="utf-8")
    if not text.startswith("#!"):
        problems.add(script, "the entrypoint script has no #! line")
    if not re.search(r"^\s*set -[a-z]*e", text, re.M):
        problems.add(script, "the entrypoint script does not `set -e`")
    commands: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        match = _CASE_ARM.match(line)
        if not match:
            continue
        labels = [label.strip() for label in match["labels"].split("|")]
        try:
            words = shlex.split(match["body"].strip().removesuffix(";;"))
        except ValueError as exc:
            problems.add(script, f"line {number}: cannot split the command: {exc}")
            continue
        if len(words) < 2 or PurePosixPath(words[1]).name not in {"python", "python3"}:
            problems.add(script, f"line {number}: {labels[0]} must `exec python ...`")
            continue
        why = _check_python_command(root, words[2:])
        if why:
            problems.add(script, f"line {number}: command {labels[0]!r}: {why}")
        commands.update(labels)
    missing = REQUIRED_COMMANDS - commands
    if missing:
        problems.add(script, f"the entrypoint lacks the commands {', '.join(sorted(missing))}")
    return commands


# --- the Dockerfile ----------------------------------------------------------------------


@dataclass
class Instruction:
    line: int
    name: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined, comments and blank lines dropped."""
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0

    def flush() -> None:
        name, _, args = " ".join(p for p in parts if p).partition(" ")
        instructions.append(Instruction(start, name.upper(), args.strip()))
        parts.clear()

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not parts:
            start = number
        parts.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            flush()
    if parts:  # a continuation at the end of the file
        flush()
    return instructions


def _exec_form(args: str) -> list[str] | None:
    """The words of a JSON (exec form) argument list, or None for the shell form."""
    try:
        value = json.loads(args) if args.startswith("[") else None
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _substitute(value: str, variables: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        return variables.get(match[1] or match[2], match[0])

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", one, value)


def _copy_parts(args: str) -> tuple[dict[str, str], list[str], str] | None:
    """(flags, sources, destination) of a COPY or ADD."""
    words = _exec_form(args) or shlex.split(args)
    flags: dict[str, str] = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    if len(words) < 2:
        return None
    return flags, words[:-1], words[-1]


def _dockerignore_keeps(ignore: Path, source: str) -> bool:
    """Whether an allow-list ignore file (`**` then `!path` lines) keeps `source`."""
    if not ignore.is_file():
        return True
    lines = [ln.strip() for ln in ignore.read_text(encoding="utf-8").splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    if "**" not in patterns and "*" not in patterns:
        return True
    source = source.strip("/").removeprefix("./")
    for pattern in patterns:
        if pattern.startswith("!"):
            kept = pattern[1:].strip("/")
            if source == kept or source.startswith(kept + "/"):
                return True
    return False


@dataclass
class DockerfileFacts:
    uid: int | None = None
    entrypoint_source: Path | None = None


def check_dockerfile(
    root: Path, dockerfile: Path, pyproject: dict[str, Any], problems: Problems
) -> DockerfileFacts:
    facts = DockerfileFacts()
    if not dockerfile.is_file():
        problems.add(dockerfile, "the Dockerfile does not exist")
        return facts
    arg_defaults: dict[str, str] = {}
    stages: list[list[Instruction]] = []
    for ins in parse_dockerfile(dockerfile.read_text(encoding="utf-8")):
        if ins.name == "FROM":
            stages.append([ins])
        elif stages:
            stages[-1].append(ins)
        elif ins.name == "ARG":
            key, _, value = ins.args.partition("=")
            arg_defaults[key.strip()] = value.strip().strip("\"'")
    if not stages:  # hadolint names what is wrong with such a file
        return facts
    final = stages[-1]
    base = _substitute(final[0].args.split()[0], arg_defaults)
    if not base.startswith(BASE_IMAGE):
        problems.add(dockerfile, f"the final stage is FROM {base}, not {BASE_IMAGE}")

    def last(name: str) -> Instruction | None:
        found = [ins for ins in final if ins.name == name]
        return found[-1] if found else None

    # A root (DL3002) or non-numeric (DL3066) USER is hadolint's; the uid is Kubernetes'.
    user = last("USER")
    if user is None:
        problems.add(dockerfile, "the final stage has no USER: the image would run as root")
    elif user.args.split(":")[0].strip().isdigit():
        facts.uid = int(user.args.split(":")[0])

    env: dict[str, str] = {}
    for ins in final:
        if ins.name == "ENV":
            words = shlex.split(ins.args)
            if words and "=" not in words[0]:
                env[words[0]] = " ".join(words[1:])
            else:
                for word in words:
                    key, _, value = word.partition("=")
                    env[key] = value
    if env.get("RELAIS_BIND_HOST") != "0.0.0.0":
        problems.add(dockerfile, "the final stage does not set ENV RELAIS_BIND_HOST=0.0.0.0")

    if not any(
        ins.name == "RUN" and re.search(r"pip install( [^.&;|]*)? \.(\s|$|\[)", ins.args)
        for stage in stages
        for ins in stage
    ):
        problems.add(dockerfile, "no RUN installs the project (`pip install .`)")

    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    copied: dict[str, str] = {}  # destination -> source, in the final stage
    sources: set[str] = set()
    for stage in stages:
        for ins in stage:
            if ins.name not in {"COPY", "ADD"}:
                continue
            parts = _copy_parts(ins.args)
            if parts is None:
                problems.add(dockerfile, f"line {ins.line}: cannot read {ins.name} {ins.args}")
                continue
            flags, srcs, dest = parts
            if "from" in flags:
                continue
            for src in srcs:
                sources.add(src.strip("/").removeprefix("./"))
                if not (root / src).exists():
                    problems.add(
                        dockerfile, f"line {ins.line}: {ins.name} source {src} does not exist"
                    )
                elif not _dockerignore_keeps(ignore, src):
                    problems.add(
                        ignore, f"{src} (line {ins.line} of the Dockerfile) is not in the context"
                    )
                if stage is final:
                    target = dest if not dest.endswith("/") else dest + PurePosixPath(src).name
                    copied[target] = src

    if pyproject:
        needed = {"pyproject.toml"}
        readme = pyproject.get("project", {}).get("readme")
        if isinstance(readme, str):
            needed.add(readme)
        needed.update(top for top, _ in _package_tops(pyproject))
        for item in sorted(needed - sources):
            problems.add(dockerfile, f"the image is built without {item} (no COPY of it)")

    def copied_file(name: str) -> Path | None:
        for dest, src in copied.items():
            if dest == name or PurePosixPath(dest).name == name:
                return root / src
        return None

    entrypoint = last("ENTRYPOINT")
    words = _exec_form(entrypoint.args) if entrypoint else None
    if entrypoint is None:
        problems.add(dockerfile, "no ENTRYPOINT: the command could not pick the role")
    elif words:  # the shell form is hadolint's to refuse (DL3025)
        source = copied_file(words[0])
        if source is None:
            problems.add(dockerfile, f"ENTRYPOINT {words[0]} is not a file this Dockerfile copies")
        else:
            facts.entrypoint_source = source

    # A missing HEALTHCHECK is hadolint's (DL3057), which takes HEALTHCHECK NONE for one.
    health = last("HEALTHCHECK")
    if health is not None and health.args.upper().startswith("NONE"):
        problems.add(
            dockerfile, f"line {health.line}: HEALTHCHECK NONE turns off the image's health check"
        )
    command = health.args.split("CMD", 1) if health else []
    words = _exec_form(command[1].strip()) if len(command) == 2 else None
    source = copied_file(words[0]) if words else None
    if source is not None:
        if not source.stat().st_mode & 0o111:
            problems.add(source, "the health check script is not executable")
        if source.suffix == ".py":
            try:
                ast.parse(source.read_text(encoding="utf-8"))
            except SyntaxError as exc:
                problems.add(source, f"does not parse: {exc}")
    return facts


# --- packaging: what `pip install .` puts in the image -----------------------------------


def _package_tops(pyproject: dict[str, Any]) -> list[tuple[str, bool]]:
    """(top folder, namespaces) of each `packages.find` include of pyproject.toml."""
    find = pyproject.get("tool", {}).get("setuptools", {}).get("packages", {}).get("find", {})
    namespaces = find.get("namespaces", True)
    return [(p.rstrip("*").rstrip("."), namespaces) for p in find.get("include", [])]


def check_packaging(root: Path, pyproject: dict[str, Any], problems: Problems) -> None:
    """Every file of the packages reaches the wheel: modules (namespace packages included)
    and data files (package-data), e.g. the Alembic migrations and the seed CSVs."""
    if not pyproject:
        problems.add(root / "pyproject.toml", "missing")
        return
    package_data: dict[str, list[str]] = (
        pyproject.get("tool", {}).get("setuptools", {}).get("package-data", {})
    )
    for top, namespaces in _package_tops(pyproject):
        top_dir = root / top
        if not top_dir.is_dir():
            problems.add(
                root / "pyproject.toml", f"packages.find includes {top}*, which does not exist"
            )
            continue
        covered: set[Path] = set()
        for key, patterns in package_data.items():
            base = root.joinpath(*key.split(".")) if key not in {"*", ""} else top_dir
            for pattern in patterns:
                covered.update(p.resolve() for p in base.glob(pattern))
        for path in sorted(top_dir.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            if path.suffix == ".py":
                if not namespaces and not (path.parent / "__init__.py").is_file():
                    problems.add(
                        path,
                        "not in the wheel: its folder has no __init__.py "
                        "and packages.find has namespaces = false",
                    )
            elif path.resolve() not in covered:
                problems.add(
                    path,
                    "not in the wheel, hence not in the image: add it to "
                    "[tool.setuptools.package-data] in pyproject.toml",
                )


# --- compose -----------------------------------------------------------------------------


def _environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (str(item).partition("=") for item in env)
        return {key: (value if sep else None) for key, sep, value in pairs}
    return dict(_dict(env))


def _secret_value_problem(key: str, value: Any) -> str | None:
    """Why an environment value holds a secret inline (None: it does not)."""
    text = "" if value is None else str(value)
    secret_key = bool(SECRET_NAME.search(key))
    refs = list(INTERPOLATION.finditer(text))
    password = URL_PASSWORD.search(text)
    if password and not INTERPOLATION.fullmatch(password["password"]):
        return f"{key} holds a password inline; use ${{VARIABLE:?message}}"
    if secret_key and value is not None and not refs and "://" not in text:
        return f"{key} is a secret written inline; use ${{{key}:?set it}}"
    for ref in refs:
        if secret_key or SECRET_NAME.search(ref["name"]):
            if ref["op"] in {"-", ":-"} and ref["arg"]:
                return f"{key}: ${{{ref['name']}}} has a default value, a secret in the file"
            if ref["op"] not in {"?", ":?"}:
                return f"{key}: write ${{{ref['name']}:?message}} so that it must be set"
    return None


def _depends(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {str(name): "service_started" for name in deps}
    return {
        str(name): str(_dict(spec).get("condition", "service_started"))
        for name, spec in _dict(deps).items()
    }


def _command(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str):
        return shlex.split(value)
    return []


def check_compose(
    path: Path, documents: list[Any], commands: set[str], dockerfile: Path, problems: Problems
) -> None:
    # What a compose file is (one mapping, its services mappings) is the compose schema's.
    compose = _dict(documents[0]) if documents else {}
    services = {n: s for n, s in _dict(compose.get("services")).items() if isinstance(s, dict)}

    # The Relais services: built from deploy/Dockerfile, or running the image such a build tags.
    relais: set[str] = set()
    relais_images: set[str] = set()
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        spec = {"context": build} if isinstance(build, str) else _dict(build)
        context = (path.parent / str(spec.get("context", "."))).resolve()
        if not context.is_dir():
            problems.add(path, f"service {name}: build context {context} does not exist")
        built = (context / str(spec.get("dockerfile", "Dockerfile"))).resolve()
        if not built.is_file():
            problems.add(path, f"service {name}: Dockerfile {built} does not exist")
        if built == dockerfile.resolve():
            relais.add(name)
            if "image" in service:
                relais_images.add(str(service["image"]))
    relais.update(name for name, s in services.items() if str(s.get("image")) in relais_images)

    restarting: set[str] = set()
    for name, service in services.items():
        for target, condition in _depends(service).items():
            if target not in services:
                problems.add(path, f"service {name}: depends_on {target!r}, which is not a service")
                continue
            other = services[target]
            check = other.get("healthcheck")
            if condition == "service_healthy" and (
                not isinstance(check, dict) or check.get("disable") or "test" not in check
            ):
                problems.add(
                    path,
                    f"service {name}: waits for {target} to be healthy, which has no healthcheck",
                )
            if (
                condition == "service_completed_successfully"
                and str(other.get("restart", "no")) not in {"no", "on-failure", "False"}
                and target not in restarting
            ):
                restarting.add(target)
                problems.add(
                    path,
                    f"service {name}: waits for {target} to complete, but {target} has "
                    f'restart: {other.get("restart")} (use restart: "no")',
                )
        for key, value in _environment(service).items():
            why = _secret_value_problem(str(key), value)
            if why:
                problems.add(path, f"service {name}: {why}")

    postgres = [n for n, s in services.items() if str(s.get("image", "")).startswith("postgres:")]
    if not postgres:
        problems.add(path, "no PostgreSQL service")
    for name in postgres:
        if not str(services[name]["image"]).startswith(POSTGRES_IMAGE):
            problems.add(path, f"service {name}: {services[name]['image']} is not {POSTGRES_IMAGE}")

    command_of = {name: _command(services[name].get("command"))[:1] for name in relais}
    migrate = next((n for n in sorted(relais) if command_of[n] == [MIGRATE_COMMAND]), None)
    ran: set[str] = set()
    for name in sorted(relais):
        service = services[name]
        if not command_of[name]:
            problems.add(path, f"service {name}: no command (one of {', '.join(sorted(commands))})")
            continue
        command = command_of[name][0]
        if command not in commands:
            problems.add(path, f"service {name}: the entrypoint knows no command {command!r}")
            continue
        ran.add(command)
        env = _environment(service)
        if command in API_PORTS:
            if str(env.get("RELAIS_RUN_WORKERS", "")).lower() != "false":
                problems.add(path, f'service {name}: set RELAIS_RUN_WORKERS: "false"')
            ports = [str(p) for p in service.get("ports") or []]
            wanted = str(API_PORTS[command])
            if ports and not any(p.split(":")[-1].split("/")[0] == wanted for p in ports):
                problems.add(path, f"service {name}: publishes {ports}, not port {wanted}")
        if command != MIGRATE_COMMAND:
            if "DATABASE_URL" not in env:
                problems.add(path, f"service {name}: no DATABASE_URL")
            if migrate and _depends(service).get(migrate) != "service_completed_successfully":
                problems.add(
                    path,
                    f"service {name}: depend on {migrate} with "
                    "condition: service_completed_successfully",
                )
            check = service.get("healthcheck")
            if not isinstance(check, dict) or check.get("disable"):
                problems.add(path, f"service {name}: no healthcheck")
    for command in sorted(REQUIRED_COMMANDS - ran):
        problems.add(path, f"no service runs the command {command!r}")


# --- Kubernetes --------------------------------------------------------------------------


@dataclass
class Resource:
    path: Path
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind"))

    @property
    def name(self) -> str:
        return str(_dict(self.doc.get("metadata")).get("name"))

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"

    @property
    def spec(self) -> dict[str, Any]:
        return _dict(self.doc.get("spec"))


def _selects(selector: dict[str, Any] | None, labels: dict[str, Any]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in _dict(selector).items())


def _schema_validate(
    resources: list[Resource], versions: Iterable[str], problems: Problems
) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        problems.add(
            "kubernetes-validate",
            "not installed: `pip install -e '.[dev]'` (or run with --skip-schemas)",
        )
        return
    known = [v if v != "latest" else kubernetes_validate.latest_version() for v in versions]
    for resource in resources:
        document = json.dumps(resource.doc, sort_keys=True, default=str)
        for version in dict.fromkeys(known):
            error = _schema_error(document, version)
            if error:
                problems.add(resource.path, f"{resource.label}: {error}")
                break


@functools.lru_cache(maxsize=1024)
def _schema_error(document: str, version: str) -> str | None:
    """Why a manifest (as JSON) fails the strict schema of a Kubernetes version."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(json.loads(document), version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path) or "(top)"
        return f"Kubernetes {version} schema: {where}: {exc.message}"
    except kubernetes_validate.SchemaNotFoundError as exc:
        return exc.message
    except Exception as exc:  # e.g. a version the package does not support
        return f"cannot validate against Kubernetes {version}: {exc!r}"
    return None


def _effective_env(
    container: dict[str, Any],
    configmaps: dict[str, dict[str, Any]],
    secrets: dict[str, dict[str, Any]],
    where: str,
    path: Path,
    problems: Problems,
) -> dict[str, tuple[str, Any]]:
    """name -> (origin, value) with origin 'value', 'configmap' or 'secret'."""
    env: dict[str, tuple[str, Any]] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            ref = str(source["configMapRef"].get("name"))
            if ref not in configmaps:
                problems.add(path, f"{where}: envFrom ConfigMap {ref} is not in the manifests")
            for key, value in configmaps.get(ref, {}).items():
                env[key] = ("configmap", value)
        if "secretRef" in source:
            ref = str(source["secretRef"].get("name"))
            if ref not in secrets:
                problems.add(path, f"{where}: envFrom Secret {ref} is not in the manifests")
            for key in secrets.get(ref, {}):
                env[key] = ("secret", None)
    for var in container.get("env") or []:
        name = str(var.get("name"))
        if "value" in var:
            env[name] = ("value", var["value"])
            if SECRET_NAME.search(name) and var["value"]:
                problems.add(path, f"{where}: {name} is a secret written inline; use a Secret")
            continue
        value_from = var.get("valueFrom") or {}
        for kind, store, origin in (
            ("secretKeyRef", secrets, "secret"),
            ("configMapKeyRef", configmaps, "configmap"),
        ):
            if kind in value_from:
                ref = value_from[kind]
                ref_name, key = str(ref.get("name")), str(ref.get("key"))
                if ref_name not in store:
                    problems.add(
                        path, f"{where}: {name} refers to {ref_name}, not in the manifests"
                    )
                elif key not in store[ref_name]:
                    problems.add(
                        path, f"{where}: {name} refers to key {key} missing from {ref_name}"
                    )
                value = store.get(ref_name, {}).get(key) if origin == "configmap" else None
                env[name] = (origin, value)
    return env


def _port_names(container: dict[str, Any]) -> set[Any]:
    names: set[Any] = set()
    for port in container.get("ports") or []:
        names.add(port.get("containerPort"))
        if port.get("name"):
            names.add(port["name"])
    return names


def check_kubernetes(
    directory: Path,
    documents: dict[Path, list[Any]],
    commands: set[str],
    facts: DockerfileFacts,
    problems: Problems,
    *,
    schemas: bool,
    versions: Iterable[str],
) -> None:
    # What a resource holds (required fields, types) is the schemas'; the checks below and the
    # schemas need to know which resource a document is.
    resources: list[Resource] = []
    kustomization: Resource | None = None
    for path, docs in sorted(documents.items()):
        for index, doc in enumerate(docs, start=1):
            doc = _dict(doc)
            missing = [k for k in ("apiVersion", "kind") if not isinstance(doc.get(k), str)]
            if doc.get("kind") != "Kustomization" and not _dict(doc.get("metadata")).get("name"):
                missing.append("metadata.name")
            if missing:
                problems.add(path, f"document {index}: missing {', '.join(missing)}")
            elif doc["kind"] == "Kustomization":
                kustomization = Resource(path, doc)
            else:
                resources.append(Resource(path, doc))
    if not resources:
        problems.add(directory, "no Kubernetes manifests")
        return

    if kustomization is None:
        problems.add(directory / "kustomization.yaml", "missing")
    else:
        listed = [str(r) for r in kustomization.doc.get("resources") or []]
        for item in listed:
            if not (kustomization.path.parent / item).exists():
                problems.add(kustomization.path, f"lists {item}, which does not exist")
        for path in documents:
            if path != kustomization.path and path.name not in listed:
                problems.add(kustomization.path, f"does not list {path.name}")
        images = {str(_dict(i).get("name")) for i in kustomization.doc.get("images") or []}
        if IMAGE_NAME not in images:
            problems.add(kustomization.path, f"no images entry for {IMAGE_NAME!r}")

    if schemas:
        _schema_validate(resources, versions, problems)

    configmaps = {r.name: _dict(r.doc.get("data")) for r in resources if r.kind == "ConfigMap"}
    for r in resources:
        for key in configmaps[r.name] if r.kind == "ConfigMap" else ():
            if SECRET_NAME.search(str(key)):
                problems.add(r.path, f"{r.label}: {key} is a secret: move it to a Secret")
    secrets: dict[str, dict[str, Any]] = {}
    for r in (r for r in resources if r.kind == "Secret"):
        if r.doc.get("data"):
            problems.add(r.path, f"{r.label}: use stringData with {PLACEHOLDER} values, not data")
        values = _dict(r.doc.get("stringData"))
        for key, value in values.items():
            if PLACEHOLDER not in str(value):
                problems.add(
                    r.path, f"{r.label}: {key} is not a {PLACEHOLDER} placeholder (a real secret?)"
                )
        secrets[r.name] = {**values, **_dict(r.doc.get("data"))}

    # (workload, pod labels, pod spec) of every workload with a pod template (the schemas
    # refuse one without)
    pods = [
        (r, _dict(template.get("metadata")).get("labels") or {}, _dict(template.get("spec")))
        for r in resources
        if r.kind in POD_KINDS and (template := _dict(r.spec.get("template")))
    ]
    hpas = [r for r in resources if r.kind == "HorizontalPodAutoscaler"]
    services = [r for r in resources if r.kind == "Service"]
    ran: set[str] = set()
    api_pods: list[tuple[Resource, dict[str, Any], dict[str, Any]]] = []
    for r, labels, spec in pods:
        if r.kind == "Deployment" and not _selects(
            _dict(r.spec.get("selector")).get("matchLabels"), labels
        ):
            problems.add(r.path, f"{r.label}: spec.selector.matchLabels must match the pod labels")
        if spec.get("enableServiceLinks") is not False:
            problems.add(
                r.path,
                f"{r.label}: set enableServiceLinks: false (service links set variables such as "
                "REGISTRY_PORT=tcp://..., which the settings read)",
            )
        pod_security = _dict(spec.get("securityContext"))
        run_as = pod_security.get("runAsUser")
        if run_as == 0:
            problems.add(r.path, f"{r.label}: runAsUser 0 is root")
        if facts.uid is not None and run_as not in {None, facts.uid}:
            problems.add(
                r.path, f"{r.label}: runAsUser {run_as} is not the image's USER {facts.uid}"
            )
        for container in spec.get("containers") or []:
            where = f"{r.label} container {container.get('name')}"
            image = str(container.get("image", ""))
            if image.split("@")[0].split(":")[0].rsplit("/", 1)[-1] != IMAGE_NAME:
                continue
            security = _dict(container.get("securityContext"))
            if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
                problems.add(r.path, f"{where}: set runAsNonRoot: true")
            if security.get("readOnlyRootFilesystem") is not True:
                problems.add(r.path, f"{where}: set readOnlyRootFilesystem: true")
            if security.get("allowPrivilegeEscalation") is not False:
                problems.add(r.path, f"{where}: set allowPrivilegeEscalation: false")
            if "ALL" not in (_dict(security.get("capabilities")).get("drop") or []):
                problems.add(r.path, f"{where}: drop ALL capabilities")
            requests = _dict(_dict(container.get("resources")).get("requests"))
            limits = _dict(_dict(container.get("resources")).get("limits"))
            if not {"cpu", "memory"} <= set(requests) or "memory" not in limits:
                problems.add(r.path, f"{where}: set requests (cpu, memory) and a memory limit")
            if container.get("command"):
                problems.add(r.path, f"{where}: set args, not command (it replaces the entrypoint)")
            args = [str(a) for a in container.get("args") or []]
            if not args or args[0] not in commands:
                problems.add(
                    r.path,
                    f"{where}: args {args} is not a command of the entrypoint "
                    f"({', '.join(sorted(commands))})",
                )
                continue
            command = args[0]
            ran.add(command)
            env = _effective_env(container, configmaps, secrets, where, r.path, problems)
            if env.get("DATABASE_URL", ("", None))[0] != "secret":
                problems.add(r.path, f"{where}: DATABASE_URL must come from a Secret")
            if str(env.get("RELAIS_ENV", ("", None))[1]) != "production":
                problems.add(r.path, f"{where}: RELAIS_ENV must be production")
            if command in API_PORTS:
                api_pods.append((r, labels, container))
                port = API_PORTS[command]
                names = _port_names(container)
                if port not in names:
                    problems.add(r.path, f"{where}: no containerPort {port}")
                for probe, path_ in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                    http = _dict(_dict(container.get(probe)).get("httpGet"))
                    if http.get("path") != path_:
                        problems.add(r.path, f"{where}: {probe} must GET {path_}")
                    elif http.get("port") not in names:
                        problems.add(
                            r.path, f"{where}: {probe} port {http.get('port')} is not declared"
                        )
                if (
                    r.kind == "Deployment"
                    and str(env.get("RELAIS_RUN_WORKERS", ("", ""))[1]).lower() != "false"
                ):
                    problems.add(r.path, f'{where}: RELAIS_RUN_WORKERS must be "false"')
            elif command in WORKER_COMMANDS:
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    if _dict(container.get(probe)).get("httpGet"):
                        problems.add(
                            r.path, f"{where}: a worker serves no HTTP: no httpGet {probe}"
                        )
            elif command == MIGRATE_COMMAND:
                if r.kind != "Job":
                    problems.add(r.path, f"{where}: run the migrations as a Job")
                elif spec.get("restartPolicy") not in {"Never", "OnFailure"}:
                    problems.add(r.path, f"{where}: restartPolicy must be Never or OnFailure")
    for command in sorted(REQUIRED_COMMANDS - ran):
        problems.add(directory, f"no workload runs the command {command!r}")
    if not ran & WORKER_COMMANDS:
        problems.add(directory, "no worker Deployments")

    for r, labels, container in api_pods:
        names = _port_names(container)
        matching = [s for s in services if _selects(s.spec.get("selector"), labels)]
        if not matching:
            problems.add(r.path, f"{r.label}: no Service selects its pods")
        for service in matching:
            for port in service.spec.get("ports") or []:
                if port.get("targetPort", port.get("port")) not in names:
                    problems.add(
                        service.path,
                        f"{service.label}: targetPort {port.get('targetPort')} is not a port "
                        f"of {r.label}",
                    )
        if not any(_dict(h.spec.get("scaleTargetRef")).get("name") == r.name for h in hpas):
            problems.add(r.path, f"{r.label}: no HorizontalPodAutoscaler")
        elif "replicas" in r.spec:
            problems.add(
                r.path, f"{r.label}: drop spec.replicas, the HorizontalPodAutoscaler owns it"
            )
    deployments = {r.name for r in resources if r.kind == "Deployment"}
    for hpa in hpas:
        target = _dict(hpa.spec.get("scaleTargetRef"))
        if target.get("kind") != "Deployment" or target.get("name") not in deployments:
            problems.add(
                hpa.path, f"{hpa.label}: scales {target.get('name')}, not a Deployment here"
            )
    for service in services:
        if not any(_selects(service.spec.get("selector"), labels) for _, labels, _ in pods):
            problems.add(service.path, f"{service.label}: its selector matches no pods")


# --- all of it ---------------------------------------------------------------------------


def validate(
    root: Path = ROOT,
    *,
    schemas: bool = True,
    kubernetes_versions: Iterable[str] = DEFAULT_KUBERNETES_VERSIONS,
) -> list[str]:
    """Every problem of `root`/deploy, one line each (empty: valid)."""
    root = root.resolve()
    problems = Problems(root)
    deploy = root / "deploy"
    if not deploy.is_dir():
        problems.add(deploy, "missing")
        return problems.lines

    parsed: dict[Path, list[Any]] = {}
    unparsed: list[Path] = []
    for path in sorted(deploy.rglob("*")):
        if path.is_file() and path.suffix in {".yaml", ".yml"}:
            docs = load_yaml(path, problems)
            if docs is None:
                unparsed.append(path)
            else:
                parsed[path] = docs

    pyproject_file = root / "pyproject.toml"
    pyproject = (
        tomllib.loads(pyproject_file.read_text(encoding="utf-8"))
        if pyproject_file.is_file()
        else {}
    )
    dockerfile = deploy / "Dockerfile"
    facts = check_dockerfile(root, dockerfile, pyproject, problems)
    script = facts.entrypoint_source or deploy / "entrypoint.sh"
    commands = check_entrypoint(root, script, problems)
    check_packaging(root, pyproject, problems)

    compose = deploy / "docker-compose.yml"
    if not compose.is_file():
        problems.add(compose, "missing")
    elif compose in parsed:
        check_compose(compose, parsed[compose], commands, dockerfile, problems)

    kube = deploy / "kubernetes"
    if not kube.is_dir():
        problems.add(kube, "missing")
    elif any(kube in path.parents for path in unparsed):
        problems.add(kube, "the manifests are checked further once every file parses")
    else:
        check_kubernetes(
            kube,
            {p: d for p, d in parsed.items() if kube in p.parents},
            commands,
            facts,
            problems,
            schemas=schemas,
            versions=kubernetes_versions,
        )
    return problems.lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="repository root (default: this one)"
    )
    parser.add_argument(
        "--kubernetes-version",
        action="append",
        dest="versions",
        help=f"validate against this Kubernetes version (repeatable; default: "
        f"{' and '.join(DEFAULT_KUBERNETES_VERSIONS)})",
    )
    parser.add_argument(
        "--skip-schemas", action="store_true", help="skip the Kubernetes JSON schema validation"
    )
    args = parser.parse_args(argv)
    lines = validate(
        args.root,
        schemas=not args.skip_schemas,
        kubernetes_versions=args.versions or DEFAULT_KUBERNETES_VERSIONS,
    )
    for line in lines:
        print(f"ERROR {line}", file=sys.stderr)
    if lines:
        print(f"deploy/ has {len(lines)} problem(s)", file=sys.stderr)
        return 1
    skipped = " (Kubernetes schemas skipped)" if args.skip_schemas else ""
    print(f"deploy/ is valid{skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
