"""Tables of schema `hub`: what all three services share (SPEC 2 and 3).

The event log, consumer checkpoints, idempotency records, API keys and the reference data.
Only the registry writes keys and reference data; every service reads them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.dialects.postgresql.base import ischema_names
from sqlalchemy.types import UserDefinedType

from shared.db import schema_metadata
from shared.eventlog.about_case import CASE_OF_EVENT

HUB_SCHEMA = "hub"
metadata = schema_metadata(HUB_SCHEMA)


class Xid8(UserDefinedType):
    """PostgreSQL's 64-bit transaction id; asyncpg reads and writes it as int."""

    cache_ok = True

    def get_col_spec(self, **_kw: object) -> str:
        return "xid8"


ischema_names["xid8"] = Xid8  # so that reflection (and the drift test) knows the type


events = Table(
    "events",
    metadata,
    Column("seq", BigInteger, Identity(always=True), primary_key=True),
    Column("id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("tx", Xid8(), nullable=False, server_default=text("pg_current_xact_id()")),
    Column("type", String(100), nullable=False),
    Column("source", String(40), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", String(64), nullable=False),
    Column("audience", ARRAY(UUID(as_uuid=True)), nullable=False, server_default="{}"),
    Column("correlation_id", String(64)),
    Column("causation_id", UUID(as_uuid=True)),
    Column("data", JSONB, nullable=False),
    Index("ix_events_tx_seq", "tx", "seq", unique=True),
    Index("ix_events_audience", "audience", postgresql_using="gin"),
    Index("ix_events_type", "type"),
    Index("ix_events_case", text(CASE_OF_EVENT)),
)

consumer_checkpoints = Table(
    "consumer_checkpoints",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("tx", Xid8(), nullable=False, server_default=text("'0'::xid8")),
    Column("seq", BigInteger, nullable=False, server_default="0"),
    Column("events_processed", BigInteger, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("role", String(16), nullable=False),
    # The registry owns partners; the key only carries its partner's id and whether that
    # partner is active, so that every service authenticates without reading registry tables.
    Column("partner_id", UUID(as_uuid=True)),
    Column("partner_active", Boolean, nullable=False, server_default="true"),
    Column("name", String(200), nullable=False, server_default=""),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", LargeBinary(32), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
    Column("expires_at", DateTime(timezone=True)),  # past it the key answers 401
    CheckConstraint("role IN ('admin', 'partner')", name="role"),
    CheckConstraint(
        "(role = 'admin' AND partner_id IS NULL) OR (role = 'partner' AND partner_id IS NOT NULL)",
        name="role_partner",
    ),
    Index("ix_api_keys_partner_id", "partner_id"),
)

idempotency_records = Table(
    "idempotency_records",
    metadata,
    Column("scope", String(64), primary_key=True),  # the caller: a partner id or "admin"
    Column("method", String(10), primary_key=True),
    Column("path", String(500), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", LargeBinary(32), nullable=False),
    Column("state", String(16), nullable=False, server_default="in_flight"),
    Column("response_status", Integer),
    Column("response_headers", JSONB),
    Column("response_body", LargeBinary),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("state IN ('in_flight', 'done')", name="state"),
    Index("ix_idempotency_records_created_at", "created_at"),
)

areas = Table(
    "areas",
    metadata,
    Column("code", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("level", String(32), nullable=False),
    Column("depth", Integer, nullable=False),
    Column("parent_code", String(32), ForeignKey("hub.areas.code")),
    Column("path", ARRAY(String(32)), nullable=False),  # ancestor codes from the root, then self
    Column("code_list_version", String(100), nullable=False),
    Index("ix_areas_parent_code", "parent_code"),
    Index("ix_areas_path", "path", postgresql_using="gin"),
)

service_types = Table(
    "service_types",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("dimension", String(32), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    CheckConstraint(
        "dimension IN ('economic', 'social', 'psychosocial', 'immediate')", name="dimension"
    ),
)
