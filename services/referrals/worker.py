"""The referrals service's event consumers; run alone with `python -m services.referrals.worker`."""

from __future__ import annotations

from shared.eventlog.consumer import Consumer
from shared.observability import Metrics
from shared.settings import Settings
from shared.worker import run_worker


def consumers(settings: Settings, metrics: Metrics) -> list[Consumer]:
    """The referrals service's consumers (none yet)."""
    return []


def main(settings: Settings | None = None) -> None:
    run_worker("referrals", consumers, settings or Settings())


if __name__ == "__main__":
    main()
