"""Inlets: a source whose items are handed in from outside the graph while it runs.

``inlet = side.inlet("failed", buffer=1000)`` declares a source node of *side*;
``inlet.send_nowait(item)`` (or ``await inlet.send(item)``) hands it an item,
from a hook of another graph, say. An inlet can never hold up or break its
sender: it has its own bounded buffer, sending never raises, and an item that
cannot be taken (buffer full, inlet closed) is dropped and counted, with a
warning that is logged for the first few drops and then once a minute.
``when_full="wait"`` makes ``await inlet.send(item)`` wait for room instead,
which holds up only the task that sends (an async hook), never the graph the
hook belongs to.

The buffer opens when a run of the inlet's graph starts (or earlier, when a
flow opens it for that run) and closes when the run ends; :meth:`Inlet.close`
ends the input: the source hands on what the buffer holds, then finishes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal, Self, final

import anyio
from anyio import BrokenResourceError, ClosedResourceError, EndOfStream, WouldBlock

from ._exceptions import GraphError
from ._validate import int_at_least

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import TracebackType

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ._nodes import Node

logger = logging.getLogger("flowgraph")

WhenFull = Literal["drop", "wait"]

DROPS_LOGGED = 5
"""Drops an inlet logs one by one; after them it logs a count every DROP_LOG_INTERVAL."""
DROP_LOG_INTERVAL = 60.0


@final
class Inlet:
    """A source of a graph whose items are sent in from outside: ``inlet.send_nowait(x)``.

    Declared with :meth:`Graph.inlet`, which adds its source node (``inlet.node``,
    usable wherever a node is: ``graph.connect(inlet, store)``). Send from the
    event loop (a hook, a task), not from another thread.

    Attributes:
        name: the source node's name.
        buffer: how many items may wait for the source.
        when_full: ``"drop"`` or ``"wait"``, see :meth:`send`.
        delivered: items the source has taken and handed on (across runs).
        dropped: items that never will be: refused because the buffer was full
            or the inlet closed, or still in the buffer when the run ended.
            Every item sent is one or the other once the run has ended.

    Added in 0.2.
    """

    def __init__(self, name: str, *, buffer: int, when_full: WhenFull) -> None:
        int_at_least(f"inlet {name!r} buffer", buffer, 1)
        if when_full not in ("drop", "wait"):
            raise GraphError(
                f"inlet {name!r} when_full must be 'drop' or 'wait' (got {when_full!r})"
            )
        self.name = name
        self.buffer = buffer
        self.when_full: WhenFull = when_full
        self.delivered = 0
        self.dropped = 0
        self.node: Node[[], AsyncIterator[Any]]
        self._send: MemoryObjectSendStream[Any] | None = None
        self._receive: MemoryObjectReceiveStream[Any] | None = None
        self._reading = False
        self._closed = False
        self._logged = 0
        self._unlogged = 0
        self._since = 0.0

    def __repr__(self) -> str:
        graph = self.node.graph.name if hasattr(self, "node") else "?"
        return f"<Inlet {self.name!r} of graph {graph!r}: buffer={self.buffer}>"

    # -- sending ------------------------------------------------------------------------

    def send_nowait(self, item: Any) -> bool:
        """Hand *item* to the source if the buffer has room; never waits, never raises.

        Returns:
            Whether the item was taken; if not (buffer full, or the inlet is not
            open), it is dropped and counted in :attr:`dropped`.
        """
        send = self._send
        if send is None:
            self._drop("is closed")
            return False
        try:
            send.send_nowait(item)
        except WouldBlock:
            self._drop(f"is full ({self.buffer} items)")
            return False
        except (ClosedResourceError, BrokenResourceError):
            self._drop("is closed")
            return False
        return True

    async def send(self, item: Any) -> bool:
        """Hand *item* to the source; with ``when_full="wait"``, wait for room first.

        With ``when_full="drop"`` this is :meth:`send_nowait`. With ``"wait"``
        it waits while the buffer is full, holding up only the calling task; if
        the inlet closes meanwhile the item is dropped. Never raises (except
        cancellation).

        Returns:
            Whether the item was taken.
        """
        if self.when_full == "drop" or self._send is None:
            return self.send_nowait(item)
        try:
            await self._send.send(item)
        except (ClosedResourceError, BrokenResourceError):
            self._drop("is closed")
            return False
        return True

    def close(self) -> None:
        """End the input: the source hands on what the buffer holds, then finishes.

        Later sends are dropped until the next run of the graph opens the inlet.
        Closing twice does nothing.
        """
        self._closed = True
        if self._send is not None:
            self._send.close()

    # -- the run's side -------------------------------------------------------------------

    def open(self) -> None:
        """Open the buffer for the next run, unless it is open already."""
        if self._send is None or self._closed:
            self._shut()
            self._send, self._receive = anyio.create_memory_object_stream[Any](self.buffer)
            self._closed = False

    async def __aenter__(self) -> Self:
        """Opened by the run of the inlet's graph, as node functions that are context managers."""
        self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._shut()

    def _shut(self) -> None:
        """Close the buffer; what it still holds is dropped and counted."""
        send, receive = self._send, self._receive
        self._send = self._receive = None
        if send is not None:
            send.close()
        if receive is not None:
            left = receive.statistics().current_buffer_used
            receive.close()  # wakes senders waiting for room: their items are dropped
            if left:
                self.dropped += left
                logger.warning(
                    "inlet %r of graph %r ended with %d item(s) not taken: dropped",
                    self.name,
                    self.node.graph.name,
                    left,
                )
        self._flush()

    async def __call__(self) -> AsyncIterator[Any]:
        """The source node's function: every item sent, until the inlet is closed."""
        receive = self._receive
        if receive is None:
            raise RuntimeError(
                f"inlet {self.name!r} is not open: it opens when its graph's run starts"
            )
        if self._reading:
            raise RuntimeError(f"inlet {self.name!r} feeds one run at a time")
        self._reading = True
        try:
            while True:
                try:
                    item = await receive.receive()
                except (EndOfStream, ClosedResourceError):
                    return
                self.delivered += 1
                yield item
        finally:
            self._reading = False

    # -- drops ------------------------------------------------------------------------------

    def _drop(self, why: str) -> None:
        self.dropped += 1
        if self._logged < DROPS_LOGGED:
            self._logged += 1
            last = self._logged == DROPS_LOGGED
            logger.warning(
                "inlet %r of graph %r %s: dropped an item%s",
                self.name,
                self.node.graph.name,
                why,
                " (further drops are counted once a minute)" if last else "",
            )
            self._since = anyio.current_time()
            return
        self._unlogged += 1
        if anyio.current_time() - self._since >= DROP_LOG_INTERVAL:
            self._flush()

    def _flush(self) -> None:
        if self._unlogged:
            logger.warning(
                "inlet %r of graph %r dropped %d more item(s)",
                self.name,
                self.node.graph.name,
                self._unlogged,
            )
            self._unlogged = 0
            self._since = anyio.current_time()
