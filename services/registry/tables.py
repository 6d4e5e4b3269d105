"""Tables of schema `registry`: partners, services, cases and what hangs off them."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    func,
)
from sqlalchemy.dialects.postgresql import UUID

from shared.db import schema_metadata

metadata = schema_metadata("registry")

PARTNER_KINDS = ("government", "ngo", "un_agency", "private", "community")

partners = Table(
    "partners",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("acronym", String(40), nullable=False, server_default=""),
    Column("kind", String(20), nullable=False),
    Column("contact_email", String(254)),
    Column("contact_phone", String(20)),
    Column("status", String(10), nullable=False, server_default="active"),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(f"kind IN {PARTNER_KINDS!r}", name="kind"),
    CheckConstraint("status IN ('active', 'inactive')", name="status"),
    Index("ix_partners_name_id", "name", "id"),
)
