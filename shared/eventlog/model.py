"""The event as stored in `hub.events` and as carried on the wire (CloudEvents 1.0)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

SOURCES = ("/registry", "/referrals", "/notifications")


def sequence_of(tx: int, seq: int) -> str:
    """The CloudEvents `sequence`: sorts in the consumers' order and is the feed's cursor."""
    return f"{tx:020d}{seq:020d}"


def parse_sequence(value: str) -> tuple[int, int]:
    """Inverse of `sequence_of`; ValueError on anything else."""
    if len(value) != 40 or not value.isdigit():
        raise ValueError("a sequence is 40 digits")
    return int(value[:20]), int(value[20:])


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    id: UUID
    tx: int
    type: str
    source: str
    subject: str
    time: datetime
    actor: str
    audience: tuple[UUID, ...]
    data: Mapping[str, Any]
    correlation_id: str | None = None
    causation_id: UUID | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sequence(self) -> str:
        return sequence_of(self.tx, self.seq)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Event:
        return cls(
            seq=row["seq"],
            id=row["id"],
            tx=int(row["tx"]),
            type=row["type"],
            source=row["source"],
            subject=row["subject"],
            time=row["time"],
            actor=row["actor"],
            audience=tuple(row["audience"] or ()),
            data=row["data"],
            correlation_id=row["correlation_id"],
            causation_id=row["causation_id"],
        )

    def to_cloudevent(self) -> dict[str, Any]:
        """The CloudEvents 1.0 JSON form, exactly as a webhook or the feed carries it."""
        return {
            "specversion": "1.0",
            "id": str(self.id),
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "datacontenttype": "application/json",
            "sequence": self.sequence,
            "data": self.data,
        }
