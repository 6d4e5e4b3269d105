"""The registry's event consumers; run alone with `python -m services.registry.worker`."""

from __future__ import annotations

from services.registry import projector
from shared.eventlog.consumer import Consumer, Worker
from shared.observability import Metrics
from shared.settings import Settings
from shared.worker import run_worker


def consumers(settings: Settings, metrics: Metrics) -> list[Worker]:
    """The step-status projector of `referral.*` events."""
    return [
        Consumer(
            projector.CONSUMER_NAME,
            projector.project,
            poll_interval=settings.poll_interval_seconds,
            metrics=metrics,
        )
    ]


def main(settings: Settings | None = None) -> None:
    run_worker("registry", consumers, settings or Settings())


if __name__ == "__main__":
    main()
