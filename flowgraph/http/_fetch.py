"""A transform that makes one request per item, and which errors are worth retrying."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

import httpx

from .._core._exceptions import GraphError
from ._client import resolver

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from ._client import ClientLike

__all__ = ["Decode", "fetch", "is_transient"]

_TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

Decode = Literal["json", "text", "response"]


def is_transient(error: BaseException) -> bool:
    """Whether *error* is worth retrying: the next attempt may well succeed.

    True for timeouts, network and remote protocol errors, responses 408, 425,
    429, 500, 502, 503 and 504 (``httpx.HTTPStatusError``), and bodies that do
    not decode (cut short or replaced by a proxy's error page). False for other
    4xx responses and for errors in the caller's own code.
    """
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code in _TRANSIENT_STATUSES
    return isinstance(
        error,
        httpx.TimeoutException
        | httpx.NetworkError
        | httpx.RemoteProtocolError
        | httpx.DecodingError
        | json.JSONDecodeError
        | TimeoutError,
    )


def fetch(
    client: ClientLike,
    url: str | Callable[[Any], str],
    *,
    method: str = "GET",
    params: Callable[[Any], Mapping[str, Any]] | None = None,
    body: Callable[[Any], Any] | None = None,
    decode: Decode = "json",
) -> Callable[[Any], Awaitable[Any]]:
    """Build a transform that makes one request per item and returns the response.

    Declare it with the node's policies: ``graph.transform(fetch(api,
    "/items/{}"), name="item", workers=8, retry=fg.Retry(on=is_transient),
    rate=fg.Rate(10, per=1))``. A 4xx or 5xx response raises
    ``httpx.HTTPStatusError`` (``raise_for_status``), whose
    ``response.headers["Retry-After"]`` the node's ``Retry`` honours; a body that
    is not JSON raises ``json.JSONDecodeError``. Cancelling the node cancels the
    request in flight. Retries are the node's, so they show in its statistics.

    Args:
        client: an :class:`HTTPClient` attached to the graph, or an open ``httpx.AsyncClient``.
        url: a template formatted with ``url.format(item, item=item)`` (so
            ``"/items/{}"`` or ``"/users/{item[id]}"``), or a function of the item.
        method: the HTTP method.
        params: a function of the item giving the query parameters.
        body: a function of the item giving the JSON body to send.
        decode: return the body parsed as ``"json"``, as ``"text"``, or the whole
            ``httpx.Response`` (``"response"``, body already read).

    Raises:
        GraphError: if *decode* is not one of the three, or *client* is not a client.
    """
    if decode not in ("json", "text", "response"):
        raise GraphError(f"decode must be 'json', 'text' or 'response' (got {decode!r})")
    get_client = resolver(client)
    url_of = _template(url) if isinstance(url, str) else url

    async def fetch(item: Any) -> Any:
        response = await get_client().request(
            method,
            url_of(item),
            params=None if params is None else params(item),
            json=None if body is None else body(item),
        )
        response.raise_for_status()
        if decode == "json":
            return response.json()
        if decode == "text":
            return response.text
        return response

    return fetch


def _template(url: str) -> Callable[[Any], str]:
    def url_of(item: Any) -> str:
        return url.format(item, item=item)

    return url_of
