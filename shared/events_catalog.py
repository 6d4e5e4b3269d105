"""The catalog of event types (SPEC 3): every CloudEvents `type` the hub emits, its source and
the resource its `data` carries. One definition for the check of endpoints' `event_types`
and the feed's `types`, the notifications document's webhooks, and the docs."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from shared.errors import FieldError, Unprocessable


@dataclass(frozen=True)
class EventType:
    name: str
    source: str
    carries: str  # the name of the resource schema its `data` is
    summary: str


def _types(source: str, carries: str, *pairs: tuple[str, str]) -> tuple[EventType, ...]:
    return tuple(EventType(name, source, carries, summary) for name, summary in pairs)


CATALOG: tuple[EventType, ...] = (
    *_types(
        "/registry",
        "PartnerRead",
        ("partner.created", "A partner was registered."),
        ("partner.updated", "A partner changed (name, contacts, kind or status)."),
    ),
    *_types(
        "/registry",
        "ServiceRead",
        ("service.created", "A service was added to the directory."),
        ("service.updated", "A service of the directory changed."),
    ),
    *_types(
        "/registry",
        "CaseRead",
        ("case.created", "A case was created."),
        ("case.updated", "A case's beneficiary, return, vulnerabilities or external id changed."),
        ("case.consent_changed", "Consent to referral was granted or withdrawn."),
        ("case.plan_changed", "Steps were added to the plan, or a step was cancelled."),
        ("case.step_completed", "The owner completed a direct step."),
        ("case.closed", "The case was closed."),
        ("case.reopened", "The case was reopened."),
        ("case.merged", "The case was merged into another (`merged_into`)."),
    ),
    *_types(
        "/registry",
        "CaseErased",
        (
            "case.erased",
            "The beneficiary's personal data was erased: erase your copy too (sent to the "
            "owner and every partner ever assigned one of the case's referrals).",
        ),
    ),
    *_types(
        "/referrals",
        "Referral",
        ("referral.created", "A step was routed: a new referral, `requested` or `unassigned`."),
        ("referral.accepted", "The assignee accepted the referral."),
        ("referral.rejected", "The assignee rejected the referral; the step is routed again."),
        ("referral.started", "The assignee started delivering the service."),
        ("referral.completed", "The assignee completed the referral, with its outcome."),
        ("referral.failed", "The assignee could not deliver; the step is routed again."),
        ("referral.cancelled", "The referral was cancelled (by its owner, an admin or the hub)."),
        ("referral.expired", "The assignee did not answer before the deadline."),
        ("referral.assigned", "The coordination assigned an unassigned referral to a partner."),
    ),
    *_types(
        "/referrals",
        "PathwayCompleted",
        ("case.pathway_completed", "Every step of the case's plan is completed or cancelled."),
    ),
    *_types(
        "/notifications",
        "EndpointRead",
        ("endpoint.disabled", "An endpoint was disabled (it failed for 5 days, or answered 410)."),
        ("endpoint.enabled", "An endpoint was enabled again."),
    ),
    *_types(
        "/notifications",
        "EndpointTestMessage",
        ("endpoint.test", "A test event, sent only to the endpoint it was asked for."),
    ),
)

EVENT_TYPES: tuple[str, ...] = tuple(e.name for e in CATALOG)

# An event type with `*` wildcards: `referral.*`, `*`, `case.pathway_completed`.
PATTERN = r"^[a-z_*][a-z_.*]{0,99}$"
_PATTERN = re.compile(PATTERN)


def matches(pattern: str, event_type: str) -> bool:
    """Whether `pattern` (`*` matches any run of characters) selects `event_type`."""
    return fnmatchcase(event_type, pattern)


def is_known(pattern: str) -> bool:
    """A well-formed pattern that selects at least one type of the catalog."""
    return bool(_PATTERN.match(pattern)) and any(matches(pattern, t) for t in EVENT_TYPES)


def check_patterns(patterns: Sequence[str], *, field: str) -> None:
    """Unprocessable (422) naming each pattern that selects no known event type, with the
    catalog in the detail and in `known_event_types`; `field` prefixes each item's index."""
    unknown = [(i, p) for i, p in enumerate(patterns) if not is_known(p)]
    if not unknown:
        return
    names = ", ".join(f"`{p}`" for _, p in unknown)
    error = Unprocessable(
        f"{names} {'matches' if len(unknown) == 1 else 'match'} no known event type. "
        f"Known types (`*` is a wildcard, e.g. `referral.*`): {', '.join(EVENT_TYPES)}.",
        errors=[
            FieldError(
                field=f"{field}[{i}]",
                message=f"`{p}` matches no known event type",
                type="unknown_event_type",
            )
            for i, p in unknown
        ],
    )
    error.extra["known_event_types"] = list(EVENT_TYPES)
    raise error
