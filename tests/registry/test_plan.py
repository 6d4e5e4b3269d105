"""A case's plan without a database (SPEC 4): step keys, default and named dependencies, and the
plans refused (duplicate keys, unknown or own dependencies, cycles) with the field named."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.registry import plan
from services.registry.plan import StepDraft, find_cycle, settle_steps


def refusal(drafts: list[StepDraft], **kwargs: Any) -> list[tuple[str, str]]:
    """The (field, message) pairs a refused plan names."""
    with pytest.raises(plan.PlanError) as refused:
        settle_steps(drafts, **kwargs)
    return refused.value.problems


def draft(service_type: str = "social.legal", **fields: Any) -> StepDraft:
    return StepDraft(service_type=service_type, **fields)


def test_new_steps_are_numbered_and_each_depends_on_the_one_before_by_default():
    settled = settle_steps([draft(), draft(depends_on=[]), draft(), draft(key="last")])
    assert [(s["key"], s["depends_on"]) for s in settled] == [
        ("1", []),
        ("2", []),
        ("3", ["2"]),
        ("last", ["3"]),
    ]
    assert settled[0] == {
        "key": "1",
        "service_type": "social.legal",
        "priority": "normal",
        "delivery": "referral",
        "depends_on": [],
        "notes": "",
    }


def test_steps_added_to_a_plan_follow_its_last_step_and_may_name_existing_steps_by_id():
    existing = [
        {"id": "id-1", "key": "1", "depends_on": []},
        {"id": "id-2", "key": "intake", "depends_on": ["1"]},
    ]
    settled = settle_steps([draft(), draft(depends_on=["id-1", "intake", "1"])], existing=existing)
    assert [(s["key"], s["depends_on"]) for s in settled] == [
        ("3", ["intake"]),
        ("4", ["1", "intake"]),
    ]


def test_a_step_may_depend_on_a_step_listed_after_it():
    settled = settle_steps([draft(depends_on=["2"]), draft(depends_on=[])])
    assert settled[0]["depends_on"] == ["2"]


def test_a_key_taken_twice_is_refused_at_the_later_step():
    assert refusal([draft(key="a"), draft(key="a")]) == [
        ("body.plan[1].key", "duplicate step key 'a'")
    ]


def test_a_key_of_the_existing_plan_is_taken():
    assert refusal([draft(key="1")], existing=[{"id": "y", "key": "1"}]) == [
        ("body.plan[0].key", "duplicate step key '1'")
    ]


def test_unknown_and_own_dependencies_are_refused_with_the_field_named():
    problems = refusal(
        [draft(depends_on=["9"]), draft(key="b", depends_on=["b"])], field_prefix="body.steps"
    )
    assert problems == [
        ("body.steps[0].depends_on", "no step '9' in the plan"),
        ("body.steps[1].depends_on", "a step cannot depend on itself"),
    ]


def test_a_cycle_is_refused_and_named():
    [(field, message)] = refusal([draft(depends_on=["2"]), draft(depends_on=["1"])])
    assert field == "body.plan"
    assert message == "dependencies form a cycle: 1 → 2 → 1"


def test_find_cycle_finds_none_in_a_plan_without_one():
    assert find_cycle({}) is None
    assert find_cycle({"1": [], "2": ["1"], "3": ["1", "2"], "4": ["9"]}) is None


@given(st.integers(min_value=1, max_value=12), st.data())
def test_a_plan_whose_steps_depend_only_on_earlier_ones_has_no_cycle(size, data):
    graph = {
        str(i): data.draw(st.lists(st.sampled_from([str(j) for j in range(i)]), unique=True))
        if i
        else []
        for i in range(size)
    }
    assert find_cycle(graph) is None


@given(st.integers(min_value=2, max_value=12), st.data())
def test_a_dependency_back_to_a_later_step_makes_a_cycle_of_real_edges(size, data):
    graph = {str(i): [str(i - 1)] if i else [] for i in range(size)}  # a chain: i needs i-1
    low = data.draw(st.integers(min_value=0, max_value=size - 1))
    high = data.draw(st.integers(min_value=low, max_value=size - 1))
    graph[str(low)].append(str(high))
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert len(set(cycle)) == len(cycle) - 1
    for node, needed in pairwise(cycle):
        assert needed in graph[node]
