"""What the audit queries select: the task filter, intents, the page cursor, text checks.

:class:`TaskFilter` is the one filter of the API, the CLI, the failure counts and the
summary; :meth:`TaskFilter.filter_args` turns it into the parameters of the shared
``task_filter`` WHERE clause of ``consumer/store/sql/queries.sql``.

Intent (``deploy_kuma``, ``restart_dns``) is not stored: :func:`parse_intent` turns it
into a verb pattern and a service, and the query matches tasks whose request text, plan
steps or step actions carry the verb (or a synonym) and that touched the service.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal
from uuid import UUID

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from consumer.core.errors import InvalidArgument
from contracts import AgentType, ErrorCause, TaskStatus

__all__ = [
    "DEFAULT_PAGE",
    "MAX_PAGE",
    "MAX_TEXT",
    "VERB_SYNONYMS",
    "Intent",
    "TaskFilter",
    "decode_cursor",
    "encode_cursor",
    "parse_intent",
    "service_name",
]

#: Most rows one page (or one list) returns, and how many by default.
MAX_PAGE = 500
DEFAULT_PAGE = 50
#: Longest service name a filter accepts.
MAX_TEXT = 200

# --- intent ------------------------------------------------------------------------------

#: Verbs an intent may name, each with the words that mean the same in requests, plan
#: steps and step actions. A multi-word synonym matches with a space, hyphen, underscore
#: or nothing between its words ("roll out", "roll-out", "rollout").
VERB_SYNONYMS: dict[str, tuple[str, ...]] = {
    "deploy": ("deploy", "redeploy", "install", "rollout", "roll out", "release", "provision"),
    "restart": ("restart", "reboot", "bounce", "reload", "recycle"),
    "update": ("update", "upgrade", "patch", "bump"),
    "backup": ("backup", "back up", "snapshot", "dump"),
    "rollback": ("rollback", "roll back", "revert", "downgrade"),
    "remove": ("remove", "uninstall", "delete", "decommission", "teardown", "tear down"),
    "configure": ("configure", "reconfigure", "config"),
    "scale": ("scale", "resize"),
    "stop": ("stop", "shutdown", "shut down", "halt"),
    "start": ("start", "launch", "bring up"),
    "migrate": ("migrate", "migration"),
}

_VERB = re.compile(r"[a-z][a-z0-9]*")
_SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_INTENT_SPLIT = re.compile(r"[_:\s]+")


@dataclass(frozen=True)
class Intent:
    """A parsed intent: the verb, every word that means it, and the service (if named)."""

    verb: str
    words: tuple[str, ...]
    service: str | None

    @property
    def pattern(self) -> str:
        r"""The PostgreSQL regular expression (for ``~*``) matching any of :attr:`words`.

        Each word must start a word (``\m``): ``start`` does not match "restart", while
        "deployed" and "deployment" match ``deploy``.
        """
        alternatives = "|".join(w.replace(" ", "[ _-]?") for w in self.words)
        return rf"\m(?:{alternatives})"


@cache
def _canonical_verbs() -> dict[str, str]:
    found: dict[str, str] = {}
    for verb, words in VERB_SYNONYMS.items():
        for word in (verb, *words):
            found.setdefault(word.replace(" ", ""), verb)
    return found


def parse_intent(text: str) -> Intent:
    """Parse ``verb_service`` (``deploy_kuma``, ``restart_dns``; also ``deploy:kuma`` or
    ``deploy kuma``), or a bare verb (``deploy``: any service).

    The verb is case-insensitive and may be any synonym of a known verb (``install_kuma``
    means ``deploy_kuma``); an unknown verb matches only itself. Everything after the
    first separator is the service (``restart_node_exporter`` -> ``node_exporter``).

    Returns an :class:`Intent`; raises :class:`InvalidArgument` with a one-line reason.
    """
    cleaned = text.strip()
    parts = _INTENT_SPLIT.split(cleaned, maxsplit=1)
    verb = parts[0].lower()
    service = parts[1].strip() if len(parts) > 1 and parts[1].strip() else None
    if not _VERB.fullmatch(verb):
        raise InvalidArgument(
            f"intent {text[:80]!r} must be <verb>_<service>, e.g. deploy_kuma or restart_dns"
        )
    if service is not None and not _SERVICE.fullmatch(service):
        raise InvalidArgument(
            f"intent {text[:80]!r}: service {service[:80]!r} must be letters, digits, '.', '_', '-'"
        )
    canonical = _canonical_verbs().get(verb)
    if canonical is None:
        return Intent(verb=verb, words=(verb,), service=service)
    words = tuple(dict.fromkeys((canonical, *VERB_SYNONYMS[canonical])))
    return Intent(verb=canonical, words=words, service=service)


# --- cursor and text checks --------------------------------------------------------------


def encode_cursor(created_at: datetime, task_id: UUID) -> str:
    """Return the opaque cursor that points just past (``created_at``, ``task_id``)."""
    raw = orjson.dumps([created_at.astimezone(UTC).isoformat(), str(task_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """Return the (created_at, task_id) a cursor points past; raises :class:`InvalidArgument`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, task = orjson.loads(raw)
        if not isinstance(created, str) or not isinstance(task, str):
            raise TypeError("cursor parts are not strings")
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("naive time")
        return when.astimezone(UTC), UUID(task)
    except (ValueError, TypeError, OverflowError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidArgument(
            "cursor is not valid: pass back the next_cursor of a previous page"
        ) from None


def _no_nul(value: str, what: str) -> str:
    if "\x00" in value:
        raise ValueError(f"{what} may not contain NUL characters")
    return value


def service_name(service: str) -> str:
    """Return ``service`` stripped; raises :class:`InvalidArgument` for an empty, overlong
    or NUL-bearing service name."""
    name = service.strip()
    if not name or len(name) > MAX_TEXT or "\x00" in name:
        raise InvalidArgument(f"service {service[:80]!r} is not a valid service name")
    return name


def _word(service: str) -> str:
    r"""The PostgreSQL pattern matching ``service`` as a whole word (``\m...\M``)."""
    return r"\m" + service.replace(".", r"\.") + r"\M"


# --- the filter --------------------------------------------------------------------------


class TaskFilter(BaseModel):
    """Which tasks a query returns; every field narrows the result (AND)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    statuses: list[TaskStatus] = Field(default_factory=list, description="Any of these statuses.")
    since: datetime | None = Field(default=None, description="Created at or after this time.")
    until: datetime | None = Field(default=None, description="Created before this time.")
    services: list[str] = Field(default_factory=list, description="Services touched.")
    service_mode: Literal["any", "all"] = Field(
        default="any", description="Touched any of the services, or all of them."
    )
    agent_type: AgentType | None = None
    error_cause: ErrorCause | None = None
    intent: str | None = Field(
        default=None, description="verb_service, e.g. deploy_kuma: inferred from request and steps."
    )
    project_id: UUID | None = Field(default=None, description="Tasks of this project.")
    has_suggestions: bool | None = Field(
        default=None, description="Tasks with suggestions (true) or without any (false)."
    )
    limit: int = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(default=None, max_length=400)

    @field_validator("since", "until")
    @classmethod
    def _aware_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("time out of range") from None

    @field_validator("services")
    @classmethod
    def _clean_services(cls, value: list[str]) -> list[str]:
        cleaned = []
        for item in value:
            service = _no_nul(item, "service").strip()
            if not service or len(service) > MAX_TEXT:
                raise ValueError(f"service names are 1..{MAX_TEXT} characters")
            cleaned.append(service)
        return list(dict.fromkeys(cleaned))

    @field_validator("intent")
    @classmethod
    def _check_intent(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            parse_intent(_no_nul(value, "intent"))
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
        return value.strip()

    @field_validator("cursor")
    @classmethod
    def _check_cursor(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        try:
            decode_cursor(value)
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
        return value

    def filter_args(self, *, require: list[str] | None = None) -> tuple[Any, ...]:
        """The twelve parameters ($1..$12) of the shared ``task_filter`` clause.

        ``require`` lists services that must have been touched on top of the filter's own
        (``by-service``). An intent's service ($10, $11) matches a finished task by the
        services it touched, an unfinished one by the services requested or a plan step
        naming the service.
        """
        intent = parse_intent(self.intent) if self.intent else None
        any_of = self.services if self.service_mode == "any" and self.services else None
        all_of = list(require or [])
        if self.service_mode == "all":
            all_of += self.services
        service = intent.service if intent is not None else None
        all_of = list(dict.fromkeys(all_of))
        return (
            [s.value for s in self.statuses] or None,
            self.since,
            self.until,
            any_of,
            all_of or None,
            self.agent_type.value if self.agent_type else None,
            self.error_cause.value if self.error_cause else None,
            intent.pattern if intent else None,
            self.project_id,
            service,
            _word(service) if service else None,
            self.has_suggestions,
        )

    def cursor_args(self) -> tuple[datetime | None, UUID | None]:
        """The keyset position ($9, $10) of the page after :attr:`cursor`, or (None, None)."""
        if self.cursor is None:
            return None, None
        return decode_cursor(self.cursor)
