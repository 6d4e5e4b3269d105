"""The notifications service's workers: the fan-out consumer and the dispatcher.
Run alone with `python -m services.notifications.worker`."""

from __future__ import annotations

from services.notifications import fanout
from services.notifications.dispatcher import Dispatcher
from shared.eventlog.append import NOTIFY_CHANNEL
from shared.eventlog.consumer import Consumer, Worker
from shared.observability import Metrics
from shared.settings import Settings
from shared.worker import run_worker

CHANNELS = (NOTIFY_CHANNEL, fanout.DELIVERIES_CHANNEL)


def consumers(settings: Settings, metrics: Metrics) -> list[Worker]:
    return [
        Consumer(
            fanout.CONSUMER_NAME,
            fanout.fan_out,
            poll_interval=settings.poll_interval_seconds,
            metrics=metrics,
        ),
        Dispatcher(settings=settings, metrics=metrics),
    ]


def main(settings: Settings | None = None) -> None:
    run_worker("notifications", consumers, settings or Settings(), channels=CHANNELS)


if __name__ == "__main__":
    main()
