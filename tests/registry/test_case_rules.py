"""The case's decisions, without a database: new steps and their statuses, an owner's step
action, closing and reopening, what a merge moves, what a change writes; and the Case
resource defined once."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.registry import case_rules as rules
from services.registry.case_shape import CASE_COLUMNS, STEP_FIELDS, case_snapshot
from services.registry.schemas_cases import CaseRead, StepRead
from services.registry.tables import cases, plan_steps
from shared.errors import Conflict, NotFound, Unprocessable

KEY_MAX = plan_steps.c.key.type.length


def step(key: str, *, status: str = "planned", reason: str | None = None, **fields) -> dict:
    return {
        "id": uuid4(),
        "key": key,
        "service_type": "social.legal",
        "priority": "normal",
        "delivery": "referral",
        "depends_on": [],
        "notes": "",
        "status": status,
        "status_reason": reason,
        "owner_status": None,
        "referral_status": None,
        **fields,
    }


def case(**fields) -> dict:
    return {
        "id": uuid4(),
        "status": "open",
        "closure_reason": None,
        "merged_into": None,
        "consent": {"referral": "granted"},
        "external_id": "E-1",
        **fields,
    }


# --- Codes and plans ---------------------------------------------------------------------------


def test_unknown_codes_are_each_named_in_one_422():
    with pytest.raises(Unprocessable) as refused:
        rules.check_codes(
            area_code="ML-XX",
            area_known=False,
            step_types=["social.legal", "no.such"],
            known={"social.legal"},
            step_prefix="body.steps",
        )
    assert [e.field for e in refused.value.errors] == [
        "body.return.area_code",
        "body.steps[1].service_type",
    ]


def test_known_codes_pass():
    rules.check_codes(
        area_code=None, area_known=True, step_types=["a"], known={"a"}, step_prefix="body.plan"
    )


def test_a_plan_with_a_cycle_answers_422_naming_the_plan():
    with pytest.raises(Unprocessable) as refused:
        rules.settle_new_steps(
            [
                {"service_type": "a", "key": "x", "depends_on": ["y"]},
                {"service_type": "b", "key": "y", "depends_on": ["x"]},
            ]
        )
    assert refused.value.errors and {e.type for e in refused.value.errors} == {"plan"}


def test_a_new_case_starts_with_the_statuses_its_consent_allows():
    settled = rules.settle_new_steps(
        [{"service_type": "a"}, {"service_type": "b", "delivery": "direct", "depends_on": []}]
    )
    granted = rules.first_steps(settled, consent={"referral": "granted"})
    assert [(s["status"], s["status_reason"]) for s in granted] == [
        ("referred", "routing"),
        ("planned", "ready"),
    ]
    not_recorded = rules.first_steps(settled, consent={"referral": "not_recorded"})
    assert [(s["status"], s["status_reason"]) for s in not_recorded] == [
        ("waiting", "no_consent"),
        ("planned", "ready"),
    ]
    assert [s["position"] for s in granted] == [1, 2]


def test_withdrawn_consent_or_closing_changes_only_the_steps_it_concerns():
    steps = [step("1", status="referred", reason="routing"), step("2", status="completed")]
    steps[1]["owner_status"] = "completed"
    changed = rules.restatus(case(consent={"referral": "withdrawn"}), steps)
    assert changed == [steps[0]]
    assert (steps[0]["status"], steps[0]["status_reason"]) == ("waiting", "no_consent")
    assert rules.restatus(case(status="closed", consent={"referral": "withdrawn"}), steps) == [
        steps[0]
    ]
    assert steps[0]["status_reason"] == "case_closed"
    assert rules.restatus(case(status="closed"), steps) == []


def test_a_case_reference_starts_with_the_country_and_year():
    assert rules.reference_prefix("ml-bko-03", year=2026) == "ML-2026-"


def test_a_case_reference_numbers_with_six_digits_at_least():
    at = datetime(2027, 1, 1, tzinfo=UTC)
    assert rules.reference("ML-BKO-03", at=at, number=42) == "ML-2027-000042"
    assert rules.reference("ML-BKO-03", at=at, number=1234567) == "ML-2027-1234567"


def test_a_new_case_row_sets_every_column_of_the_table():
    """The intake writes every column from this row, and the snapshot shows the same row."""
    at = datetime(2026, 12, 7, tzinfo=UTC)
    body = {
        "beneficiary": {"given_name": "Awa"},
        "return": {"area_code": "ML-BKO-03"},
        "consent": {"referral": "granted"},
    }
    owner, case_id = uuid4(), uuid4()
    row = rules.new_case_row(
        case_id=case_id, owner_id=owner, body=body, reference="ML-2026-000001", at=at
    )
    assert set(row) == {column.name for column in cases.c}
    assert row["status"] == "open" and row["version"] == 1
    assert row["created_at"] == row["updated_at"] == at
    assert row["return_area_code"] == "ML-BKO-03" and row["vulnerabilities"] == []


# --- The case's fields -------------------------------------------------------------------------


def test_a_merge_patch_removes_on_null_and_merges_objects():
    target = {"a": 1, "b": {"c": 2, "d": 3}, "e": 4}
    assert rules.merge_patch(target, {"a": None, "b": {"c": None, "x": 1}, "e": [1]}) == {
        "b": {"d": 3, "x": 1},
        "e": [1],
    }


def test_a_change_writes_the_columns_it_names_and_an_unchanged_external_id_none():
    current = case(external_id="E-1", vulnerabilities=["a"])
    values = rules.stored_changes(
        current,
        {"return": {"area_code": "ML-1"}, "external_id": "E-1", "vulnerabilities": ("a",)},
    )
    assert values == {
        "return_info": {"area_code": "ML-1"},
        "return_area_code": "ML-1",
        "vulnerabilities": ["a"],
    }
    assert not rules.is_unchanged(current, values)
    assert rules.is_unchanged(current, {"vulnerabilities": ["a"]})


def test_an_upsert_may_not_change_consent_or_plan():
    current = case(consent={"referral": "granted"})
    steps = [step("1")]
    body = {"consent": {"referral": "granted"}, "plan": [{"service_type": "social.legal"}]}
    rules.check_upsert_keeps_plan_and_consent(current, steps, body, {"consent", "plan"})
    with pytest.raises(Conflict, match="Consent"):
        rules.check_upsert_keeps_plan_and_consent(
            current, steps, {**body, "consent": {"referral": "withdrawn"}}, {"consent"}
        )
    with pytest.raises(Conflict, match="plan"):
        rules.check_upsert_keeps_plan_and_consent(current, steps, {**body, "plan": []}, {"plan"})


# --- Steps, closing, reopening -----------------------------------------------------------------


def test_an_owner_cancels_any_unfinished_step_and_completes_only_a_ready_direct_one():
    ready = step("1", delivery="direct", reason="ready")
    waiting = step("2", delivery="direct", depends_on=["1"])
    routed = step("3", status="referred", reason="routing")
    done = step("4", status="completed")
    steps = [ready, waiting, routed, done]
    owner_case = uuid4()

    def settle(target, owner_status):
        return rules.step_to_settle(
            steps, case_id=owner_case, step_id=target["id"], owner_status=owner_status
        )

    assert settle(ready, "completed") is ready
    assert settle(routed, "cancelled") is routed
    for target, owner_status, allowed in (
        (waiting, "completed", ["cancel"]),
        (routed, "completed", ["cancel"]),
        (done, "cancelled", []),
    ):
        with pytest.raises(Conflict) as refused:
            settle(target, owner_status)
        assert refused.value.extra["allowed_actions"] == allowed
    with pytest.raises(NotFound):
        rules.step_to_settle(steps, case_id=owner_case, step_id=uuid4(), owner_status="cancelled")
    assert rules.step_event("completed") == "case.step_completed"
    assert rules.step_event("cancelled") == "case.plan_changed"


def test_a_closed_case_reopens_unless_it_was_merged_and_an_open_one_closes():
    rules.check_may_close(case())
    rules.check_may_reopen(case(status="closed", closure_reason="left_area"))
    with pytest.raises(Conflict, match="already closed"):
        rules.check_may_close(case(status="closed"))
    with pytest.raises(Conflict, match="is open"):
        rules.check_may_reopen(case())
    merged_into = uuid4()
    with pytest.raises(Conflict, match=str(merged_into)) as refused:
        rules.check_may_reopen(
            case(status="closed", closure_reason="merged", merged_into=merged_into)
        )
    assert refused.value.extra["allowed_actions"] == []


# --- Merging -----------------------------------------------------------------------------------


def test_a_case_merged_away_is_not_kept():
    rules.check_may_keep(case())
    with pytest.raises(Conflict, match="merge into that one"):
        rules.check_may_keep(case(status="closed", closure_reason="merged", merged_into=uuid4()))


def test_a_merge_moves_the_unfinished_steps_under_new_keys_with_their_dependencies():
    other = [
        step("1", status="completed"),
        step("2", depends_on=["1"]),
        step("3", depends_on=["2", "1"], notes="n"),
        step("4", status="cancelled"),
    ]
    moved = rules.moved_steps(
        other_reference="ML-2026-000007",
        other_steps=other,
        keep_steps=[step("1"), step("ML-2026-000007.3")],
        key_max=KEY_MAX,
    )
    assert [(m["key"], m["depends_on"], m["notes"]) for m in moved] == [
        ("ML-2026-000007.2", [], ""),
        ("ML-2026-000007.3.2", ["ML-2026-000007.2"], "n"),
    ]


@given(st.text(alphabet="abc.", min_size=1, max_size=60), st.integers(0, 12))
def test_moved_keys_are_unique_fit_the_column_and_never_loop(key, taken_count):
    long_reference = "ML-2026-" + "9" * 30
    base = f"{long_reference}.{key}"[:KEY_MAX]
    keep = [step(base)] + [
        step(f"{base[: KEY_MAX - len(f'.{n}')]}.{n}") for n in range(2, taken_count)
    ]
    other = [step(key), step(key + "x")]
    moved = rules.moved_steps(
        other_reference=long_reference, other_steps=other, keep_steps=keep, key_max=KEY_MAX
    )
    keys = [m["key"] for m in moved]
    assert len(set(keys)) == 2 and not set(keys) & {s["key"] for s in keep}
    assert all(len(k) <= KEY_MAX for k in keys)


# --- The Case resource, defined once -------------------------------------------------------


def test_the_case_shape_is_the_response_model_and_reads_existing_columns():
    assert list(CASE_COLUMNS) == [f.alias or n for n, f in CaseRead.model_fields.items()]
    assert tuple(StepRead.model_fields) == STEP_FIELDS
    assert {c for c in CASE_COLUMNS.values() if c} <= set(cases.c.keys())
    assert set(STEP_FIELDS) <= set(plan_steps.c.keys())


def test_a_snapshot_is_a_valid_case_resource():
    row = {
        "id": uuid4(),
        "reference": "ML-2026-000001",
        "external_id": None,
        "owner_partner_id": uuid4(),
        "status": "open",
        "closure_reason": None,
        "merged_into": None,
        "beneficiary": {"given_name": "A", "family_name": "B", "sex": "female"},
        "return_info": {"area_code": "ML-1"},
        "return_area_code": "ML-1",
        "vulnerabilities": ["x"],
        "consent": {"referral": "granted"},
        "version": 1,
        "created_at": "2026-01-02T03:04:05Z",
        "updated_at": "2026-01-02T03:04:05Z",
        "erased_at": None,
    }
    snapshot = case_snapshot(row, [step("1")])
    assert list(snapshot) == list(CASE_COLUMNS)
    read = CaseRead.model_validate(snapshot)
    assert read.return_.area_code == "ML-1" and [s.key for s in read.plan] == ["1"]
    assert read.erased_at is None


def test_an_erased_case_refuses_every_change_and_keeps_no_personal_data():
    erased_at = datetime(2026, 12, 1, tzinfo=UTC)
    rules.check_not_erased(case(erased_at=None))
    with pytest.raises(Conflict, match="erased"):
        rules.check_not_erased(case(erased_at=erased_at))
    row = case(
        beneficiary={"given_name": "Awa", "sex": "female", "date_of_birth": "1990-05-01"},
        return_info={"area_code": "ML-1", "date": "2026-01-01", "country_from": "LY"},
        vulnerabilities=["x"],
    )
    assert rules.erased_values(row) == {
        "beneficiary": {
            "given_name": None,
            "sex": "female",
            "date_of_birth": None,
            "birth_year": 1990,
        },
        "return_info": {"area_code": "ML-1", "date": None, "country_from": None},
        "vulnerabilities": [],
    }


def test_a_pair_merges_once_only_two_cases_of_one_owner_keeping_one_of_them():
    a, b, owner = uuid4(), uuid4(), uuid4()
    pair = {"status": "open", "case_a_id": a, "case_b_id": b, "a_owner": owner, "b_owner": owner}
    rules.check_pair_open(pair)
    assert rules.merged_away_of(pair, keep_case_id=a) == b
    with pytest.raises(Conflict, match="already dismissed"):
        rules.check_pair_open({**pair, "status": "dismissed"})
    with pytest.raises(Unprocessable) as refused:
        rules.merged_away_of(pair, keep_case_id=uuid4())
    assert [e.field for e in refused.value.errors] == ["body.keep_case_id"]
    with pytest.raises(Conflict) as two_owners:
        rules.merged_away_of({**pair, "b_owner": uuid4()}, keep_case_id=a)
    assert two_owners.value.extra["allowed_actions"] == ["link", "dismiss"]
    rules.check_may_merge_away(case(status="closed", closure_reason="left_area"))
    with pytest.raises(Conflict, match="already merged"):
        rules.check_may_merge_away(case(status="closed", closure_reason="merged"))
