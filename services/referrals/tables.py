"""Tables of schema `referrals`."""

from __future__ import annotations

from shared.db import schema_metadata

metadata = schema_metadata("referrals")
