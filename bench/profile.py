"""Summarise `py-spy record --format raw` files (collapsed stacks) written with
`BENCH_PYSPY=1`: `python -m bench.profile FILE...`.

For every sample it finds the innermost frame of the project's own code (services/, shared/)
that the time was spent under, and the library of the leaf frame (SQLAlchemy, asyncpg,
FastAPI, ...), so that one reads "where in our code, doing what". Samples are wall-clock
samples of a running (not idle) thread: on a busy 2-core machine a process waiting for the
CPU counts too, so the shares, not the absolute times, are what to read.
"""

from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

LIBRARIES = (
    "sqlalchemy",
    "asyncpg",
    "fastapi",
    "starlette",
    "pydantic",
    "uvicorn",
    "httpx",
    "httpcore",
    "aiohttp",
    "structlog",
    "json",
    "asyncio",
    "standardwebhooks",
    "services/",
    "shared/",
)
_PROJECT = re.compile(r"\((services|shared)/")
_LINE = re.compile(r":\d+\)$")


def library(frame: str) -> str:
    found = re.search(r"\(([^)]*)\)", frame)
    path = found.group(1) if found else frame
    for name in LIBRARIES:
        if name in path:
            return name.rstrip("/")
    return "other"


def summarise(path: Path, top: int = 25) -> str:
    owners: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    split: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        owner = None
        for frame in frames:
            if _PROJECT.search(frame) and "shared/worker.py" not in frame:
                owner = _LINE.sub(")", frame)
        if owner is None:
            owner = (
                "[HTTP framework: uvicorn, starlette, fastapi]"
                if any(k in stack for k in ("uvicorn", "starlette", "fastapi"))
                else "[event loop, asyncpg protocol callbacks, other]"
            )
        leaf = library(frames[-1])
        owners[owner] += n
        leaves[leaf] += n
        split[owner][leaf] += n
    if not total:
        return f"{path.name}: no samples"
    out = [f"{path.name}: {total} samples", "  by leaf library:"]
    out += [f"    {v / total:6.1%}  {k}" for k, v in leaves.most_common(10)]
    out.append("  by innermost project function (leaf libraries inside):")
    for owner, v in owners.most_common(top):
        inside = ", ".join(f"{k} {x / v:.0%}" for k, x in split[owner].most_common(3))
        out.append(f"    {v / total:6.1%}  {owner[:100]}  [{inside}]")
    return "\n".join(out)


def main() -> None:
    for name in sys.argv[1:]:
        print(summarise(Path(name)))
        print()


if __name__ == "__main__":
    main()
