"""What every service's `create_app` shares: lifespan, middleware, errors, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from pydantic import BaseModel, Field

from shared.db import Database, Statement
from shared.docs import install_docs
from shared.eventlog.append import NOTIFY_CHANNEL
from shared.eventlog.consumer import Worker
from shared.eventlog.listener import Listener
from shared.http_conventions import method_not_allowed
from shared.http_layer import HttpLayer
from shared.idempotency import MAX_KEY_LENGTH, purge_expired
from shared.migrate import schema_status
from shared.observability import Metrics, configure_logging
from shared.problems import Problem, install_error_handlers, problem_response
from shared.settings import Settings

log = structlog.get_logger("relais.service")

MAINTENANCE_SECONDS = 5.0
PURGE_EVERY = 120  # maintenance rounds between purges of expired idempotency records

Hook = Callable[[FastAPI], Awaitable[None]]


@dataclass
class ServiceSpec:
    """What makes one service: its name, its API, its consumers and its start-up work."""

    name: str
    title: str
    description: str
    routers: Sequence[APIRouter]
    tags: Sequence[dict] = ()
    consumers: Callable[[Settings, Metrics], list[Worker]] = lambda _s, _m: []
    on_startup: Sequence[Hook] = field(default_factory=list)
    channels: tuple[str, ...] = (NOTIFY_CHANNEL,)


# What every operation of the services' routers may answer: each takes a key and some input.
# The probes take neither, so they are included without these.
ERROR_RESPONSES: dict[int | str, dict] = {
    401: {"model": Problem, "description": "Missing, unknown or revoked API key."},
    403: {"model": Problem, "description": "The key's role may not do this."},
    422: {"model": Problem, "description": "Invalid input; `errors` names each field."},
}


PROBLEM_JSON = "application/problem+json"
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
_POST_ERRORS = {"409": "Conflict, or a request with this Idempotency-Key still in flight."}
_EVERY_ERROR = {"503": "The database cannot be reached right now; retry after Retry-After."}
_PATH_ERRORS = {"404": "No such resource visible to this key."}


def _document_errors(app: FastAPI) -> None:
    """Errors are documented as they are sent: `application/problem+json` documents with the
    `Problem` schema, and the errors every operation of a kind can answer are declared."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for path, item in schema.get("paths", {}).items():
            for method, operation in item.items():
                responses = operation.setdefault("responses", {})
                if path in PROBES:
                    _problem_content(responses)
                    continue
                extra = dict(_EVERY_ERROR)
                body = operation.get("requestBody")
                if_match = any(p.get("name") == "If-Match" for p in operation.get("parameters", []))
                reasons = []  # what the operation takes that can be malformed
                if body:
                    reasons.append("a body that cannot be parsed")
                if if_match:
                    reasons.append("a bad If-Match")
                if method == "post":  # every POST takes Idempotency-Key (the middleware)
                    reasons.append(f"an Idempotency-Key not of 1 to {MAX_KEY_LENGTH} characters")
                if reasons:
                    extra["400"] = "Malformed request: " + ", or ".join(reasons) + "."
                if body or if_match:
                    extra["413"] = "Request body over 1 MiB."
                if body:
                    takes = " or ".join(f"`{name}`" for name in body.get("content", {}))
                    extra["415"] = f"The body is not in a media type this takes ({takes})."
                if method == "post":
                    extra.update(_POST_ERRORS)
                if any(p.get("in") == "path" for p in operation.get("parameters", [])):
                    extra.update(_PATH_ERRORS)
                for status, description in extra.items():
                    responses.setdefault(status, {"description": description})
                _problem_content(responses)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _problem_content(responses: dict) -> None:
    """Errors are problem documents, but where an operation declares another media type of
    its own for an error (the FHIR view's OperationOutcome)."""
    for status, response in responses.items():
        declared = set(response.get("content", {})) - {"application/json"}
        if status.isdigit() and int(status) >= 400 and not declared:
            response["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}


def _operation_id(route: APIRoute) -> str:
    tag = route.tags[0] if route.tags else "default"
    return f"{tag}-{route.name}"


class Runtime:
    """The process-wide resources of a running service, built in the lifespan."""

    def __init__(self, settings: Settings, spec: ServiceSpec, metrics: Metrics) -> None:
        self.settings = settings
        self.spec = spec
        self.metrics = metrics
        self.db: Database | None = None
        self.worker_db: Database | None = None  # the workers' own pool (generic plans)
        self.listener = Listener(
            settings.require_database_url(),
            application_name=f"relais-{spec.name}-listener",
            channels=spec.channels,
        )
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def connect(self) -> Database:
        self.db = await Database.connect(self.settings, application_name=f"relais-{self.spec.name}")
        return self.db

    async def start(self, app: FastAPI, *, run_workers: bool) -> None:
        for hook in self.spec.on_startup:
            await hook(app)
        self.tasks.append(asyncio.create_task(self._maintenance(), name="maintenance"))
        # Always listening: workers wake on it, and so do long-polling requests.
        await self.listener.start()
        if run_workers:
            self.worker_db = await Database.connect(
                self.settings,
                application_name=f"relais-{self.spec.name}-worker",
                generic_plans=True,
            )
            for consumer in self.spec.consumers(self.settings, self.metrics):
                self.tasks.append(
                    asyncio.create_task(
                        consumer.run(self.worker_db, self.listener, self.stop),
                        name=f"consumer:{consumer.name}",
                    )
                )

    async def close(self) -> None:
        self.stop.set()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.listener.stop()
        for db in (self.worker_db, self.db):
            if db is not None:
                await db.close()

    async def _maintenance(self) -> None:
        rounds = 0
        while not self.stop.is_set():
            try:
                await update_horizon_metrics(self.db, self.metrics)
                if rounds % PURGE_EVERY == 0:
                    await purge_expired(self.db)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("maintenance_failed", error=type(exc).__name__)
            rounds += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=MAINTENANCE_SECONDS)


_HORIZON = Statement(
    """
    SELECT (pg_snapshot_xmax(s)::text::numeric - pg_snapshot_xmin(s)::text::numeric) AS lag_xids,
           COALESCE((SELECT EXTRACT(EPOCH FROM now() - min(xact_start))
                     FROM pg_stat_activity
                     WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()), 0) AS oldest_s
    FROM pg_current_snapshot() AS s
    """
)


async def update_horizon_metrics(db: Database, metrics: Metrics) -> None:
    """How far the log's read horizon trails: in xids and in the oldest open transaction's age."""
    async with db.connection() as conn:
        row = await _HORIZON.fetchrow(conn)
    metrics.horizon_lag_xids.set(float(row["lag_xids"]))
    metrics.horizon_oldest_xact_seconds.set(max(0.0, float(row["oldest_s"])))


class Health(BaseModel):
    """The process is up."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """The database answers and its schema is at this code's revision or later."""

    status: Literal["ready"]
    schema_revision: str = Field(
        description="The database's Alembic revision.", examples=["0008_endpoint_since_tx"]
    )


METRICS_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def _health_router() -> APIRouter:
    """The probes take no key and no input: they document only the answers they give."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="The process is up")
    async def healthz() -> Health:
        return Health(status="ok")

    @router.get(
        "/readyz",
        summary="The database answers and its schema is at this code's revision or later",
        response_model=Readiness,
        responses={503: {"model": Problem, "description": "Not ready"}},
    )
    async def readyz(request: Request) -> JSONResponse:
        runtime: Runtime = request.app.state.runtime
        try:
            async with runtime.db.connection() as conn:
                ready, revision = await asyncio.wait_for(schema_status(conn), timeout=3)
        except Exception as exc:
            return problem_response(
                503, "unavailable", "Not ready", f"database unreachable ({type(exc).__name__})"
            )
        if not ready:
            return problem_response(
                503,
                "unavailable",
                "Not ready",
                f"database schema at {revision or 'no revision'}; run the migrations",
            )
        return JSONResponse({"status": "ready", "schema_revision": revision})

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {
                "description": "The metrics in Prometheus' text format 0.0.4.",
                "content": {METRICS_CONTENT_TYPE: {"schema": {"type": "string"}}},
            }
        },
    )
    async def metrics(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        return Response(generate_latest(runtime.metrics.registry), media_type=METRICS_CONTENT_TYPE)

    return router


def build_app(settings: Settings, spec: ServiceSpec) -> FastAPI:
    """A FastAPI app for `spec`: nothing is connected until the lifespan starts."""
    metrics = Metrics(spec.name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, service=spec.name)
        runtime = Runtime(settings, spec, metrics)
        app.state.runtime = runtime
        app.state.settings = settings
        try:
            db = await runtime.connect()
            app.state.db = db
            await runtime.start(app, run_workers=settings.run_workers)
            # What start-up built lives as long as the process: keep it out of the
            # collector's full passes, which otherwise pause requests for 100 ms and more.
            if settings.gc_freeze:
                gc.collect()
                gc.freeze()
            log.info("service_started", workers=settings.run_workers)
            yield
        finally:
            await runtime.close()
            log.info("service_stopped")

    app = FastAPI(
        title=spec.title,
        description=spec.description,
        version="0.1.0",
        lifespan=lifespan,
        openapi_tags=[*list(spec.tags), {"name": "health", "description": "Probes and metrics."}],
        generate_unique_id_function=_operation_id,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_exception_handler(405, method_not_allowed)
    _document_errors(app)
    for router in spec.routers:
        app.include_router(router, responses=ERROR_RESPONSES)
    app.include_router(_health_router())
    install_docs(app)

    app.add_middleware(HttpLayer, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    return app
