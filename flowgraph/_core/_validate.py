"""Checks for declared values: durations, counts and choices, with messages that name the fix.

Every check raises :class:`GraphError` (a ``ValueError`` and a ``TypeError``),
so a mistake in any argument, of value or of type, is one family of error,
raised where the value is declared.
"""

from __future__ import annotations

import difflib
import math
from datetime import timedelta
from typing import TYPE_CHECKING

from ._exceptions import GraphError

if TYPE_CHECKING:
    from collections.abc import Iterable


def to_seconds(
    name: str, value: float | timedelta, *, minimum: float = 0.0, inclusive: bool = False
) -> float:
    """Return *value* in seconds, or raise a declaration error naming *name*.

    Durations are finite and ``> minimum`` (``>= minimum`` when *inclusive*).
    """
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise GraphError(f"{name} must be a number of seconds or a timedelta (got {value!r})")
    too_small = seconds < minimum if inclusive else seconds <= minimum
    if too_small or math.isnan(seconds):
        raise GraphError(f"{name} must be {'>=' if inclusive else '>'} {minimum:g} (got {value!r})")
    if math.isinf(seconds):
        raise GraphError(f"{name} must be finite (got {value!r})")
    return float(seconds)


def optional_seconds(name: str, value: float | timedelta | None) -> float | None:
    """Like :func:`to_seconds`, passing ``None`` through."""
    return None if value is None else to_seconds(name, value)


def int_at_least(name: str, value: object, minimum: int) -> int:
    """Return *value* if it is an int ``>= minimum``; raise a declaration error naming *name*."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise GraphError(f"{name} must be an int >= {minimum} (got {value!r})")
    return value


def positive_int(name: str, value: object) -> int:
    """Return *value* if it is an int ``>= 1``."""
    return int_at_least(name, value, 1)


def unknown_name(missing: str, name: str, known: Iterable[str]) -> GraphError:
    """The error for an unknown *name*, suggesting the nearest of *known*.

    *missing* says who lacks it: ``"transform 'fetch' has no option"``.
    """
    choices = sorted(known)
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return GraphError(f"{missing} {name!r}: {hint}valid ones are {', '.join(choices)}")
