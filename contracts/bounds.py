"""The bounds of wire contract v1: the largest value, string and array each field takes.

A value the database cannot store, or stores as something else, must be refused at the
door: accepted, it would be recorded in the ledger and then fail the projection on every
retry (an integer beyond a 32-bit column), or break the chain digest (a year before
1000, ``0001-01-01`` stored as ``-infinity``). So every integer is bounded by the column
it lands in, every string and array by the column or by a sane cap, and every time by
the window of :mod:`contracts._types`. The exported JSON Schema carries the same bounds.

=========================  ==================  ===========================================
What                       Bound               Why
=========================  ==================  ===========================================
integer in an INTEGER      0 (or 1) ..         ``execution_logs.step_number``,
column                     2,147,483,647       ``duration_ms``, ``tasks.failed_step``,
                                               ``agent_capacity.free_*``,
                                               ``pause_queue.required_*``
integer kept in JSONB      0 .. 2**53 - 1      exact in every JSON reader (IEEE doubles)
cpu_cores                  0 .. 1,000,000      float8 sums and reservations stay finite
cost_usd                   0 .. 100,000        256 of them fit ``tasks.cost_usd``
                                               NUMERIC(14, 6)
identifier (agent id,      200 characters      btree (``agent_capacity`` key,
service, error type, ...)                      ``tasks.error_type``) and GIN
                                               (``services_touched``) entries stay small
prose (request, reason,    10,000 characters   a sane cap (``output_summary`` is still
summary, message, line)                        stored cut to 500)
stack trace                100,000 characters  a sane cap
source, subject            256 characters      a sane cap
arrays                     256 (1,000 lines)   a sane cap
=========================  ==================  ===========================================
"""

from __future__ import annotations

from typing import Annotated, Final

from annotated_types import MaxLen
from pydantic import StringConstraints

__all__ = [
    "ATTRIBUTE_MAX",
    "COST_USD_MAX",
    "CPU_CORES_MAX",
    "INT32_MAX",
    "JSON_SAFE_MAX",
    "LINES_MAX",
    "LIST_MAX",
    "NAME_MAX",
    "TEXT_MAX",
    "TRACE_MAX",
    "Lines",
    "LongText",
    "Name",
    "NameList",
    "Text",
    "TextList",
]

INT32_MAX: Final = 2**31 - 1
"""Largest value of a PostgreSQL ``INTEGER`` column."""

JSON_SAFE_MAX: Final = 2**53 - 1
"""Largest integer every JSON reader holds exactly; the cap of integers kept in JSONB."""

CPU_CORES_MAX: Final = 1_000_000.0
"""Largest ``cpu_cores`` figure (estimated, required or free)."""

COST_USD_MAX: Final = 100_000.0
"""Largest ``cost_usd`` of one external AI use: :data:`LIST_MAX` of them sum below 10**8."""

NAME_MAX: Final = 200
"""Longest identifier: agent id, user, project, service, provider, model, error type."""

TEXT_MAX: Final = 10_000
"""Longest prose: request, reason, action, summary, error message, one output line."""

TRACE_MAX: Final = 100_000
"""Longest stack trace."""

ATTRIBUTE_MAX: Final = 256
"""Longest ``source`` and ``subject`` envelope attribute."""

LIST_MAX: Final = 256
"""Most items of an array: services, plan steps, external AI uses."""

LINES_MAX: Final = 1_000
"""Most items of ``last_lines``."""

Name = Annotated[str, StringConstraints(max_length=NAME_MAX)]
"""An identifier of at most :data:`NAME_MAX` characters."""

Text = Annotated[str, StringConstraints(max_length=TEXT_MAX)]
"""Prose of at most :data:`TEXT_MAX` characters."""

LongText = Annotated[str, StringConstraints(max_length=TRACE_MAX)]
"""A stack trace of at most :data:`TRACE_MAX` characters."""

NameList = Annotated[list[Name], MaxLen(LIST_MAX)]
"""At most :data:`LIST_MAX` identifiers (service names)."""

TextList = Annotated[list[Text], MaxLen(LIST_MAX)]
"""At most :data:`LIST_MAX` lines of prose (plan steps)."""

Lines = Annotated[list[Text], MaxLen(LINES_MAX)]
"""At most :data:`LINES_MAX` output lines."""
