"""Request and response bodies of the HTTP API, and its JSON error response.

Every error the API returns is an :class:`ErrorBody`, built by :func:`error_response`.
The models' JSON Schema is part of ``docs/openapi.json``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts import ControlScope
from contracts._types import Timestamp

__all__ = [
    "READ_ERRORS",
    "WRITE_ERRORS",
    "ControlAccepted",
    "ErrorBody",
    "Health",
    "PauseRequest",
    "ResumeRequest",
    "error_response",
]


class ErrorBody(BaseModel):
    """Every error response: a one-line message and, where useful, details."""

    error: str
    detail: Any = None


def error_response(status: int, message: str, detail: Any = None, **kw: Any) -> JSONResponse:
    """The JSON response ``{"error": message, "detail": detail}`` with ``status``
    (``kw``: further :class:`JSONResponse` arguments, e.g. ``headers``)."""
    return JSONResponse(ErrorBody(error=message, detail=detail).model_dump(), status, **kw)


#: The documented error responses of read and of mutating endpoints.
READ_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "Invalid parameters."},
    503: {"model": ErrorBody, "description": "Database unavailable."},
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body is not readable JSON."},
    401: {"model": ErrorBody, "description": "No bearer token."},
    403: {"model": ErrorBody, "description": "Wrong token, or mutating endpoints disabled."},
    413: {"model": ErrorBody, "description": "Body larger than 64 KiB."},
    422: {"model": ErrorBody, "description": "Invalid body or parameters."},
    503: {"model": ErrorBody, "description": "Database or broker unavailable."},
}


def _check_scope(scope: ControlScope, task_id: UUID | None) -> None:
    if scope is ControlScope.TASK and task_id is None:
        raise ValueError("scope 'task' needs a task_id")
    if scope is ControlScope.ALL and task_id is not None:
        raise ValueError("scope 'all' takes no task_id")


#: The scope rule in JSON Schema (as in the wire contract): ``scope=task`` requires a
#: ``task_id``, ``scope=all`` takes none.
_SCOPE_RULES: dict[str, Any] = {
    "allOf": [
        {
            "if": {"properties": {"scope": {"const": "task"}}, "required": ["scope"]},
            "then": {
                "required": ["task_id"],
                "properties": {"task_id": {"type": "string", "format": "uuid"}},
            },
        },
        {
            "if": {"properties": {"scope": {"const": "all"}}, "required": ["scope"]},
            "then": {"properties": {"task_id": {"type": "null"}}},
        },
    ]
}


class PauseRequest(BaseModel):
    """Hold dispatch of all work (``scope=all``) or of one task (``scope=task``)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_SCOPE_RULES)

    scope: ControlScope
    task_id: UUID | None = Field(default=None, description="Required with scope=task.")
    reason: str | None = Field(default=None, max_length=1000, pattern=r"^[^\x00]*$")
    resume_after: Timestamp | None = Field(
        default=None,
        description="Lift the hold by itself at this time: RFC 3339 with seconds and an "
        "offset, in the future and before year 10000 in UTC (as the wire contract takes it).",
    )

    @model_validator(mode="after")
    def _scope_matches_task(self) -> PauseRequest:
        _check_scope(self.scope, self.task_id)
        if self.resume_after is not None and self.resume_after <= datetime.now(UTC):
            raise ValueError(f"resume_after {self.resume_after.isoformat()} is in the past")
        return self


class ResumeRequest(BaseModel):
    """Lift the hold on all dispatch (``scope=all``) or on one task (``scope=task``)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_SCOPE_RULES)

    scope: ControlScope
    task_id: UUID | None = Field(default=None, description="Required with scope=task.")

    @model_validator(mode="after")
    def _scope_matches_task(self) -> ResumeRequest:
        _check_scope(self.scope, self.task_id)
        return self


class ControlAccepted(BaseModel):
    """A control event was published (the capacity handlers apply it) and recorded."""

    event_id: UUID
    action: Literal["pause", "resume", "force"]
    scope: ControlScope
    task_id: UUID | None = None
    actor: str


class Health(BaseModel):
    """Liveness or readiness, with the result of each check."""

    status: str
    checks: dict[str, str] = Field(default_factory=dict)
