"""Sync nodes on a Dask cluster: ``executor=fg.Dask(client_or_address)`` (``flowgraph[dask]``).

Each call is one ``client.submit``: the node's ``workers`` bound the futures it
has outstanding, so backpressure reaches the cluster. A small coroutine on the
Dask client's own event loop waits for each future and gathers its result
there, then hands it to the run's inbox: no thread waits for a future, on
asyncio or trio alike.

Lost workers are Dask's business: the scheduler runs a lost task again
elsewhere, up to ``distributed.scheduler.allowed-failures`` times, then the
future fails with ``KilledWorker``, which fails the item like any error (and
``Retry``/``on_error`` apply). A call given up on (its timeout passed) has its
future cancelled; Dask cannot interrupt a task already running on a worker,
which runs to its end there, its result discarded.
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, final

import anyio.to_thread

from .._core._exceptions import GraphError, describe_error
from ._remote import BoundRemote

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ImportError("fg.Dask needs dask.distributed: pip install 'flowgraph[dask]'") from exc
    return distributed


@final
class Dask:
    """Run a node's calls on a Dask cluster: ``executor=fg.Dask(client)``.

    Give a ``distributed.Client`` you made (it stays yours: closing it is your
    job), or the address of a scheduler (``"tcp://scheduler:8786"``), to which
    this object connects on first use and which :meth:`close` disconnects.
    One object may serve several nodes and runs. Functions and items travel
    with cloudpickle, as Dask sends them.

    Args:
        client: a ``distributed.Client``, or a scheduler address.

    Raises:
        ImportError: if dask.distributed is not installed.
        GraphError: if *client* is neither.

    Added in 0.2.
    """

    def __init__(self, client: Any) -> None:
        distributed = _import_distributed()
        if isinstance(client, str):
            self.address: str | None = client
            self._client: Any = None
        elif isinstance(client, distributed.Client):
            self.address, self._client = None, client
        else:
            raise GraphError(
                f"fg.Dask takes a distributed.Client or a scheduler address (got {client!r})"
            )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Dask({self.address!r})" if self.address is not None else f"Dask({self._client!r})"

    def check(self, fn: Callable[..., Any], *, node: str) -> None:
        """Refuse a function that cloudpickle cannot send to the cluster."""
        import cloudpickle

        try:
            cloudpickle.dumps(fn)
        except Exception as exc:
            raise GraphError(
                f"node {node!r} runs on Dask, but its function cannot be pickled "
                f"({describe_error(exc)})"
            ) from exc

    def client(self) -> Any:
        """The ``distributed.Client``, connecting to the address on first use (blocking)."""
        with self._lock:
            if self._client is None:
                self._client = _import_distributed().Client(self.address)
            return self._client

    @asynccontextmanager
    async def bind(
        self, fn: Callable[[Any], Any], *, node: str, workers: int
    ) -> AsyncIterator[BoundDask]:
        """Serve one node for one run; wait (briefly) for its given-up futures at the end."""
        client = self._client or await anyio.to_thread.run_sync(self.client)
        bound = BoundDask(client, fn, node)
        try:
            yield bound
        finally:
            await bound.wait_idle()

    def close(self) -> None:
        """Disconnect from the scheduler, if this object connected to it."""
        with self._lock:
            client, self._client = self._client, None
        if self.address is not None and client is not None:
            client.close()


@final
class BoundDask(BoundRemote[Any]):
    """A node's calls to Dask during one run: ``await call(item)``."""

    def __init__(self, client: Any, fn: Callable[[Any], Any], node: str) -> None:
        super().__init__(node)
        self.client = client
        self.fn = fn

    def start(self, item: Any, deliver: Callable[[bool, Any], None]) -> Any:
        future = self.client.submit(self.fn, item, pure=False)
        self.client.loop.add_callback(self._gather, future, deliver)
        return future

    async def _gather(self, future: Any, deliver: Callable[[bool, Any], None]) -> None:
        """On the Dask client's event loop: wait for *future*, fetch its result, deliver."""
        try:
            (value,) = await self.client.gather([future], asynchronous=True)
        except Exception as exc:
            deliver(False, exc)
        except BaseException as exc:  # cancelled: an Exception for the node, if anyone waits
            deliver(False, RuntimeError(f"Dask cancelled the task ({describe_error(exc)})"))
        else:
            deliver(True, value)

    def cancel(self, handle: Any) -> None:
        client = self.client
        client.loop.add_callback(lambda: client.cancel([handle], asynchronous=True))
