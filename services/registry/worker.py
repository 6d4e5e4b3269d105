"""The registry's event consumers; run alone with `python -m services.registry.worker`."""

from __future__ import annotations

from services.registry import projector
from services.registry.retention_worker import RetentionWorker
from shared.eventlog.consumer import Consumer, Worker
from shared.observability import Metrics
from shared.settings import Settings
from shared.worker import run_worker


def consumers(settings: Settings, metrics: Metrics) -> list[Worker]:
    """The step-status projector of `referral.*` events and, with `RELAIS_RETENTION_DAYS`
    set, the retention worker."""
    workers: list[Worker] = [
        Consumer(
            projector.CONSUMER_NAME,
            projector.project,
            wants=projector.wants,
            poll_interval=settings.poll_interval_seconds,
            metrics=metrics,
        )
    ]
    if settings.retention_days is not None:
        workers.append(
            RetentionWorker(
                days=settings.retention_days,
                interval_seconds=settings.retention_interval_seconds,
            )
        )
    return workers


def main(settings: Settings | None = None) -> None:
    run_worker("registry", consumers, settings or Settings())


if __name__ == "__main__":
    main()
