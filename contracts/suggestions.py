"""Suggestions after the fact: ``task.suggested`` and ``suggestion.resolved``.

A post-mortem agent adds suggestions to a task after it ran (``task.suggested``); whether
each was applied or rejected is recorded later (``suggestion.resolved``). Both are
events of the task (the envelope ``subject`` is the task UUID) and are appended, never
changed: a finished task stays frozen; the suggestions live beside it, in the ledger and
its hash chain and in the append-only ``task_suggestions`` / ``suggestion_resolutions``
tables.

The stored shape of one suggestion is the plan's ``{suggestion, reason, created_at}``
plus ``source`` (the envelope's ``source``: the agent that suggested it), its id and its
resolution. ``created_at`` is the time of the ``task.suggested`` event. The id of the
n-th suggestion (1-based) of event E is ``md5("<E>:<n>")`` read as a UUID, so a
producer can name it in ``suggestion.resolved`` without a round trip; the API and CLI
show it too.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from annotated_types import MaxLen, MinLen
from pydantic import Field

from contracts._types import Payload, Uuid
from contracts.bounds import LIST_MAX, Name, Text

__all__ = ["Suggestion", "SuggestionResolution", "SuggestionResolved", "TaskSuggested"]


class SuggestionResolution(StrEnum):
    """What became of a suggestion."""

    APPLIED = "applied"
    REJECTED = "rejected"


class Suggestion(Payload):
    """One suggestion: what to do differently, and why."""

    suggestion: Text = Field(min_length=1)
    reason: Text = Field(min_length=1)


class TaskSuggested(Payload):
    """``task.suggested``: an agent adds suggestions to a task (usually after it ran)."""

    suggestions: Annotated[list[Suggestion], MinLen(1), MaxLen(LIST_MAX)]


class SuggestionResolved(Payload):
    """``suggestion.resolved``: a suggestion of the task was applied or rejected.

    The latest resolution of a suggestion (by event time) is its state; earlier ones
    stay in its history. ``suggestion_id`` must name a suggestion of the same task.
    """

    suggestion_id: Uuid
    resolution: SuggestionResolution
    resolved_by: Name = Field(min_length=1)
    note: Text | None = None
