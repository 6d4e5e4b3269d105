"""Endpoint secrets and Standard Webhooks signatures (with the `standardwebhooks` library)."""

from __future__ import annotations

import base64
import secrets as random_bytes
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
ROTATION_OVERLAP = timedelta(hours=24)


def new_secret() -> str:
    """`whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(random_bytes.token_bytes(32)).decode()


def valid_secrets(stored: Iterable[Mapping[str, Any]], now: datetime) -> list[str]:
    """The secrets that still sign: the current one and those rotated out less than 24 h ago."""
    valid = []
    for item in stored:
        expires = item.get("expires_at")
        if expires is None or datetime.fromisoformat(expires) > now:
            valid.append(item["secret"])
    return valid


def rotate(stored: list[Mapping[str, Any]], now: datetime) -> tuple[list[dict[str, Any]], str]:
    """The secrets after a rotation (the old ones expire in 24 h) and the new secret."""
    fresh = new_secret()
    kept = [
        {**item, "expires_at": item.get("expires_at") or (now + ROTATION_OVERLAP).isoformat()}
        for item in stored
        if item.get("expires_at") is None or datetime.fromisoformat(item["expires_at"]) > now
    ]
    return [{"secret": fresh, "created_at": now.isoformat(), "expires_at": None}, *kept], fresh


def signature_header(secrets: Iterable[str], msg_id: str, timestamp: datetime, body: str) -> str:
    """`v1,<sig>` for every valid secret, space-separated (newest first)."""
    return " ".join(Webhook(secret).sign(msg_id, timestamp, body) for secret in secrets)


def headers_for(
    secrets: Iterable[str], msg_id: str, timestamp: datetime, body: str
) -> dict[str, str]:
    return {
        "content-type": "application/cloudevents+json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
        "user-agent": "Relais-Webhooks/1.0",
    }
