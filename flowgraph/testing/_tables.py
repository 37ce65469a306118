"""Tables of records served page by page, in the styles real APIs use.

Each style names its query parameters as :mod:`flowgraph.http` does by default
(``page``/``page_size``, ``offset``/``limit``, ``cursor``/``limit``), so
``paginate(client, path, style=...)`` walks a table without options. Bad
parameters raise :class:`BadRequest`, which the API answers with a 400.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, final, get_args

import httpx

Pagination = Literal["page", "offset", "cursor"]
"""How a table pages: page numbers from 1, record offsets from 0, or opaque cursors."""

PARAMETERS: Final[Mapping[str, tuple[str, str]]] = {
    "page": ("page", "page_size"),
    "offset": ("offset", "limit"),
    "cursor": ("cursor", "limit"),
}


class BadRequest(Exception):
    """A request the API rejects; the message goes to the client as a 400."""


def integer(text: str, name: str, *, minimum: int) -> int:
    """*text* as an int >= *minimum*, or :class:`BadRequest` naming the parameter."""
    message = f"{name} must be an integer >= {minimum} (got {text!r})"
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(message) from None
    if value < minimum:
        raise BadRequest(message)
    return value


def encode_cursor(offset: int) -> str:
    """An opaque cursor for the record at *offset*."""
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The offset a cursor stands for, or :class:`BadRequest`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        label, _, offset = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
        if label == "offset" and offset.isascii() and offset.isdigit():
            return int(offset)
    except (binascii.Error, UnicodeDecodeError):
        pass
    raise BadRequest(f"invalid cursor {cursor!r}")


@final
@dataclass(frozen=True, slots=True)
class Pages:
    """How one table answers: its style, page size, parameter names and body shape."""

    style: Pagination
    page_size: int
    names: tuple[str, str]  # the API's names of the position and size parameters
    items: str | None  # the key of the records in the body, or None for a bare list
    link_header: bool  # whether pages with a next one carry Link: <...>; rel="next"

    @classmethod
    def build(
        cls,
        style: str,
        *,
        page_size: int,
        params: Mapping[str, str] | None,
        items: str | None,
        link_header: bool,
    ) -> Pages:
        """Validate the options of a table.

        Raises:
            ValueError: on an unknown style, a page size below 1, or a rename of a
                parameter the style does not have.
        """
        if style not in get_args(Pagination):
            raise ValueError(f"pagination must be 'page', 'offset' or 'cursor' (got {style!r})")
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise ValueError(f"page_size must be an integer >= 1 (got {page_size!r})")
        defaults = PARAMETERS[style]
        renames = dict(params or {})
        unknown = sorted(set(renames) - set(defaults))
        if unknown:
            raise ValueError(
                f"params of {style!r} pagination rename {defaults[0]!r} and {defaults[1]!r} "
                f"(got {unknown[0]!r})"
            )
        names = (renames.get(defaults[0], defaults[0]), renames.get(defaults[1], defaults[1]))
        return cls(style, page_size, names, items, link_header)  # type: ignore[arg-type]

    def respond(self, records: Sequence[Any], request: httpx.Request) -> httpx.Response:
        """The page of *records* that *request* asks for.

        Raises:
            BadRequest: on an invalid position or size parameter.
        """
        query = request.url.params
        position, size_name = self.names
        size = integer(_last(query, size_name, str(self.page_size)), size_name, minimum=1)
        if self.style == "page":
            page = integer(_last(query, position, "1"), position, minimum=1)
            start, next_value = (page - 1) * size, page + 1
        elif self.style == "offset":
            start = integer(_last(query, position, "0"), position, minimum=0)
            next_value = start + size
        else:
            start = decode_cursor(query[position]) if position in query else 0
            next_value = start + size
        end = min(start + size, len(records))
        chunk = list(records[start:end]) if start < len(records) else []
        more = start + size < len(records)
        next_token: int | str | None = None
        if more:
            next_token = encode_cursor(next_value) if self.style == "cursor" else next_value
        wanted = self.link_header or (self.style == "cursor" and self.items is not None)
        next_url = (
            str(request.url.copy_set_param(position, next_token)) if more and wanted else None
        )
        headers = {"link": f'<{next_url}>; rel="next"'} if next_url and self.link_header else {}
        return httpx.Response(
            200, headers=headers, json=self._body(chunk, records, size, start, next_token, next_url)
        )

    def _body(
        self,
        chunk: list[Any],
        records: Sequence[Any],
        size: int,
        start: int,
        next_token: int | str | None,
        next_url: str | None,
    ) -> Any:
        if self.items is None:
            return chunk
        if self.style == "page":
            meta: dict[str, Any] = {
                "page": start // size + 1,
                "page_size": size,
                "total": len(records),
                "total_pages": math.ceil(len(records) / size),
                "next_page": next_token,
            }
        elif self.style == "offset":
            meta = {
                "offset": start,
                "limit": size,
                "total": len(records),
                "next_offset": next_token,
            }
        else:
            meta = {"next_cursor": next_token, "next": next_url}
        return {self.items: chunk, **meta}


def _last(query: httpx.QueryParams, name: str, default: str) -> str:
    values = query.get_list(name)
    return values[-1] if values else default


def lookup(records: Sequence[Any], key: str, value: str) -> Any:
    """The first record whose *key* reads *value*, or ``None``."""
    for record in records:
        if isinstance(record, Mapping) and key in record and str(record[key]) == value:
            return record
    return None


class Generated(Sequence[dict[str, Any]]):
    """The records of a plain FakeAPI: record *i* made on demand, never stored."""

    def __init__(self, count: int, make: Callable[[int], dict[str, Any]]) -> None:
        self._count = count
        self._make = make

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._make(i + 1) for i in range(*index.indices(self._count))]
        if not -self._count <= index < self._count:
            raise IndexError(index)
        return self._make(index % self._count + 1)


def answer_400(respond: Callable[[], httpx.Response]) -> httpx.Response:
    """*respond()*, or a 400 with the message of the :class:`BadRequest` it raised."""
    try:
        return respond()
    except BadRequest as exc:
        return httpx.Response(400, json={"error": str(exc)})


def items_page(request: httpx.Request, records: Sequence[Any], page_size: int) -> httpx.Response:
    """``GET /items`` of a plain FakeAPI: page numbers, or offsets if the query has them."""
    query = request.url.params
    offsets = "offset" in query or "limit" in query
    if offsets and "page" in query:
        return httpx.Response(400, json={"error": "use either page or offset, not both"})
    style: Pagination = "offset" if offsets else "page"
    table = Pages(style, page_size, PARAMETERS[style], "items", link_header=False)
    return answer_400(lambda: table.respond(records, request))


def items_cursor(
    request: httpx.Request, records: Sequence[Any], page_size: int, link_header: bool
) -> httpx.Response:
    """``GET /items/cursor`` of a plain FakeAPI."""
    table = Pages("cursor", page_size, PARAMETERS["cursor"], "items", link_header)
    return answer_400(lambda: table.respond(records, request))


def items_one(records: Sequence[Any], text: str) -> httpx.Response:
    """``GET /items/{id}`` of a plain FakeAPI: record *id*, counted from 1."""
    try:
        record_id = integer(text, "record id", minimum=1)
    except BadRequest as exc:
        return httpx.Response(400, json={"error": str(exc)})
    if record_id > len(records):
        return httpx.Response(404, json={"error": f"no record with id {record_id}"})
    return httpx.Response(200, json=records[record_id - 1])
