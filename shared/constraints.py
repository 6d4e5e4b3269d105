"""What the database refuses, as the answer a client gets (SPEC 7 and 9: bad input answers 4xx
with a problem document, never 5xx, and changes nothing).

The stores check what a request refers to before they write (an unknown partner, an external
id already used): those checks give the answers integrators normally see. A constraint can
still trip when two requests race past the same check; the unexpected-error path then
answers from `REQUEST_CONSTRAINTS`, found by the constraint's name (the naming convention of
`shared.db` keeps the names stable across migrations). Every other constraint holds values
the hub sets itself: its violation is a fault of the hub and stays a 500.

The database's message is never copied into an answer or a log: it quotes the row's values,
which may be personal data. Only the constraint's, table's and column's names are used.

It also tells which failures of the database are passing outages (answered 503 with
Retry-After) by their SQLSTATE: a file or disk the server cannot read or write, corrupted
data, exhausted resources, a server shutting down.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

PARTNER_UNKNOWN = "no partner with this id"


@dataclass(frozen=True)
class Refusal:
    """The answer to a request that tripped a constraint: its status and the field to blame.

    `field` is a path as the validation errors name it (`body.owner_partner_id`); when the
    route takes the field's last name as a path parameter, the answer names `path.<name>`.
    """

    status: int
    field: str
    message: str
    type: str

    @property
    def slug(self) -> str:
        return "conflict" if self.status == 409 else "validation"

    @property
    def title(self) -> str:
        return "Conflict" if self.status == 409 else "Invalid request"

    def field_for(self, path_params: Container[str]) -> str:
        name = self.field.rsplit(".", 1)[-1]
        return f"path.{name}" if name in path_params else self.field


def _unknown(field: str, message: str) -> Refusal:
    return Refusal(422, field, message, "unknown")


def _taken(field: str, message: str) -> Refusal:
    return Refusal(409, field, message, "duplicate")


def _not_allowed(field: str) -> Refusal:
    return Refusal(422, field, "value not allowed", "enum")


# Constraints whose values come from a request, by `schema.constraint name`.
REQUEST_CONSTRAINTS: dict[str, Refusal] = {
    "registry.fk_cases_owner_partner_id_partners": _unknown(
        "body.owner_partner_id", PARTNER_UNKNOWN
    ),
    "registry.uq_cases_owner_partner_id_external_id": _taken(
        "body.external_id", "another case of this owner has this external_id"
    ),
    "registry.fk_services_partner_id_partners": _unknown("body.partner_id", PARTNER_UNKNOWN),
    "registry.ck_partners_kind": _not_allowed("body.kind"),
    "registry.ck_partners_status": _not_allowed("body.status"),
    "registry.ck_services_status": _not_allowed("body.status"),
    "hub.pk_service_types": _taken("body.code", "a service type has this code"),
    "hub.ck_service_types_dimension": _not_allowed("body.dimension"),
    "hub.fk_areas_parent_code_areas": _unknown(
        "file.parent_code", "unknown parent: neither in the file nor known"
    ),
}

# Constraints on values the hub sets itself, and why no request's value reaches them. A
# violation of one of these is a fault of the hub: it stays a 500 and is logged by name.
HUB_CONSTRAINTS: dict[str, str] = {
    **{
        f"{schema}.pk_{table}": "a key the hub generates or upserts"
        for schema, tables in {
            "hub": ("events", "consumer_checkpoints", "api_keys", "idempotency_records", "areas"),
            "registry": (
                "partners",
                "services",
                "cases",
                "plan_steps",
                "duplicate_keys",
                "duplicates",
                "access_log",
            ),
            "referrals": (
                "partners",
                "services",
                "cases",
                "steps",
                "referrals",
                "referral_history",
                "service_loads",
                "service_load_changes",
                "referral_facts",
                "indicator_days",
                "indicator_firsts",
                "indicator_deadlines",
                "indicator_durations",
            ),
            "notifications": ("endpoints", "deliveries", "attempts"),
        }.items()
        for table in tables
    },
    "hub.uq_events_id": "event ids are generated",
    "hub.ix_events_tx_seq": "the log's own position",
    "hub.uq_api_keys_key_hash": "keys are random",
    "hub.ck_api_keys_role": "set by the route that creates the key",
    "hub.ck_api_keys_role_partner": "set by the route that creates the key",
    "hub.ck_idempotency_records_state": "set by the idempotency layer",
    "registry.uq_cases_reference": "references come from a sequence",
    "registry.ck_cases_status": "changed only by the case's actions",
    "registry.uq_plan_steps_case_id_key": "keys are settled under the case's row lock",
    "registry.fk_plan_steps_case_id_cases": "steps are written with their case",
    "registry.fk_duplicate_keys_case_id_cases": "written with the case",
    "registry.fk_duplicates_case_a_id_cases": "pairs of stored cases",
    "registry.fk_duplicates_case_b_id_cases": "pairs of stored cases",
    "registry.uq_duplicates_case_a_id_case_b_id": "recorded with ON CONFLICT",
    "registry.ck_duplicates_ordered": "pairs are ordered by the hub",
    "registry.ck_duplicates_status": "changed only by the pair's actions",
    "registry.ck_access_log_view": "set by the route that reads",
    "referrals.ck_referrals_status": "changed only by the lifecycle",
    "referrals.uq_referrals_live_step": "the router's guard against a second live referral",
    "referrals.fk_steps_case_id_cases": "projections written from events",
    "referrals.fk_referral_history_referral_id_referrals": "written with its referral",
    "referrals.ck_indicator_firsts_kind": "the indicators' rollup, written by the reconciler",
    "referrals.ck_indicator_durations_measure": "the indicators' rollup, written by the reconciler",
    "notifications.ck_endpoints_status": "changed only by the endpoint's actions",
    "notifications.ck_deliveries_status": "changed only by the dispatcher",
    "notifications.uq_deliveries_event_id_endpoint_id": "fanned out with ON CONFLICT",
    "notifications.fk_deliveries_endpoint_id_endpoints": "fanned out by a worker",
    "notifications.fk_attempts_delivery_id_deliveries": "recorded by the dispatcher",
}

# Columns whose name differs from the request field that fills them.
_COLUMN_FIELDS = {"return_info": "body.return", "return_area_code": "body.return.area_code"}

_INTEGRITY_CLASS = "23"
_NOT_NULL = "23502"

# A file, disk or memory the server lacks, corrupted data, a server shutting down: passing
# faults of the database, not of the request (classes 08, 53, 58; 57P01-57P05; XX001-XX002).
_OUTAGE_PREFIXES = ("08", "53", "58", "57P", "XX001", "XX002")


@dataclass(frozen=True)
class DatabaseError:
    """The fields of a PostgreSQL error that name things, never its message or detail."""

    sqlstate: str
    schema: str | None = None
    table: str | None = None
    column: str | None = None
    constraint: str | None = None

    @property
    def qualified_constraint(self) -> str | None:
        if self.constraint is None:
            return None
        return f"{self.schema}.{self.constraint}" if self.schema else self.constraint


def database_error(exc: BaseException) -> DatabaseError | None:
    """The PostgreSQL error behind `exc` (it, what it wraps as `orig`, its causes), or None."""
    pending: list[BaseException | None] = [exc]
    seen: list[BaseException] = []
    found: DatabaseError | None = None
    while pending and len(seen) < 12:
        item = pending.pop(0)
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        sqlstate = getattr(item, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate:
            named = DatabaseError(
                sqlstate=sqlstate,
                schema=_name(item, "schema_name"),
                table=_name(item, "table_name"),
                column=_name(item, "column_name"),
                constraint=_name(item, "constraint_name"),
            )
            # The driver's own error names the constraint; a wrapper may only copy its state.
            if found is None or (_names_something(named) and not _names_something(found)):
                found = named
        pending += [getattr(item, "orig", None), item.__cause__, item.__context__]
    return found


def _names_something(error: DatabaseError) -> bool:
    return error.constraint is not None or error.column is not None


def _name(item: BaseException, attribute: str) -> str | None:
    value = getattr(item, attribute, None)
    return value if isinstance(value, str) and value else None


def refusal_for(error: DatabaseError) -> Refusal | None:
    """The 4xx answer to a violated constraint that a request's value reached, else None."""
    if not error.sqlstate.startswith(_INTEGRITY_CLASS):
        return None
    if error.sqlstate == _NOT_NULL and error.column:
        # A NOT NULL column left empty: only a request's null does that (the hub fills its own).
        field = _COLUMN_FIELDS.get(error.column, f"body.{error.column}")
        return Refusal(422, field, "cannot be null", "null")
    name = error.qualified_constraint
    return REQUEST_CONSTRAINTS.get(name) if name else None


def is_outage(error: DatabaseError) -> bool:
    """The database cannot serve right now (I/O, corruption, resources, shutdown): 503."""
    return error.sqlstate.startswith(_OUTAGE_PREFIXES)
