"""Tables of schema `notifications`: webhook endpoints, deliveries and their attempts."""

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
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from shared.db import schema_metadata
from shared.tables import Xid8

metadata = schema_metadata("notifications")

endpoints = Table(
    "endpoints",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    # Null: an endpoint of the coordination (admin), which receives every event.
    Column("partner_id", UUID(as_uuid=True)),
    Column("url", String(2000), nullable=False),
    Column("event_types", ARRAY(String(100)), nullable=False),
    Column("description", String(500), nullable=False, server_default=""),
    Column("status", String(10), nullable=False, server_default="active"),
    Column("disabled_reason", String(200)),
    # Paused while the partner is inactive (from partner.* events); deliveries wait.
    Column("partner_active", Boolean, nullable=False, server_default="true"),
    # Signing secrets: [{"secret": "whsec_...", "created_at": ..., "expires_at": null|...}]
    Column("secrets", JSONB, nullable=False),
    Column("failing_since", DateTime(timezone=True)),
    # Where its subscription starts: the oldest transaction running when it was registered.
    # It receives the events of that transaction and later ones (migration 0008).
    Column(
        "since_tx",
        Xid8(),
        nullable=False,
        server_default=text("pg_snapshot_xmin(pg_current_snapshot())"),
    ),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("status IN ('active', 'disabled')", name="status"),
    Index("ix_endpoints_partner_id", "partner_id"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "endpoint_id",
        UUID(as_uuid=True),
        ForeignKey("notifications.endpoints.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("partner_id", UUID(as_uuid=True)),  # the endpoint's partner, for tenancy
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("event_seq", BigInteger, nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("status", String(10), nullable=False, server_default="pending"),
    Column("attempt_count", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("lease_until", DateTime(timezone=True)),
    Column("last_status_code", Integer),
    Column("last_error", String(500)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status"),
    UniqueConstraint("event_id", "endpoint_id"),  # leads with the event: a case's deliveries
    # The dispatcher's claim, per endpoint: its due deliveries in order, and its live leases.
    Index(
        "ix_deliveries_due_by_endpoint",
        "endpoint_id",
        "next_attempt_at",
        "id",
        postgresql_where=text("status = 'pending'"),
    ),
    Index(
        "ix_deliveries_leased_by_endpoint",
        "endpoint_id",
        "lease_until",
        postgresql_where=text("status = 'pending' AND lease_until IS NOT NULL"),
    ),
    Index("ix_deliveries_endpoint_id_created_at_id", "endpoint_id", "created_at", "id"),
    Index("ix_deliveries_partner_id_created_at_id", "partner_id", "created_at", "id"),
    Index("ix_deliveries_created_at_id", "created_at", "id"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column(
        "delivery_id",
        UUID(as_uuid=True),
        ForeignKey("notifications.deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("attempted_at", DateTime(timezone=True), nullable=False),
    Column("status_code", Integer),
    Column("latency_ms", Integer, nullable=False),
    Column("error", String(500)),
    Column("response_excerpt", Text),
    Index("ix_attempts_delivery_id_id", "delivery_id", "id"),
)
