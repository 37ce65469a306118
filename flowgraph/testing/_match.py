"""Which requests a route, a scheduled fault or an assertion is about.

One :class:`Match` describes a request by method, path, query, headers and
body; FakeAPI routes, scheduled faults and the request logs all match with it,
so a condition reads the same wherever it is written.
"""

from __future__ import annotations

import json as _json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, final

if TYPE_CHECKING:
    import httpx

PathPattern = str | re.Pattern[str]
"""A URL path pattern that must match the whole path.

A string is a template: ``{name}`` matches one path segment and passes it on as
a string, ``{name:int}`` as an int, ``{name:path}`` matches the rest of the
path, slashes included; ``*`` matches anything and ``?`` one character, as in a
glob. A compiled regex is used as it is, its named groups becoming parameters.
"""


class _Any:
    """The default of *json*: the body is not looked at."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ANY"


ANY: Final = _Any()

_CONVERTERS: Final[dict[str, tuple[str, Callable[[str], Any]]]] = {
    "str": ("[^/]+", str),
    "int": ("[0-9]+", int),
    "path": (".+", str),
}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?\}")
_TOKEN = re.compile(r"[A-Za-z]+")


def _glob(text: str) -> str:
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)


def compile_path(pattern: object) -> tuple[re.Pattern[str], dict[str, Callable[[str], Any]]]:
    """Return the regex of a :data:`PathPattern` and the converter of each parameter.

    Raises:
        TypeError: if *pattern* is neither a string nor a compiled regex.
        ValueError: on an unknown converter or a parameter named twice.
    """
    if isinstance(pattern, re.Pattern):
        return pattern, dict.fromkeys(pattern.groupindex, str)
    if not isinstance(pattern, str):
        raise TypeError(f"a path pattern must be a string or re.Pattern (got {pattern!r})")
    parts: list[str] = []
    converters: dict[str, Callable[[str], Any]] = {}
    position = 0
    for found in _PLACEHOLDER.finditer(pattern):
        name, kind = found[1], found[2] or "str"
        if kind not in _CONVERTERS:
            raise ValueError(
                f"unknown converter {kind!r} in path pattern {pattern!r}; "
                "expected one of: str, int, path"
            )
        if name in converters:
            raise ValueError(f"path pattern {pattern!r} names {name!r} twice")
        regex, converters[name] = _CONVERTERS[kind]
        parts += [_glob(pattern[position : found.start()]), f"(?P<{name}>{regex})"]
        position = found.end()
    parts.append(_glob(pattern[position:]))
    return re.compile("".join(parts), re.DOTALL), converters


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _table(
    values: Mapping[str, object] | None, what: str, *, lower: bool
) -> Mapping[str, str | None]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise TypeError(f"{what} must be a mapping of names to values (got {values!r})")
    return {
        (name.lower() if lower else name): None if value is None else _text(value)
        for name, value in values.items()
    }


@final
@dataclass(frozen=True, slots=True, init=False, repr=False, eq=False)
class Match:
    """What a request must look like: every condition given must hold.

    Args:
        method: the HTTP method, or ``None`` for any.
        path: a :data:`PathPattern` the URL path must match; the default matches every path.
        query: query parameters the URL must carry (one of a repeated parameter's
            values may match); a value of ``None`` means the parameter is absent.
        headers: headers the request must carry, names in any case; ``None``
            means the header is absent.
        json: the request body, parsed as JSON, must equal this value.
        content: the request body must be exactly these bytes.

    Raises:
        ValueError: on a method that is not a word, a bad path pattern, or both
            *json* and *content*.
        TypeError: on a path pattern or table of the wrong type.
    """

    method: str | None
    path: PathPattern
    query: Mapping[str, str | None]
    headers: Mapping[str, str | None]
    json: Any
    content: bytes | None
    _regex: re.Pattern[str]
    _converters: Mapping[str, Callable[[str], Any]]

    def __init__(
        self,
        method: str | None = None,
        path: PathPattern = "*",
        *,
        query: Mapping[str, object] | None = None,
        headers: Mapping[str, object] | None = None,
        json: Any = ANY,
        content: bytes | str | None = None,
    ) -> None:
        if method is not None and not (isinstance(method, str) and _TOKEN.fullmatch(method)):
            raise ValueError(f"method must be an HTTP method such as 'GET' (got {method!r})")
        if json is not ANY and content is not None:
            raise ValueError("match the body with json= or content=, not both")
        regex, converters = compile_path(path)
        if isinstance(content, str):
            content = content.encode()
        set_ = object.__setattr__
        set_(self, "method", None if method is None else method.upper())
        set_(self, "path", path)
        set_(self, "query", _table(query, "query", lower=False))
        set_(self, "headers", _table(headers, "headers", lower=True))
        set_(self, "json", json)
        set_(self, "content", content)
        set_(self, "_regex", regex)
        set_(self, "_converters", converters)

    def path_params(self, path: str) -> dict[str, Any] | None:
        """The parameters of *path* if it matches the pattern, else ``None``."""
        found = self._regex.fullmatch(path)
        if found is None:
            return None
        return {
            name: self._converters.get(name, str)(value)
            for name, value in found.groupdict().items()
        }

    def params(self, request: httpx.Request) -> dict[str, Any] | None:
        """The path parameters if *request* matches every condition, else ``None``.

        The body must have been read (``request.read()``) when *json* or *content* is set.
        """
        if self.method is not None and request.method.upper() != self.method:
            return None
        found = self.path_params(request.url.path)
        if found is None or not self._query_and_headers_match(request):
            return None
        if self.content is not None and request.content != self.content:
            return None
        if self.json is not ANY:
            try:
                if _json.loads(request.content) != self.json:
                    return None
            except ValueError:
                return None
        return found

    def matches(self, request: httpx.Request) -> bool:
        """Whether *request* meets every condition."""
        return self.params(request) is not None

    def _query_and_headers_match(self, request: httpx.Request) -> bool:
        if self.query:
            params = request.url.params
            for name, value in self.query.items():
                values = params.get_list(name)
                if (value is None and values) or (value is not None and value not in values):
                    return False
        return all(request.headers.get(name) == value for name, value in self.headers.items())

    def options(self) -> list[str]:
        """``name=value`` for each condition beyond method and path, for reprs."""
        parts = [f"query={dict(self.query)!r}"] if self.query else []
        parts += [f"headers={dict(self.headers)!r}"] if self.headers else []
        parts += [f"json={self.json!r}"] if self.json is not ANY else []
        parts += [f"content={self.content!r}"] if self.content is not None else []
        return parts

    def describe(self) -> str:
        """The conditions in one line: ``POST /orders/{id} json={'sku': 'a'}``."""
        path = self.path if isinstance(self.path, str) else f"re.compile({self.path.pattern!r})"
        return " ".join([self.method or "any method", path, *self.options()])

    def __repr__(self) -> str:
        parts = [repr(self.method), repr(self.path), *self.options()]
        return f"Match({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Match) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))
