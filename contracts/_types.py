"""Scalar types that accept exactly what their JSON Schema accepts.

Pydantic's lax mode would coerce ``"3"`` into an integer, ``"yes"`` into ``True`` and a
Unix timestamp into a datetime. A producer that validates against the exported JSON
Schema gets none of that, so neither does the decoder: what the schema rejects becomes
a ``schema_violation`` dead letter rather than a silent guess.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from annotated_types import Ge
from pydantic import AwareDatetime, BeforeValidator, Strict


def _integral_float_to_int(value: Any) -> Any:
    """Let ``3.0`` through as ``3``: JSON Schema's ``integer`` accepts it, so must we."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _require_boolean(value: Any) -> Any:
    """Refuse ``0`` and ``1`` where a JSON ``true``/``false`` constant is expected."""
    if not isinstance(value, bool):
        raise ValueError("Input should be a valid boolean")
    return value


def _require_timestamp_text(value: Any) -> Any:
    """Refuse numbers (Unix timestamps) where an RFC 3339 string is expected."""
    if not isinstance(value, str | datetime):
        raise ValueError("Input should be an RFC 3339 date-time string with an offset")
    return value


Integer = Annotated[int, Strict(), BeforeValidator(_integral_float_to_int)]
"""A JSON integer: an int, or a float with no fractional part; never a bool or string."""

# The bounds sit inside the Annotated, before the validator: given as Field(ge=...) on
# an optional field, pydantic would enforce them but write "ge" into the JSON Schema.
NonNegativeInteger = Annotated[int, Strict(), Ge(0), BeforeValidator(_integral_float_to_int)]
"""A JSON integer >= 0."""

PositiveInteger = Annotated[int, Strict(), Ge(1), BeforeValidator(_integral_float_to_int)]
"""A JSON integer >= 1."""

Number = Annotated[float, Strict()]
"""A JSON number: an int or a float; never a bool or string."""

Boolean = Annotated[bool, Strict()]
"""A JSON boolean: ``true`` or ``false`` only."""

Timestamp = Annotated[AwareDatetime, BeforeValidator(_require_timestamp_text)]
"""An RFC 3339 date-time with an offset; a naive one is refused."""

TrueConst = Annotated[Literal[True], BeforeValidator(_require_boolean)]
"""The JSON constant ``true`` (a bare ``Literal[True]`` would also take ``1``)."""

FalseConst = Annotated[Literal[False], BeforeValidator(_require_boolean)]
"""The JSON constant ``false`` (a bare ``Literal[False]`` would also take ``0``)."""
