"""How items and positions are written to a state store: JSON that round-trips, or pickle."""

from __future__ import annotations

import json
import pickle
from typing import TYPE_CHECKING, Any

from .._core._exceptions import StoreError, describe_item

if TYPE_CHECKING:
    from ._protocol import Serializer

_SERIALIZERS = ("json", "pickle")


def qualified_name(cls: type) -> str:
    """Return ``module.QualName`` for *cls*, or just ``QualName`` for a builtin."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _to_json(value: object) -> str:
    """Encode *value* as JSON, refusing anything that would not decode back equal to it."""
    text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    decoded = json.loads(text)
    if decoded != value or type(decoded) is not type(value):
        raise ValueError(
            "JSON would not give it back unchanged "
            "(tuples become lists, non-string keys become strings)"
        )
    return text


def serialize_item(node: str, item: object, serializer: Serializer) -> bytes:
    """Serialise a dead letter's *item* with *serializer*.

    Raises:
        StoreError: if the item cannot be serialised; the message names *node*,
            the item's type and the remedy.
        ValueError: if *serializer* is unknown.
    """
    if serializer not in _SERIALIZERS:
        raise ValueError(f"serializer must be 'json' or 'pickle' (got {serializer!r})")
    kind = qualified_name(type(item))
    if serializer == "pickle":
        try:
            return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise StoreError(
                f"cannot dead-letter the item of type {kind} from node {node!r}: "
                f"it cannot be pickled ({type(exc).__name__}: {exc})"
            ) from exc
    try:
        return _to_json(item).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise StoreError(
            f"cannot dead-letter the item of type {kind} from node {node!r} as JSON: {exc}; "
            "pass serializer='pickle' to store any picklable object"
        ) from exc


def deserialize_item(payload: bytes, serializer: str) -> Any:
    """Rebuild a dead letter's item, or raise ``ValueError`` saying why it cannot be."""
    try:
        if serializer == "pickle":
            return pickle.loads(payload)
        if serializer == "json":
            return json.loads(payload, parse_constant=_no_constant)
    except Exception as exc:
        raise ValueError(
            f"cannot deserialise its item ({serializer}): {type(exc).__name__}: {exc}"
        ) from exc
    raise ValueError(f"its serializer {describe_item(serializer)} is unknown")


def _no_constant(name: str) -> Any:
    # flowgraph never writes NaN or Infinity (allow_nan=False): finding one means corruption.
    raise ValueError(f"{name} is not JSON")


def decode_position(store: str, graph: str, source: str, text: object) -> Any:
    """Decode a stored checkpoint position; raise ``StoreError`` naming the store and row."""
    try:
        if not isinstance(text, str):
            raise TypeError(f"it is {type(text).__name__}, not text")
        return json.loads(text, parse_constant=_no_constant)
    except (TypeError, ValueError, RecursionError) as exc:
        raise StoreError(
            f"{store}: the checkpoint of source {source!r} in graph {graph!r} is corrupt, "
            f"not a JSON value ({describe_item(text)}): {exc}"
        ) from exc


def encode_position(graph: str, source: str, position: object) -> str:
    """Encode a checkpoint position as JSON text, or raise ``StoreError`` naming the source."""
    try:
        return _to_json(position)
    except (TypeError, ValueError, RecursionError) as exc:
        raise StoreError(
            f"checkpoint position of source {source!r} in graph {graph!r} must be a JSON value "
            f"(got {qualified_name(type(position))}): {exc}"
        ) from exc
