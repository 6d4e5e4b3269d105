"""JSON logs with a request id, Prometheus metrics, and the access line of each request.

Logs carry ids, never personal data: the access line names the route template (not the raw
path, which may hold an external id), the status, the duration and the caller's partner id.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from contextvars import ContextVar

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import Scope

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def configure_logging(level: str = "INFO", *, service: str) -> None:
    """Every line is one JSON object with the time, level, service and request id, for
    structlog's loggers and the standard library's (uvicorn's) alike."""
    global _process_service
    _process_service = service
    shared_processors = [
        structlog.contextvars.merge_contextvars,
        _add_service,
        _add_request_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared_processors, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            *shared_processors,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)


_process_service: str | None = None


def _add_service(_logger: object, _name: str, event: dict) -> dict:
    # A context binding wins (requests of one of several apps in a process); otherwise the
    # process's service, so that uvicorn's lines and those of tasks started before the
    # binding name it too.
    if _process_service is not None:
        event.setdefault("service", _process_service)
    return event


def _add_request_id(_logger: object, _name: str, event: dict) -> dict:
    rid = request_id_var.get()
    if rid is not None:
        event.setdefault("request_id", rid)
    return event


class Metrics:
    """The Prometheus metrics of one process, on a registry of its own."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "relais_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "relais_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["route", "method"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.horizon_lag_xids = Gauge(
            "relais_event_horizon_lag_xids",
            "Transaction ids between the oldest running transaction and the next one: "
            "how far the event log's read horizon trails the newest writes.",
            registry=self.registry,
        )
        self.horizon_oldest_xact_seconds = Gauge(
            "relais_event_horizon_oldest_transaction_seconds",
            "Age of the oldest open transaction holding an xid; it holds the horizon back.",
            registry=self.registry,
        )
        self.consumer_events = Counter(
            "relais_consumer_events_total",
            "Events handled by each log consumer.",
            ["consumer"],
            registry=self.registry,
        )
        self.consumer_failures = Counter(
            "relais_consumer_failures_total",
            "Batches a consumer failed and will retry.",
            ["consumer"],
            registry=self.registry,
        )
        self.webhook_attempts = Counter(
            "relais_webhook_attempts_total",
            "Webhook attempts by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.webhook_latency = Histogram(
            "relais_webhook_latency_seconds",
            "Time for a receiver to answer a webhook.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15),
            registry=self.registry,
        )
        self.consumer_position = Gauge(
            "relais_consumer_position_seq",
            "The seq of the last event each consumer committed.",
            ["consumer"],
            registry=self.registry,
        )


def request_id_for(incoming: bytes | None) -> str:
    """The request's id: the caller's `X-Request-ID` when it is a plausible one, else a new one."""
    if incoming:
        text = incoming.decode("latin-1")
        if _REQUEST_ID_OK.match(text):
            return text
    return uuid.uuid4().hex


class AccessLog:
    """One access line and the HTTP metrics per request, by route template (never the raw
    path, which may hold an external id)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.log = structlog.get_logger("relais.access")
        # Each (route, method, status)'s counter and histogram, found once: `labels()` takes a
        # lock and checks its arguments on every call.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def record(self, scope: Scope, status: int, elapsed: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "")
        series = self._series.get((template, method, status))
        if series is None:
            series = self._series[(template, method, status)] = (
                self.metrics.http_requests.labels(template, method, str(status)),
                self.metrics.http_latency.labels(template, method),
            )
        series[0].inc()
        series[1].observe(elapsed)
        if template not in {"/healthz", "/metrics"}:
            self.log.info(
                "request",
                service=self.metrics.service,
                method=method,
                route=template,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                caller=scope.get("state", {}).get("caller"),
            )
