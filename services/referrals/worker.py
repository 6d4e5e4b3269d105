"""The referrals service's workers: the reconciler and the deadline sweeper.
Run alone with `python -m services.referrals.worker`."""

from __future__ import annotations

from services.referrals import reconciler
from services.referrals.sweeper import DeadlineSweeper
from shared.eventlog.consumer import Consumer, Worker
from shared.observability import Metrics
from shared.settings import Settings
from shared.worker import run_worker


def consumers(settings: Settings, metrics: Metrics) -> list[Worker]:
    return [
        Consumer(
            reconciler.CONSUMER_NAME,
            reconciler.handle,
            wants=reconciler.wants,
            batch_size=50,  # smaller batches commit sooner: lower latency under load
            poll_interval=settings.poll_interval_seconds,
            linger=settings.routing_linger_ms / 1000,
            metrics=metrics,
        ),
        DeadlineSweeper(interval=settings.poll_interval_seconds),
    ]


def main(settings: Settings | None = None) -> None:
    run_worker("referrals", consumers, settings or Settings())


if __name__ == "__main__":
    main()
