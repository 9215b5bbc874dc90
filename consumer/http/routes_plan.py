"""The ``/api/v1`` endpoints of issue 15: recovery of a silent executing task by hand.

``POST /api/v1/tasks/{task_id}/recover`` (bearer token): ask the agent now, re-dispatch
(attempt n+1) or fail the task as ``agent_lost`` (see :mod:`consumer.operations.recover`).
The filters of issue 15 (``project_id``, ``has_suggestions``) are on the audit task
lists, and suggestions and recovery attempts on ``GET /api/v1/tasks/{task_id}``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from consumer.core.settings import Settings
from consumer.http.routes import require_token
from consumer.http.schemas import WRITE_ERRORS, ErrorBody
from consumer.operations.recover import recover_task

__all__ = ["RecoverAccepted", "RecoverRequest", "router"]


class RecoverRequest(BaseModel):
    """What to do with a silent executing task."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["request", "redispatch", "fail"] = Field(
        default="request",
        description="request: ask the agent now; redispatch: dispatch again (attempt n+1); "
        "fail: fail the task with cause agent_lost.",
    )


class RecoverAccepted(BaseModel):
    """The recovery step taken and the message queued for it."""

    task_id: UUID
    action: Literal["requested", "redispatched", "failed"]
    attempt: int
    message_id: UUID | None = None
    message_type: str | None = None
    actor: str


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _pool(request: Request) -> Any:
    return request.app.state.pool


router = APIRouter(prefix="/api/v1")


@router.post(
    "/tasks/{task_id}/recover",
    response_model=RecoverAccepted,
    status_code=202,
    responses={**WRITE_ERRORS, 404: {"model": ErrorBody, "description": "No such task."}},
    dependencies=[Depends(require_token)],
    tags=["control"],
)
async def recover(
    task_id: UUID,
    settings: Annotated[Settings, Depends(_settings)],
    pool: Annotated[Any, Depends(_pool)],
    body: RecoverRequest | None = None,
) -> RecoverAccepted:
    """Recover a silent executing task by hand (trigger ``manual``); 422 if it is not
    executing or recovery already failed it."""
    actor = settings.operator or "api"
    what = body.action if body is not None else "request"
    result = await recover_task(pool, settings, task_id, what, actor)
    return RecoverAccepted.model_validate({**result, "actor": actor})
