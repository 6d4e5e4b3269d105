"""A case's plan: step keys and dependencies, and the status of each step (SPEC 4). Pure.

A dependency is resolved when its step is completed or cancelled. The next interventions
are the open steps whose dependencies are all resolved and that have no live referral.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.pathway import plan_statuses, step_status

__all__ = ["PlanError", "StepDraft", "find_cycle", "plan_statuses", "settle_steps", "step_status"]


class PlanError(ValueError):
    """A plan that cannot be: each item is (field path, message)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))
        self.problems = problems


@dataclass
class StepDraft:
    """A step as the client gave it, before keys and dependencies are settled."""

    service_type: str
    priority: str = "normal"
    delivery: str = "referral"
    key: str | None = None
    depends_on: list[str] | None = None  # keys or ids; None means the default
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def settle_steps(
    drafts: Sequence[StepDraft],
    *,
    existing: Sequence[Mapping[str, Any]] = (),
    field_prefix: str = "body.plan",
) -> list[dict[str, Any]]:
    """Give each new step its key and its dependencies as keys, or raise PlanError.

    `existing` are the plan's current steps (with `id`, `key`, `depends_on`): new steps may
    depend on them, and a new step's default dependency is the last step of the plan.
    """
    problems: list[tuple[str, str]] = []
    keys_taken = {str(s["key"]) for s in existing}
    id_to_key = {str(s["id"]): str(s["key"]) for s in existing}
    offset = len(existing)
    settled: list[dict[str, Any]] = []
    new_keys: list[str] = []
    for index, draft in enumerate(drafts):
        key = draft.key if draft.key is not None else str(offset + index + 1)
        if key in keys_taken or key in new_keys:
            problems.append((f"{field_prefix}[{index}].key", f"duplicate step key {key!r}"))
        new_keys.append(key)
    all_keys = keys_taken | set(new_keys)
    previous_key = str(existing[-1]["key"]) if existing else None
    for index, (draft, key) in enumerate(zip(drafts, new_keys, strict=True)):
        if draft.depends_on is None:
            depends = [previous_key] if previous_key is not None else []
        else:
            depends = []
            for ref in draft.depends_on:
                resolved = id_to_key.get(str(ref), str(ref))
                if resolved not in all_keys:
                    problems.append(
                        (f"{field_prefix}[{index}].depends_on", f"no step {ref!r} in the plan")
                    )
                elif resolved == key:
                    problems.append(
                        (f"{field_prefix}[{index}].depends_on", "a step cannot depend on itself")
                    )
                elif resolved not in depends:
                    depends.append(resolved)
        settled.append(
            {
                "key": key,
                "service_type": draft.service_type,
                "priority": draft.priority,
                "delivery": draft.delivery,
                "depends_on": depends,
                "notes": draft.notes,
            }
        )
        previous_key = key
    if not problems:
        graph = {str(s["key"]): list(s.get("depends_on") or []) for s in existing}
        graph.update({s["key"]: s["depends_on"] for s in settled})
        cycle = find_cycle(graph)
        if cycle:
            problems.append((f"{field_prefix}", "dependencies form a cycle: " + " → ".join(cycle)))
    if problems:
        raise PlanError(problems)
    return settled


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A dependency cycle as a list of keys (first repeated last), or None."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = grey
        stack.append(node)
        for nxt in graph.get(node, ()):
            if colour.get(nxt, black) == grey:
                return [*stack[stack.index(nxt) :], nxt]
            if colour.get(nxt) == white:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        colour[node] = black
        return None

    for node in sorted(graph):
        if colour[node] == white:
            found = visit(node)
            if found:
                return found
    return None
