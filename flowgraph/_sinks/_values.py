"""Values as the sinks write them: strict JSON, and the errors that name the item.

A sink refuses a value it cannot store faithfully rather than storing something
else: NaN and infinity are not JSON, so a dict or list holding one is refused
(Python's ``json`` would write the invalid token ``NaN``), as is anything JSON
cannot encode at all (a set, a datetime inside a dict).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

from .._core._exceptions import describe_item

_strict = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def _dates_as_text(value: Any) -> Any:
    if isinstance(value, dt.date | dt.time | Decimal | uuid.UUID):
        return text_value(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_with_dates = json.JSONEncoder(
    allow_nan=False, separators=(",", ":"), ensure_ascii=False, default=_dates_as_text
)


class BadValue(ValueError):
    """A value that cannot be written as it is; says which column and why."""

    def __init__(self, column: str, reason: str) -> None:
        super().__init__(column, reason)
        self.column = column
        self.reason = reason


def strict_json(column: str, value: Any, *, dates: bool = False) -> str:
    """*value* as compact JSON text, refusing NaN, infinity and what JSON cannot encode.

    With *dates*, dates, times, decimals and UUIDs nested anywhere are written
    as text (ISO 8601, exact digits); without, they are refused like any
    other value JSON has no type for.

    Raises:
        BadValue: naming *column* and the reason.
    """
    try:
        return (_with_dates if dates else _strict).encode(value)
    except ValueError as exc:
        if "ircular" in str(exc):
            raise BadValue(column, "holds a circular reference") from None
        raise BadValue(column, "holds NaN or infinity, which JSON cannot represent") from None
    except (TypeError, RecursionError) as exc:
        raise BadValue(column, f"holds a value JSON cannot encode ({exc})") from None


def item_error(item: Any, target: str, error: BadValue) -> ValueError:
    """The error for an item with a bad value, naming the item, the target and the column."""
    return ValueError(
        f"item {describe_item(item)} cannot be written to {target}: "
        f"column {error.column!r} {error.reason}"
    )


def text_value(value: Any) -> Any:
    """Dates, times, decimals and UUIDs as text (ISO 8601, exact digits); other values as they are.

    The default for formats without those types (SQLite, JSON Lines, CSV).
    """
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    return value
