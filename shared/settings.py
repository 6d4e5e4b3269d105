"""Settings read from the environment (SPEC 2a), each with a safe default."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MAX_KEY_LENGTH = 512  # the longest API key a caller may present
DEFAULT_RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000)


class Environment(StrEnum):
    development = "development"
    production = "production"


class Settings(BaseSettings):
    """Every setting of the hub. Built once per process by `Settings()`; tests pass their own."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL. Unset: `make run` starts the embedded PostgreSQL.",
    )
    data_dir: Path = Field(default=Path(".data"), alias="RELAIS_DATA_DIR")
    registry_port: int = 8001
    referrals_port: int = 8002
    notifications_port: int = 8003
    bind_host: str = Field(default="127.0.0.1", alias="RELAIS_BIND_HOST")
    bootstrap_admin_key: str | None = Field(default=None, alias="RELAIS_BOOTSTRAP_ADMIN_KEY")
    run_workers: bool = Field(default=True, alias="RELAIS_RUN_WORKERS")
    env: Environment = Field(default=Environment.production, alias="RELAIS_ENV")
    notifications_allow_private_targets: bool | None = None
    webhook_retry_schedule: Annotated[tuple[float, ...], NoDecode] = DEFAULT_RETRY_SCHEDULE
    webhook_timeout_seconds: float = 15.0
    log_level: str = Field(default="INFO", alias="RELAIS_LOG_LEVEL")
    db_pool_size: int = Field(default=10, alias="RELAIS_DB_POOL_SIZE")
    db_max_overflow: int = Field(default=10, alias="RELAIS_DB_MAX_OVERFLOW")
    idle_in_transaction_timeout_ms: int = Field(
        default=60_000, alias="RELAIS_IDLE_IN_TRANSACTION_TIMEOUT_MS"
    )
    poll_interval_seconds: float = Field(default=1.0, alias="RELAIS_POLL_INTERVAL_SECONDS")
    # How long the reconciler waits, under load, after a notification before it reads:
    # batches of several cases for some latency (`Consumer.linger`; off by default, see
    # the README).
    routing_linger_ms: float = Field(default=0.0, ge=0, le=200, alias="RELAIS_ROUTING_LINGER_MS")
    max_body_bytes: int = Field(default=1024 * 1024, alias="RELAIS_MAX_BODY_BYTES")
    hsds_public: bool = Field(
        default=False,
        alias="RELAIS_HSDS_PUBLIC",
        description="Serve the HSDS view of the directory (`/hsds/...`) without a key; it "
        "holds no personal data.",
    )
    notifications_url: str | None = Field(
        default=None,
        alias="RELAIS_NOTIFICATIONS_URL",
        description="Where the registry reaches the notifications service's API (a subject "
        "access export lists the case's deliveries). Unset: `http://127.0.0.1:` and "
        "`NOTIFICATIONS_PORT`, as `make run` starts it.",
    )
    retention_days: int | None = Field(
        default=None,
        ge=1,
        le=36_500,
        alias="RELAIS_RETENTION_DAYS",
        description="Erase the cases closed for longer than this many days (SPEC 9). Unset: "
        "retention is off and nothing is erased by it.",
    )
    retention_interval_seconds: float = Field(
        default=86_400.0,
        gt=0,
        alias="RELAIS_RETENTION_INTERVAL_SECONDS",
        description="How often the registry's retention worker runs (once a day by default).",
    )
    gc_freeze: bool = Field(
        default=True,
        alias="RELAIS_GC_FREEZE",
        description="Freeze start-up objects out of the garbage collector (shorter pauses); "
        "off in tests, where many apps share one process.",
    )

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            try:
                return tuple(float(p) for p in parts)
            except ValueError as exc:
                raise ValueError("WEBHOOK_RETRY_SCHEDULE takes comma-separated seconds") from exc
        return value

    @field_validator("bootstrap_admin_key")
    @classmethod
    def _check_bootstrap_key(cls, value: str | None) -> str | None:
        # Any form works as a key (SPEC 2a), as long as it can travel in an HTTP header.
        if value is None or value == "":
            return None
        if len(value) > MAX_KEY_LENGTH:
            raise ValueError(
                f"RELAIS_BOOTSTRAP_ADMIN_KEY is longer than {MAX_KEY_LENGTH} characters"
            )
        if value != value.strip() or not all(" " <= c <= "~" for c in value):
            raise ValueError(
                "RELAIS_BOOTSTRAP_ADMIN_KEY must be printable ASCII without surrounding spaces "
                "(it is sent in an Authorization header)"
            )
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _check_schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(v < 0 for v in value):
            raise ValueError("WEBHOOK_RETRY_SCHEDULE needs at least one non-negative delay")
        return value

    @field_validator("retention_days", "notifications_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `RELAIS_RETENTION_DAYS=` in a manifest means the same as leaving it out.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _defaults_by_environment(self) -> Settings:
        if self.notifications_url is None:
            self.notifications_url = f"http://127.0.0.1:{self.notifications_port}"
        self.notifications_url = self.notifications_url.rstrip("/")
        if self.notifications_allow_private_targets is None:
            self.notifications_allow_private_targets = self.env is Environment.development
        if (
            self.env is Environment.production
            and self.bootstrap_admin_key is not None
            and len(self.bootstrap_admin_key) < 32
        ):
            raise ValueError("RELAIS_BOOTSTRAP_ADMIN_KEY must be at least 32 characters")
        return self

    @property
    def is_development(self) -> bool:
        return self.env is Environment.development

    def require_database_url(self) -> str:
        """The database URL, or a clear error where none is configured."""
        if not self.database_url:
            raise RuntimeError(
                "DATABASE_URL is not set. Use `make run` (it starts an embedded PostgreSQL) "
                "or set DATABASE_URL=postgresql://user@host:5432/dbname."
            )
        return self.database_url
