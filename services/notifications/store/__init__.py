"""The notifications service's queries: the only code that holds its SQL or touches the
driver. Keyword-only functions that take a pooled connection (or, for the dispatcher's
statements, which open their own, the Database)."""

from services.notifications.store.deliveries import (
    attempts_of,
    erase_texts_about_case,
    fanout_candidates,
    get_delivery,
    insert_deliveries,
    list_deliveries,
    recover_deliveries,
    retry_delivery,
    set_partner_active,
)
from services.notifications.store.dispatch import (
    AttemptRecord,
    claim_due,
    fetch,
    record_attempts,
    refused,
    sqlstate,
)
from services.notifications.store.endpoints import (
    create_endpoint,
    delete_endpoint,
    disable_endpoint,
    emit_endpoint_event,
    endpoint_view,
    get_endpoint,
    list_endpoints,
    update_endpoint,
)
from services.notifications.store.feed import read_feed
from shared.db import Connection  # what the functions above take, for callers' annotations

__all__ = [
    "AttemptRecord",
    "Connection",
    "attempts_of",
    "claim_due",
    "create_endpoint",
    "delete_endpoint",
    "disable_endpoint",
    "emit_endpoint_event",
    "endpoint_view",
    "erase_texts_about_case",
    "fanout_candidates",
    "fetch",
    "get_delivery",
    "get_endpoint",
    "insert_deliveries",
    "list_deliveries",
    "list_endpoints",
    "read_feed",
    "record_attempts",
    "recover_deliveries",
    "refused",
    "retry_delivery",
    "set_partner_active",
    "sqlstate",
    "update_endpoint",
]
