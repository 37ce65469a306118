"""One ``httpx.AsyncClient`` per run.

:class:`HTTPClient` follows its graphs' runs through their lifecycle hooks: a
run opens the client on first use and closes it when it ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias, final

import httpx

from .._core import Graph, RunFinished, RunStarted
from .._core._exceptions import GraphError

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

__all__ = ["ClientLike", "HTTPClient", "resolver"]


@final
class HTTPClient:
    """Options for an ``httpx.AsyncClient``, opened once per run and closed when it ends.

    Attached to a graph (``HTTPClient(graph, base_url=...)`` or :meth:`attach`),
    it opens the client lazily in each run, on first use, and closes it after
    the run, in a ``RunFinished`` hook that runs even when the run failed or was
    cancelled. Outside a run, ``async with http_client as client:`` opens it for
    the block. Runs and blocks that overlap share one client, closed when the
    last one ends. Use it from one event loop at a time.

    Attaching also lets ``paginate`` count the retries it makes on the node
    it runs in, so they show in the node's statistics.

    Args:
        graphs: graphs whose runs open and close the client.
        options: keyword arguments of ``httpx.AsyncClient`` (``base_url``,
            ``timeout``, ``headers``, ``transport``...). A ``transport`` given
            here is shared by the successive clients, and each one closes it
            when it closes: that suits mock, ASGI and fault-injecting transports;
            for the network leave it out and let each client make its own.

    Added in 0.1.
    """

    __slots__ = ("_client", "_options", "_users")

    def __init__(self, *graphs: Graph, **options: Any) -> None:
        self._options = options
        self._client: httpx.AsyncClient | None = None
        self._users = 0
        for graph in graphs:
            self.attach(graph)

    def __repr__(self) -> str:
        options = ", ".join(f"{name}={value!r}" for name, value in self._options.items())
        return f"HTTPClient({options})"

    def attach(self, graph: Graph) -> None:
        """Open the client in every run of *graph*, and close it when the run ends.

        Raises:
            TypeError: if *graph* is not a :class:`flowgraph.Graph`.
        """
        if not isinstance(graph, Graph):
            raise TypeError(f"HTTPClient attaches to a flowgraph.Graph (got {graph!r})")
        graph.on(RunStarted)(self._run_started)
        graph.on(RunFinished)(self._run_finished)

    @property
    def client(self) -> httpx.AsyncClient:
        """The ``httpx.AsyncClient`` of the current run or ``async with`` block.

        Raises:
            RuntimeError: outside a run of an attached graph and outside ``async with``.
        """
        if self._users == 0:
            raise RuntimeError(
                "HTTPClient is not open: use it in a run of a graph it is attached to "
                "(HTTPClient(graph, ...)), or inside `async with http_client:`"
            )
        if self._client is None:
            self._client = httpx.AsyncClient(**self._options)
        return self._client

    async def __aenter__(self) -> httpx.AsyncClient:
        self._users += 1
        return self.client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._release()

    def _run_started(self, event: RunStarted) -> None:
        self._users += 1

    async def _run_finished(self, event: RunFinished) -> None:
        await self._release()

    async def _release(self) -> None:
        self._users -= 1
        if self._users == 0 and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


ClientLike: TypeAlias = "HTTPClient | httpx.AsyncClient"
"""An :class:`HTTPClient`, or an ``httpx.AsyncClient`` that the caller opens and closes."""


def resolver(client: ClientLike) -> Callable[[], httpx.AsyncClient]:
    """A function returning *client*'s open ``httpx.AsyncClient`` when called.

    Raises:
        GraphError: if *client* is neither an HTTPClient nor an httpx.AsyncClient.
    """
    if isinstance(client, HTTPClient):
        return lambda: client.client
    if isinstance(client, httpx.AsyncClient):
        return lambda: client
    raise GraphError(f"expected an HTTPClient or an httpx.AsyncClient (got {client!r})")
