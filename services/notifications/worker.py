"""The notifications service's event consumers; `python -m services.notifications.worker`."""

from __future__ import annotations

from shared.eventlog.consumer import Worker
from shared.observability import Metrics
from shared.settings import Settings
from shared.worker import run_worker


def consumers(settings: Settings, metrics: Metrics) -> list[Worker]:
    """The notifications service's consumers (none yet)."""
    return []


def main(settings: Settings | None = None) -> None:
    run_worker("notifications", consumers, settings or Settings())


if __name__ == "__main__":
    main()
