"""The routing decision (SPEC 5.2-5.5) against generated directories and people. No database.

Eligibility, coverage depth and the rank key are recomputed here from the SPEC text
(`expected_reasons`, `expected_key`), not taken from `services.referrals.routing`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.referrals.routing import (
    PRIORITY_HOURS,
    Candidate,
    Decision,
    Person,
    RoutingRequest,
    ServiceOption,
    deadline_for,
    decide,
)

# A small area tree: code -> parent. Depth: country 0, region 1, cercle 2, commune 3.
PARENT: dict[str, str | None] = {
    "ML": None,
    "ML-1": "ML",
    "ML-2": "ML",
    "ML-1-01": "ML-1",
    "ML-1-02": "ML-1",
    "ML-2-01": "ML-2",
    "ML-1-01-a": "ML-1-01",
    "ML-1-01-b": "ML-1-01",
    "ML-2-01-a": "ML-2-01",
}
AREAS = tuple(PARENT)
SEXES = ("female", "male", "other")
VULNERABILITIES = ("disability", "unaccompanied_minor", "trafficking", "chronic_illness")
PRIORITIES = tuple(PRIORITY_HOURS)
RESPONSE_HOURS = (1, 12, 24, 48, 72, 100, 168, 336, 500)

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def lineage(code: str) -> list[str]:
    """The area and its ancestors, nearest first."""
    chain = [code]
    while PARENT[chain[-1]] is not None:
        chain.append(PARENT[chain[-1]])
    return chain


def depth_of(code: str) -> int:
    return len(lineage(code)) - 1


def area_depths(code: str) -> dict[str, int]:
    return {a: depth_of(a) for a in lineage(code)}


# ---------------------------------------------------------------------------------------------
# The oracle: SPEC 5.2 and 5.3, written independently.


def age_at(person: Person, day: date) -> int | None:
    if person.date_of_birth is not None:
        born = person.date_of_birth
        before_birthday = (day.month, day.day) < (born.month, born.day)
        return day.year - born.year - (1 if before_birthday else 0)
    if person.birth_year is not None:
        return day.year - person.birth_year  # the age reached this year
    return None


def expected_reasons(option: ServiceOption, request: RoutingRequest) -> set[str]:
    """Every reason that keeps `option` from being a candidate (empty: it is one)."""
    reasons: set[str] = set()
    if not option.active:
        reasons.add("inactive_service")
    if not option.partner_active:
        reasons.add("inactive_partner")
    if option.partner_id in request.excluded_partners:
        reasons.add(f"partner_excluded:{request.excluded_partners[option.partner_id]}")
    covering = set(lineage(request.area_code))
    if not covering & set(option.areas):
        reasons.add("not_covering")
    person = request.person
    if option.sexes is not None:
        if person.sex not in SEXES:
            reasons.add("sex_unknown")
        elif person.sex not in option.sexes:
            reasons.add("sex_not_admitted")
    if option.min_age is not None or option.max_age is not None:
        assert request.now is not None
        age = age_at(person, request.now.date())
        if age is None:
            reasons.add("age_unknown")
        elif (option.min_age is not None and age < option.min_age) or (
            option.max_age is not None and age > option.max_age
        ):
            reasons.add("age_not_admitted")
    if option.vulnerabilities_any is not None and not (
        set(option.vulnerabilities_any) & set(person.vulnerabilities)
    ):
        reasons.add("no_required_vulnerability")
    return reasons


def coverage_depth(option: ServiceOption, request: RoutingRequest) -> int:
    """The depth of the nearest covering area: the deepest of the case's lineage it names."""
    return max(depth_of(a) for a in lineage(request.area_code) if a in option.areas)


def is_free(option: ServiceOption) -> bool:
    return option.capacity is None or option.load < option.capacity


def expected_key(option: ServiceOption, request: RoutingRequest) -> tuple:
    """SPEC 5.3 up to the load ratio: depth (deepest first), priority, free before full."""
    return (-coverage_depth(option, request), option.priority, 0 if is_free(option) else 1)


def ranked_key(candidate: Candidate) -> tuple:
    return (
        -candidate.coverage_depth,
        candidate.priority,
        0 if candidate.has_free_capacity else 1,
        candidate.load_ratio,
        str(candidate.service_id),
    )


# ---------------------------------------------------------------------------------------------
# Strategies.

# Strategies are built once, here: building them inside the composites costs more than
# the whole decision.
ids = st.lists(st.integers(1, 2**64), max_size=12, unique=True)
mostly_true = st.sampled_from((True, True, True, True, False))
some = st.integers(0, 3)
nows = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)
area_lists = st.lists(st.sampled_from(AREAS), min_size=1, max_size=3, unique=True).map(tuple)
# Weighted towards eligibility: without it most generated directories hold no candidate.
sex_sets = st.sampled_from(
    (None, None, None, None, ("female",), ("male",), ("female", "other"), SEXES)
)
vulnerability_sets = st.sampled_from(
    (None, None, None, None, ("disability",), ("trafficking", "chronic_illness"), VULNERABILITIES)
)
min_ages = st.sampled_from((None, None, None, None, 0, 15, 18, 25, 60))
age_spans = st.sampled_from((None, None, None, None, 0, 2, 17, 40))
capacities = st.none() | st.integers(0, 5)
loads = st.integers(0, 8)
response_hours = st.sampled_from(RESPONSE_HOURS)
service_priorities = st.integers(0, 3) | st.just(100)
exclusion_reasons = st.sampled_from((*(None,) * 9, "rejected", "expired", "failed"))
birth_kinds = st.sampled_from(("date", "year", "unknown"))
birth_dates = st.dates(date(1940, 1, 1), date(2026, 12, 31))
birth_years = st.integers(1940, 2026)
person_sexes = st.sampled_from(("female", "female", "male", "male", "other", "unknown"))
person_vulnerabilities = st.lists(st.sampled_from(VULNERABILITIES), unique=True).map(tuple)
case_areas = st.sampled_from(AREAS)
step_priorities = st.sampled_from(PRIORITIES)


@st.composite
def people(draw) -> Person:
    born = draw(birth_kinds)
    return Person(
        sex=draw(person_sexes),
        date_of_birth=draw(birth_dates) if born == "date" else None,
        birth_year=draw(birth_years) if born == "year" else None,
        vulnerabilities=draw(person_vulnerabilities),
    )


@st.composite
def scenarios(draw) -> tuple[RoutingRequest, list[ServiceOption]]:
    """A directory of up to 12 services of up to 4 partners, and one step to route."""
    partners = [
        (uuid.UUID(int=n), draw(mostly_true))
        for n in draw(st.lists(st.integers(1, 2**64), min_size=1, max_size=4, unique=True))
    ]
    area = draw(case_areas)
    lineage_of_case = lineage(area)
    options = []
    for n in draw(ids):
        partner_id, partner_active = partners[draw(some) % len(partners)]
        min_age, span = draw(min_ages), draw(age_spans)
        areas = draw(area_lists)
        if draw(mostly_true):  # most services cover the case, at some depth
            covering = lineage_of_case[draw(some) % len(lineage_of_case)]
            areas = tuple(dict.fromkeys((*areas, covering)))
        options.append(
            ServiceOption(
                id=uuid.UUID(int=n),
                partner_id=partner_id,
                partner_active=partner_active,
                active=draw(mostly_true),
                areas=areas,
                sexes=draw(sex_sets),
                min_age=min_age,
                max_age=None if span is None else (min_age or 0) + span,
                vulnerabilities_any=draw(vulnerability_sets),
                capacity=draw(capacities),
                response_hours=draw(response_hours),
                priority=draw(service_priorities),
                load=draw(loads),
            )
        )
    excluded = {}
    for partner_id, _ in partners:
        reason = draw(exclusion_reasons)
        if reason is not None:
            excluded[partner_id] = reason
    request = RoutingRequest(
        service_type="psychosocial_support",
        priority=draw(step_priorities),
        area_code=area,
        area_depths=area_depths(area),
        person=draw(people()),
        excluded_partners=excluded,
        now=draw(nows),
    )
    return request, options


def by_id(options: list[ServiceOption]) -> dict[uuid.UUID, ServiceOption]:
    return {o.id: o for o in options}


# ---------------------------------------------------------------------------------------------
# Properties.


@SETTINGS
@given(scenarios(), st.data())
def test_decide_is_deterministic_whatever_the_order_of_the_options(scenario, data):
    request, options = scenario
    first = decide(request, options)
    assert decide(request, options) == first
    shuffled = data.draw(st.permutations(options))
    again = decide(request, shuffled)
    assert again == first
    assert again.chosen == first.chosen
    assert again.as_record(request) == first.as_record(request)
    # The order the exclusions were recorded in does not matter either.
    reordered = replace(
        request, excluded_partners=dict(reversed(request.excluded_partners.items()))
    )
    assert decide(reordered, shuffled).as_record(reordered) == first.as_record(request)


@SETTINGS
@given(scenarios())
def test_candidates_are_exactly_the_eligible_options_and_the_rest_are_excluded(scenario):
    request, options = scenario
    decision = decide(request, options)
    options_by_id = by_id(options)
    candidate_ids = [c.service_id for c in decision.candidates]
    excluded_ids = [s for s, _, _ in decision.excluded]

    # A partition: each option once, either a candidate or excluded.
    assert len(candidate_ids) == len(set(candidate_ids))
    assert len(excluded_ids) == len(set(excluded_ids))
    assert set(candidate_ids).isdisjoint(excluded_ids)
    assert set(candidate_ids) | set(excluded_ids) == set(options_by_id)

    for candidate in decision.candidates:
        option = options_by_id[candidate.service_id]
        assert expected_reasons(option, request) == set(), option
        # Never an inactive service, an inactive partner, an excluded partner, or a service
        # that does not cover the case's area or one of its ancestors.
        assert option.active and option.partner_active
        assert option.partner_id not in request.excluded_partners
        assert set(option.areas) & set(request.area_depths)
        assert candidate.partner_id == option.partner_id

    for service_id, partner_id, reason in decision.excluded:
        option = options_by_id[service_id]
        assert partner_id == option.partner_id
        reasons = expected_reasons(option, request)
        assert reasons, f"{option} is eligible but excluded for {reason}"
        assert reason in reasons, (reason, reasons)

    # Exclusions are listed by service id.
    assert excluded_ids == sorted(excluded_ids, key=str)


@SETTINGS
@given(scenarios())
def test_the_ranking_follows_depth_then_priority_then_free_capacity_then_load_ratio(scenario):
    request, options = scenario
    decision = decide(request, options)
    options_by_id = by_id(options)

    for candidate in decision.candidates:
        option = options_by_id[candidate.service_id]
        # The rank keys recorded are those of the option.
        assert candidate.coverage_depth == coverage_depth(option, request)
        assert candidate.priority == option.priority
        assert candidate.has_free_capacity == is_free(option)
        assert candidate.load == option.load
        assert candidate.capacity == option.capacity
        if option.capacity is None:
            assert candidate.load_ratio == 0.0  # no limit: never full, ratio 0
        elif option.capacity > 0:
            assert candidate.load_ratio == option.load / option.capacity

    # The whole ranking is sorted by the SPEC's key, ties broken by service id.
    keys = [ranked_key(c) for c in decision.candidates]
    assert keys == sorted(keys)
    oracle = [expected_key(options_by_id[c.service_id], request) for c in decision.candidates]
    assert oracle == sorted(oracle)

    if decision.chosen is not None:
        chosen = decision.chosen
        best_depth = max(c.coverage_depth for c in decision.candidates)
        assert chosen.coverage_depth == best_depth
        same_depth = [c for c in decision.candidates if c.coverage_depth == best_depth]
        assert chosen.priority == min(c.priority for c in same_depth)
        tied = [c for c in same_depth if c.priority == chosen.priority]
        if any(c.has_free_capacity for c in tied):
            assert chosen.has_free_capacity
        tied = [c for c in tied if c.has_free_capacity == chosen.has_free_capacity]
        assert chosen.load_ratio == min(c.load_ratio for c in tied)


@SETTINGS
@given(scenarios())
def test_capacity_orders_but_never_forbids(scenario):
    request, options = scenario
    # Fill every service up: the candidates do not change, only their order may.
    full = [
        replace(o, capacity=o.capacity if o.capacity is not None else 2, load=8) for o in options
    ]
    before = {c.service_id for c in decide(request, options).candidates}
    after = decide(request, full)
    assert {c.service_id for c in after.candidates} == before
    assert not any(c.has_free_capacity for c in after.candidates)
    if before:
        assert after.chosen is not None


@SETTINGS
@given(scenarios(), st.integers(0, 5), st.integers(0, 8))
def test_a_full_service_is_chosen_when_it_is_the_only_eligible_one(scenario, capacity, extra):
    request, options = scenario
    eligible = [o for o in options if not expected_reasons(o, request)]
    ineligible = [o for o in options if expected_reasons(o, request)]
    if eligible:
        only = replace(eligible[0], capacity=capacity, load=capacity + extra)
    else:
        only = ServiceOption(
            id=uuid.uuid4(),
            partner_id=uuid.uuid4(),
            partner_active=True,
            active=True,
            areas=(request.area_code,),
            capacity=capacity,
            load=capacity + extra,
        )
    decision = decide(request, [*ineligible, only])
    assert [c.service_id for c in decision.candidates] == [only.id]
    assert decision.chosen is not None and not decision.chosen.has_free_capacity
    assert decision.deadline_at is not None


@SETTINGS
@given(scenarios())
def test_the_deadline_is_the_shorter_of_response_hours_and_the_priority_hours(scenario):
    request, options = scenario
    decision = decide(request, options)
    assert request.now is not None
    if decision.chosen is None:
        assert decision.deadline_at is None
        assert decision.candidates == ()
    else:
        chosen = by_id(options)[decision.chosen.service_id]
        hours = min(chosen.response_hours, PRIORITY_HOURS[request.priority])
        assert decision.deadline_at == request.now + timedelta(hours=hours)
        assert decision.deadline_at == deadline_for(
            request.now, chosen.response_hours, request.priority
        )


@SETTINGS
@given(scenarios())
def test_the_record_is_json_and_lists_every_candidate_and_exclusion(scenario):
    request, options = scenario
    decision = decide(request, options)
    record = json.loads(json.dumps(decision.as_record(request)))
    _check_record(record, decision, request)


def _check_record(record: dict, decision: Decision, request: RoutingRequest) -> None:
    assert record["service_type"] == request.service_type
    assert record["area_code"] == request.area_code
    assert record["priority"] == request.priority
    assert record["decided_at"] == (request.now.isoformat() if request.now else None)
    assert record["chosen_service_id"] == (
        str(decision.chosen.service_id) if decision.chosen else None
    )
    assert [c["rank"] for c in record["candidates"]] == list(range(1, len(decision.candidates) + 1))
    for entry, candidate in zip(record["candidates"], decision.candidates, strict=True):
        assert entry["service_id"] == str(candidate.service_id)
        assert entry["partner_id"] == str(candidate.partner_id)
        assert entry["coverage_depth"] == candidate.coverage_depth
        assert entry["priority"] == candidate.priority
        assert entry["has_free_capacity"] == candidate.has_free_capacity
        assert entry["load"] == candidate.load
        assert entry["capacity"] == candidate.capacity
        assert entry["load_ratio"] == round(candidate.load_ratio, 4)
    assert [(e["service_id"], e["partner_id"], e["reason"]) for e in record["excluded"]] == [
        (str(s), str(p), r) for s, p, r in decision.excluded
    ]
    assert all(e["reason"] for e in record["excluded"])
    assert record["excluded_partners"] == {
        str(p): why for p, why in request.excluded_partners.items()
    }


# ---------------------------------------------------------------------------------------------
# Examples.

NOW = datetime(2026, 3, 15, 9, 30, tzinfo=UTC)
PARTNER_A, PARTNER_B, PARTNER_C = (uuid.UUID(int=n) for n in (0xA, 0xB, 0xC))


def service(n: int, *, partner: uuid.UUID = PARTNER_A, **fields) -> ServiceOption:
    fields.setdefault("partner_active", True)
    fields.setdefault("active", True)
    fields.setdefault("areas", ("ML",))
    return ServiceOption(id=uuid.UUID(int=n), partner_id=partner, **fields)


def request_in(area: str, person: Person | None = None, **fields) -> RoutingRequest:
    fields.setdefault("priority", "normal")
    fields.setdefault("now", NOW)
    return RoutingRequest(
        service_type="job_placement",
        area_code=area,
        area_depths=area_depths(area),
        person=person or Person(sex="female", birth_year=1995),
        **fields,
    )


def test_a_commune_level_service_beats_a_region_level_one_even_with_a_worse_priority():
    commune = service(1, areas=("ML-1-01-a",), priority=900, capacity=1, load=5)
    region = service(2, partner=PARTNER_B, areas=("ML-1",), priority=0)
    country = service(3, partner=PARTNER_C, areas=("ML",), priority=0)
    decision = decide(request_in("ML-1-01-a"), [country, region, commune])
    assert [c.service_id for c in decision.candidates] == [commune.id, region.id, country.id]
    assert [c.coverage_depth for c in decision.candidates] == [3, 1, 0]
    assert decision.deadline_at == NOW + timedelta(hours=72)


def test_the_nearest_covering_area_gives_the_depth_when_a_service_names_several():
    both = service(1, areas=("ML", "ML-1-01"), priority=50)
    cercle = service(2, partner=PARTNER_B, areas=("ML-1-01",), priority=10)
    decision = decide(request_in("ML-1-01-b"), [both, cercle])
    assert [(c.service_id, c.coverage_depth) for c in decision.candidates] == [
        (cercle.id, 2),
        (both.id, 2),
    ]


def test_a_country_wide_service_is_chosen_when_nothing_more_specific_exists():
    country = service(1, areas=("ML",), response_hours=500)
    elsewhere = service(2, partner=PARTNER_B, areas=("ML-2", "ML-1-02"), priority=0)
    inactive = service(3, partner=PARTNER_C, areas=("ML-1-01-a",), active=False)
    decision = decide(request_in("ML-1-01-a", priority="emergency"), [elsewhere, inactive, country])
    assert decision.chosen is not None and decision.chosen.service_id == country.id
    assert decision.chosen.coverage_depth == 0
    assert decision.excluded == (
        (elsewhere.id, PARTNER_B, "not_covering"),
        (inactive.id, PARTNER_C, "inactive_service"),
    )
    assert decision.deadline_at == NOW + timedelta(hours=24)


def test_nothing_eligible_means_no_candidate_and_no_deadline():
    decision = decide(request_in("ML-2-01-a"), [service(1, areas=("ML-1",))])
    assert decision.chosen is None
    assert decision.deadline_at is None
    record = json.loads(json.dumps(decision.as_record(request_in("ML-2-01-a"))))
    assert record["chosen_service_id"] is None
    assert record["candidates"] == []
    assert record["excluded"] == [
        {
            "service_id": str(uuid.UUID(int=1)),
            "partner_id": str(PARTNER_A),
            "reason": "not_covering",
        }
    ]


def test_age_with_only_a_birth_year_is_the_age_reached_this_year():
    minors = service(1, max_age=17)
    adults = service(2, partner=PARTNER_B, min_age=18)
    # Born in 2008: 18 in 2026, whatever the birthday (NOW is 15 March 2026).
    person = Person(sex="male", birth_year=2008)
    decision = decide(request_in("ML-1", person), [minors, adults])
    assert [c.service_id for c in decision.candidates] == [adults.id]
    assert decision.excluded == ((minors.id, PARTNER_A, "age_not_admitted"),)
    # With the full date of birth, a birthday later in the year still counts.
    person = Person(sex="male", date_of_birth=date(2008, 11, 2))
    decision = decide(request_in("ML-1", person), [minors, adults])
    assert [c.service_id for c in decision.candidates] == [minors.id]
    # Age is taken at routing time, not today.
    later = request_in("ML-1", person, now=datetime(2027, 1, 1, tzinfo=UTC))
    assert [c.service_id for c in decide(later, [minors, adults]).candidates] == [adults.id]


def test_an_unknown_age_is_excluded_from_an_age_restricted_service():
    person = Person(sex="female")
    decision = decide(request_in("ML", person), [service(1, min_age=18), service(2)])
    assert [c.service_id for c in decision.candidates] == [uuid.UUID(int=2)]
    assert decision.excluded == ((uuid.UUID(int=1), PARTNER_A, "age_unknown"),)


def test_unknown_sex_is_excluded_from_a_sex_restricted_service():
    restricted = service(1, sexes=("female", "male", "other"))
    open_to_all = service(2, partner=PARTNER_B)
    decision = decide(request_in("ML-2", Person(sex="unknown")), [restricted, open_to_all])
    assert [c.service_id for c in decision.candidates] == [open_to_all.id]
    assert decision.excluded == ((restricted.id, PARTNER_A, "sex_unknown"),)
    decision = decide(request_in("ML-2", Person(sex="male")), [service(1, sexes=("female",))])
    assert decision.excluded == ((uuid.UUID(int=1), PARTNER_A, "sex_not_admitted"),)


def test_vulnerabilities_any_needs_one_of_them():
    svc = service(1, vulnerabilities_any=("disability", "trafficking"))
    with_one = Person(sex="female", birth_year=1990, vulnerabilities=("trafficking",))
    without = Person(sex="female", birth_year=1990, vulnerabilities=("chronic_illness",))
    assert decide(request_in("ML", with_one), [svc]).chosen is not None
    assert decide(request_in("ML", without), [svc]).excluded == (
        (svc.id, PARTNER_A, "no_required_vulnerability"),
    )


def test_excluded_and_inactive_partners_are_excluded_with_their_reason():
    options = [
        service(1, partner=PARTNER_A),
        service(2, partner=PARTNER_B, partner_active=False),
        service(3, partner=PARTNER_C),
    ]
    request = request_in("ML-1-02", excluded_partners={PARTNER_A: "expired"})
    decision = decide(request, options)
    assert [c.service_id for c in decision.candidates] == [uuid.UUID(int=3)]
    assert decision.excluded == (
        (uuid.UUID(int=1), PARTNER_A, "partner_excluded:expired"),
        (uuid.UUID(int=2), PARTNER_B, "inactive_partner"),
    )


def test_free_capacity_then_load_ratio_break_ties_then_service_id():
    full = service(1, capacity=2, load=2)
    busy = service(2, capacity=4, load=3)  # free, ratio 0.75
    quiet = service(3, capacity=4, load=1)  # free, ratio 0.25
    unlimited = service(4, load=50)  # no limit: free, ratio 0
    twin = service(5, load=7)
    decision = decide(request_in("ML-2-01"), [full, busy, quiet, twin, unlimited])
    assert [c.service_id.int for c in decision.candidates] == [4, 5, 3, 2, 1]


def test_from_row_reads_an_empty_eligibility_as_no_restriction():
    row = {
        "id": uuid.UUID(int=1),
        "partner_id": PARTNER_A,
        "status": "active",
        "areas": ["ML-1"],
        "eligibility": {"sexes": [], "vulnerabilities_any": []},
        "capacity": None,
        "response_hours": 48,
        "priority": 0,
    }
    option = ServiceOption.from_row(row, partner_active=True, load=3)
    assert option.sexes is None and option.vulnerabilities_any is None
    assert option.priority == 0 and option.response_hours == 48 and option.load == 3
    decision = decide(request_in("ML-1-01-a", Person(sex="unknown")), [option])
    assert decision.chosen is not None
    assert decision.deadline_at == NOW + timedelta(hours=48)
