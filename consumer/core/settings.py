"""Settings, read from the environment (``TASKLEDGER_*``) with local defaults."""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\n]*)@"
)
# ?password=... / &sslpassword=... in a URL's query
_QUERY_PASSWORD = re.compile(r"(?P<key>[?&](?:ssl)?pass(?:word)?=)[^&#\s]*", re.IGNORECASE)
# libpq key=value: password=secret, password = 'with spaces \' quoted'
_KV_PASSWORD = re.compile(
    r"(?P<key>\b(?:ssl)?password\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|[^\s'&][^\s&]*)", re.IGNORECASE
)


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe to log or print): in the
    user info (spaces included), in the query (``?password=``) and as libpq
    ``password=...`` (quoted or not)."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)
    text = _QUERY_PASSWORD.sub(lambda m: f"{m['key']}***", text)
    return _KV_PASSWORD.sub(lambda m: f"{m['key']}***", text)


def redact_text(text: str) -> str:
    """Redact every URL password found anywhere in ``text`` (error messages, tracebacks)."""
    return redact_url(text)


def check_url(url: str, schemes: tuple[str, ...], what: str) -> None:
    """Raise ValueError (without the password) unless ``url`` is ``what`` with a usable
    host and a numeric port."""
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when not a number or out of range
    except ValueError as exc:
        raise ValueError(f"{redact_url(url)} is not {what}: {exc}") from None
    if parts.scheme not in schemes:
        raise ValueError(f"{redact_url(url)} is not {what} (scheme must be {' or '.join(schemes)})")
    if port == 0:
        raise ValueError(f"{redact_url(url)} is not {what}: port 0")


_NEXT_URL = re.compile(r"\s*,\s*(?=[a-z][a-z0-9+.-]*://)", re.IGNORECASE)


def split_amqp_urls(value: str) -> list[str]:
    """The URLs of a ``TASKLEDGER_AMQP_URL`` value: one URL, or the nodes of a cluster as a
    comma-separated list. Only a comma followed by a scheme (``amqp://``...) starts a new
    URL, so a comma inside a password (plain or ``%2C``) stays in its URL."""
    parts = (part.strip().strip(",").strip() for part in _NEXT_URL.split(value))
    return [part for part in parts if part]


class Settings(BaseSettings):
    """Every knob of the service. Environment variables are ``TASKLEDGER_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="TASKLEDGER_", extra="ignore")

    database_url: SecretStr = Field(
        default=SecretStr("postgresql://postgres@127.0.0.1:5432/taskledger"),
        description="PostgreSQL URL the service connects with (the app role in production).",
    )
    migration_database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL URL of the owner role that runs migrations (default: database_url).",
    )
    amqp_url: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description="RabbitMQ URL, or the nodes of a cluster as a comma-separated list "
        "(`amqp://u:p@h1:5672/,amqp://u:p@h2:5672/`): every process connects to the first "
        "that answers and moves on to the next when it goes.",
    )
    prefix: str = Field(default="taskledger", description="Prefix of every exchange and queue.")

    # audit consumer batching
    prefetch: int = Field(default=2000, ge=1, description="Unacknowledged deliveries per consumer.")
    batch_size: int = Field(
        default=500, ge=1, description="Flush a write batch at this many events."
    )
    batch_linger_ms: int = Field(
        default=20, ge=0, description="Flush a partial batch after this long."
    )
    retry_delays_ms: list[int] = Field(
        default=[1000, 10000, 60000],
        description="Delays of the retry queues for failures that may pass.",
    )
    delivery_limit: int = Field(default=20, ge=1, description="Quorum-queue delivery limit.")
    quorum_group_size: int = Field(
        default=3,
        ge=1,
        description="Replicas of each quorum queue created (x-quorum-initial-group-size); "
        "a cluster with fewer nodes places one on each.",
    )
    shutdown_timeout_s: float = Field(default=15.0, gt=0, description="Graceful stop budget.")
    db_retry_max_backoff_s: float = Field(
        default=5.0,
        gt=0,
        description="Longest wait between retries of a batch while PostgreSQL is away.",
    )
    db_timeout_bisect_after: int = Field(
        default=3,
        ge=1,
        description="A batch that hits the statement timeout this many times in a row while "
        "the server answers is bisected like bad data instead of held.",
    )
    ledger_chain: bool = Field(
        default=True,
        description="Seal ledger rows into the hash chain (turn off only to measure its cost).",
    )
    seal_interval_ms: int = Field(
        default=200,
        ge=1,
        description="The sealer (run with the audit handler) chains committed rows this often.",
    )
    seal_batch_rows: int = Field(
        default=5000, ge=1, description="Rows one sealing pass takes (whole write batches)."
    )
    seal_bound_s: float = Field(
        default=60.0,
        gt=0,
        description="`verify` reports rows still unsealed after this long as seal_overdue.",
    )
    partitions_ahead: int = Field(
        default=3,
        ge=0,
        le=120,
        description="Monthly ledger partitions created ahead of the current month (by "
        "`taskledger migrate`, and by the service at start and daily).",
    )
    anchor_interval_s: float = Field(
        default=300.0,
        ge=0,
        description="Log the ledger chain's head (action=chain_head) this often; 0 turns it off.",
    )
    anchor_publish: bool = Field(
        default=False,
        description="Also publish each chain head to the `<prefix>.anchors` exchange.",
    )
    orphan_after_s: float = Field(
        default=600.0, gt=0, description="Events waiting longer are orphans."
    )

    # capacity handler
    capacity_freshness_s: float = Field(
        default=30.0, gt=0, description="Older reports count as none."
    )
    pause_threshold_pct: float = Field(
        default=80.0, ge=0, le=100, description="Agents at or above this load get no new work."
    )
    stale_after_s: float = Field(
        default=900.0, gt=0, description="Executing tasks silent this long."
    )
    recovery_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="No answer this long after task.recovery_requested: re-dispatch or fail.",
    )
    recovery_max_attempts: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Dispatch attempts of a silent task (the first included) before it is "
        "failed with cause agent_lost.",
    )
    timer_interval_s: float = Field(default=1.0, gt=0, description="Pause-queue timer period.")
    outbox_interval_s: float = Field(default=0.5, gt=0, description="Outbox relay poll period.")

    # operations
    metrics_port: int | None = Field(default=None, description="Serve Prometheus metrics here.")
    log_json: bool = Field(default=False, description="Log JSON lines instead of text.")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token for mutating API calls."
    )
    operator: str | None = Field(default=None, description="Operator name recorded for actions.")
    ui_require_token: bool = Field(
        default=False,
        description="The console's read-only pages also need the login (the API token); "
        "dead-letter pages and actions always do.",
    )
    api_statement_timeout_ms: int = Field(
        default=5000,
        ge=1,
        description="Longest an API read may run in PostgreSQL; past it the call answers 503.",
    )
    api_pool_timeout_ms: int = Field(
        default=2000,
        ge=1,
        description="Longest an API call waits for a free database connection; then 503.",
    )
    app_role: str = Field(
        default="taskledger_app", description="Least-privilege role of the service."
    )
    app_role_password: SecretStr | None = Field(
        default=None, description="If set, `migrate` makes the app role able to log in with it."
    )

    @field_validator("database_url", "migration_database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_url(value.get_secret_value(), ("postgresql", "postgres"), "a PostgreSQL URL")
        return value

    @field_validator("amqp_url")
    @classmethod
    def _amqp_urls(cls, value: SecretStr) -> SecretStr:
        urls = split_amqp_urls(value.get_secret_value())
        if not urls:
            raise ValueError("no AMQP URL given (one URL, or several separated by commas)")
        for url in urls:
            check_url(url, ("amqp", "amqps"), "an AMQP URL")
        return value

    @property
    def dsn(self) -> str:
        """The service's PostgreSQL DSN (contains the password: never log it)."""
        return self.database_url.get_secret_value()

    @property
    def owner_dsn(self) -> str:
        """The migration (owner) DSN, defaulting to the service's."""
        url = self.migration_database_url or self.database_url
        return url.get_secret_value()

    @property
    def amqp(self) -> str:
        """The RabbitMQ URL (contains the password: never log it)."""
        return self.amqp_url.get_secret_value()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return Settings()
