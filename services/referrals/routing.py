"""The routing decision (SPEC 5.2 to 5.5): candidates, exclusions and ranking. Pure: no I/O.

The reconciler, `POST /routing/preview` and an admin's assignment build their request with
the same `request_for` and call the same `decide`, so a preview is exactly the decision the
reconciler would make with the same inputs. Routing is deterministic: the same inputs give
the same service.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

from shared.referral_statuses import EXCLUDING_STATUSES

PRIORITY_HOURS = {"emergency": 24, "urgent": 72, "normal": 336}
MAX_ROUTED_ATTEMPTS = 4

# Why a service is not a candidate.
INACTIVE_SERVICE = "inactive_service"
INACTIVE_PARTNER = "inactive_partner"
NOT_COVERING = "not_covering"
SEX = "sex_not_admitted"
SEX_UNKNOWN = "sex_unknown"
AGE = "age_not_admitted"
AGE_UNKNOWN = "age_unknown"
VULNERABILITIES = "no_required_vulnerability"
PARTNER_EXCLUDED = "partner_excluded"  # followed by the reason: rejected, expired or failed


@dataclass(frozen=True)
class ServiceOption:
    """A service of the requested type, as the directory describes it, with its load."""

    id: UUID
    partner_id: UUID
    partner_active: bool
    active: bool
    areas: tuple[str, ...]
    sexes: tuple[str, ...] | None = None
    min_age: int | None = None
    max_age: int | None = None
    vulnerabilities_any: tuple[str, ...] | None = None
    capacity: int | None = None
    response_hours: int = 72
    priority: int = 100
    load: int = 0  # its referrals in requested, accepted or in_progress

    @classmethod
    def from_row(cls, row: Mapping[str, Any], *, partner_active: bool, load: int) -> ServiceOption:
        eligibility = row.get("eligibility") or {}
        return cls(
            id=row["id"],
            partner_id=row["partner_id"],
            partner_active=partner_active,
            active=row.get("status", "active") == "active",
            areas=tuple(row.get("areas") or ()),
            sexes=_tuple_or_none(eligibility.get("sexes")),
            min_age=eligibility.get("min_age"),
            max_age=eligibility.get("max_age"),
            vulnerabilities_any=_tuple_or_none(eligibility.get("vulnerabilities_any")),
            capacity=row.get("capacity"),
            response_hours=int(row.get("response_hours") or 72),
            priority=int(row.get("priority") if row.get("priority") is not None else 100),
            load=load,
        )


def _tuple_or_none(value: Sequence[str] | None) -> tuple[str, ...] | None:
    return tuple(value) if value else None


@dataclass(frozen=True)
class Person:
    """What eligibility looks at."""

    sex: str = "unknown"
    date_of_birth: date | None = None
    birth_year: int | None = None
    vulnerabilities: tuple[str, ...] = ()

    def age_on(self, day: date) -> int | None:
        """Exact with a date of birth; with only a birth year, the age reached this year."""
        if self.date_of_birth is not None:
            born = self.date_of_birth
            return day.year - born.year - ((day.month, day.day) < (born.month, born.day))
        if self.birth_year is not None:
            return day.year - self.birth_year
        return None


@dataclass(frozen=True)
class RoutingRequest:
    """One step to route: its type and priority, where the person lives, who is excluded."""

    service_type: str
    priority: str
    area_code: str
    area_depths: Mapping[str, int]  # the case's area and each ancestor → its depth
    person: Person
    excluded_partners: Mapping[UUID, str] = field(default_factory=dict)  # → rejected/expired/failed
    now: datetime | None = None


@dataclass(frozen=True)
class StepHistory:
    """What a step's referrals so far mean for its next routing (SPEC 5.6)."""

    referrals: int = 0  # the next referral's attempt is this plus one
    excluded_partners: Mapping[UUID, str] = field(default_factory=dict)  # → why
    routed_failures: int = 0  # attempts that ended in an exclusion

    @property
    def exhausted(self) -> bool:
        """The step had its routed attempts: its next referral is unassigned."""
        return self.routed_failures >= MAX_ROUTED_ATTEMPTS


def step_history(referrals: Sequence[Mapping[str, Any]]) -> StepHistory:
    """A step's referrals (status, assignee_partner_id, attempt) → its history: each partner
    that rejected, let expire or failed it is excluded (the latest reason kept) and the
    attempt counts; a cancellation does neither."""
    excluded: dict[UUID, str] = {}
    failures = 0
    for r in sorted(referrals, key=lambda r: r["attempt"]):
        if r["status"] in EXCLUDING_STATUSES:
            failures += 1
            if r["assignee_partner_id"]:
                excluded[r["assignee_partner_id"]] = r["status"]
    return StepHistory(
        referrals=len(referrals), excluded_partners=excluded, routed_failures=failures
    )


def person_of(case: Mapping[str, Any]) -> Person:
    """The person eligibility looks at, from a case's beneficiary and vulnerabilities."""
    person = case.get("beneficiary") or {}
    born = person.get("date_of_birth")
    return Person(
        sex=person.get("sex") or "unknown",
        date_of_birth=date.fromisoformat(born) if born else None,
        birth_year=person.get("birth_year"),
        vulnerabilities=tuple(case.get("vulnerabilities") or ()),
    )


def request_for(
    *,
    case: Mapping[str, Any],
    service_type: str,
    priority: str,
    area_depths: Mapping[str, int],
    history: StepHistory,
    now: datetime,
) -> RoutingRequest:
    """The one way a routing request is built: a step (its type and priority) of a case
    (`return_area_code`, beneficiary, vulnerabilities), the depths of the case's area and its
    ancestors, and the partners the step's history excludes."""
    return RoutingRequest(
        service_type=service_type,
        priority=priority,
        area_code=case["return_area_code"],
        area_depths=dict(area_depths),
        person=person_of(case),
        excluded_partners=dict(history.excluded_partners),
        now=now,
    )


@dataclass(frozen=True)
class Candidate:
    service_id: UUID
    partner_id: UUID
    coverage_depth: int
    priority: int
    has_free_capacity: bool
    load: int
    capacity: int | None
    load_ratio: float

    def rank_key(self) -> tuple:
        return (
            -self.coverage_depth,
            self.priority,
            0 if self.has_free_capacity else 1,
            self.load_ratio,
            str(self.service_id),
        )


@dataclass(frozen=True)
class Decision:
    candidates: tuple[Candidate, ...]  # ranked, best first
    excluded: tuple[tuple[UUID, UUID, str], ...]  # (service, partner, reason), by service id
    deadline_at: datetime | None  # for the chosen service

    @property
    def chosen(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def as_record(self, request: RoutingRequest) -> dict[str, Any]:
        """The decision as stored with the referral and shown to admins and the owner."""
        return {
            "service_type": request.service_type,
            "area_code": request.area_code,
            "priority": request.priority,
            "decided_at": request.now.isoformat() if request.now else None,
            "chosen_service_id": str(self.chosen.service_id) if self.chosen else None,
            "candidates": [
                {
                    "rank": rank,
                    "service_id": str(c.service_id),
                    "partner_id": str(c.partner_id),
                    "coverage_depth": c.coverage_depth,
                    "priority": c.priority,
                    "has_free_capacity": c.has_free_capacity,
                    "load": c.load,
                    "capacity": c.capacity,
                    "load_ratio": round(c.load_ratio, 4),
                }
                for rank, c in enumerate(self.candidates, start=1)
            ],
            "excluded": [
                {"service_id": str(s), "partner_id": str(p), "reason": r}
                for s, p, r in self.excluded
            ],
            "excluded_partners": {
                str(p): reason for p, reason in sorted(request.excluded_partners.items(), key=str)
            },
        }


def exclusion(option: ServiceOption, request: RoutingRequest, today: date) -> str | None:
    """Why `option` cannot take this step, or None when it is a candidate."""
    if not option.active:
        return INACTIVE_SERVICE
    if not option.partner_active:
        return INACTIVE_PARTNER
    if option.partner_id in request.excluded_partners:
        return f"{PARTNER_EXCLUDED}:{request.excluded_partners[option.partner_id]}"
    if not any(code in request.area_depths for code in option.areas):
        return NOT_COVERING
    person = request.person
    if option.sexes is not None:
        if person.sex not in ("female", "male", "other"):
            return SEX_UNKNOWN
        if person.sex not in option.sexes:
            return SEX
    if option.min_age is not None or option.max_age is not None:
        age = person.age_on(today)
        if age is None:
            return AGE_UNKNOWN
        if (option.min_age is not None and age < option.min_age) or (
            option.max_age is not None and age > option.max_age
        ):
            return AGE
    if option.vulnerabilities_any is not None and not set(option.vulnerabilities_any) & set(
        person.vulnerabilities
    ):
        return VULNERABILITIES
    return None


def candidate_of(option: ServiceOption, request: RoutingRequest) -> Candidate:
    depth = max(request.area_depths[code] for code in option.areas if code in request.area_depths)
    if option.capacity is None:
        free, ratio = True, 0.0
    elif option.capacity == 0:
        free, ratio = False, float(option.load + 1)
    else:
        free, ratio = option.load < option.capacity, option.load / option.capacity
    return Candidate(
        service_id=option.id,
        partner_id=option.partner_id,
        coverage_depth=depth,
        priority=option.priority,
        has_free_capacity=free,
        load=option.load,
        capacity=option.capacity,
        load_ratio=ratio,
    )


def decide(request: RoutingRequest, options: Sequence[ServiceOption]) -> Decision:
    """Rank the services that may take the step; the first is chosen (none: unassigned).

    Rank: most specific coverage first, then `priority`, then free capacity before full,
    then the lowest load ratio, then service id. Capacity orders; it never forbids.
    A service without a capacity is never full and has a load ratio of 0.
    """
    now = request.now
    today = now.date() if now else date.today()
    candidates: list[Candidate] = []
    excluded: list[tuple[UUID, UUID, str]] = []
    for option in sorted(options, key=lambda o: str(o.id)):
        reason = exclusion(option, request, today)
        if reason is None:
            candidates.append(candidate_of(option, request))
        else:
            excluded.append((option.id, option.partner_id, reason))
    candidates.sort(key=Candidate.rank_key)
    deadline = None
    if candidates and now is not None:
        chosen = next(o for o in options if o.id == candidates[0].service_id)
        deadline = deadline_for(now, chosen.response_hours, request.priority)
    return Decision(candidates=tuple(candidates), excluded=tuple(excluded), deadline_at=deadline)


def deadline_for(now: datetime, response_hours: int, priority: str) -> datetime:
    """Now plus the shorter of the service's response time and the priority's hours."""
    return now + timedelta(hours=min(response_hours, PRIORITY_HOURS.get(priority, 336)))
