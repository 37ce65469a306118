"""Retry dead letters on the next run: the stored letters of a graph fed back into their nodes.

``fg.run(graph, state=..., replay_dead_letters=True)`` runs a copy of *graph*
with one more source per node that has letters, connected to that node: the
letters enter from the first moment of the run, beside the new input, and go
through the graph's own workers, policies and sinks.

When is a letter removed? Each replay source is a checkpointed source whose
positions are letter ids, so the run's acknowledgement tracking says when an
item, and everything made from it, has been fully processed: consumed by
every sink, filtered out, skipped, or dead-lettered anew. A letter is removed
from the store at the checkpoint commit that covers it, and only then. So:

* an item that goes through removes its letter;
* an item that fails again at its node is stored as a new letter (this run's)
  before the old one is removed: the store holds it once;
* an item still in flight when the run fails, is stopped or is killed keeps its
  letter, replayed by the next run. Delivery is at least once, and never is a
  letter lost: after a kill, a letter whose item was processed (or failed again)
  just before may be replayed, or stored, a second time.

Only the letters stored when the run starts are replayed, oldest first.
"""

from __future__ import annotations

import logging
from collections import deque
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Self, cast

from .._core._exceptions import GraphError
from .._core._nodes import NodeKind, Positioned
from .._core._options import check_run_options
from .._core._run import open_run
from .._stores import DeadLetters

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping
    from types import TracebackType

    from .._core._acks import CheckpointStore
    from .._core._graph import Graph
    from .._core._options import RunOptions
    from .._core._run import Run
    from .._stores import DeadLetter

logger = logging.getLogger("flowgraph")

DEFAULT_EVERY = 100
DEFAULT_INTERVAL = 1.0
"""Commit settings of a replay without a checkpoint store: as ``fg.Checkpoints``'s defaults."""


@asynccontextmanager
async def open_graph_run(
    graph: Graph, *, replay_dead_letters: bool = False, **options: Any
) -> AsyncIterator[Run]:
    """:func:`open_run`, feeding in the stored dead letters of *graph* first if asked.

    Raises:
        GraphError: if replaying is asked without a dead-letter store, or a
            letter names a node that *graph* does not have.
    """
    if not replay_dead_letters:
        async with open_run(graph, **options) as run:
            yield run
        return
    dead_letters = check_replay(options)
    # A bad graph is refused before the store is read.
    check_run_options(graph, cast("RunOptions", options))
    async with dead_letters:
        letters = await dead_letters.store.list_dead_letters(graph=graph.name)
        plan = _by_node(graph, letters)
        if not plan:
            async with open_run(graph, **options) as run:
                yield run
            return
        replaying = graph.copy()
        sources: dict[str, list[int]] = {}
        for node, batch in plan.items():
            name = _free_name(f"{node} (dead letters)", replaying.nodes)
            replaying.connect(
                replaying.source(_letters_source(batch), name=name, checkpoint=True), node
            )
            sources[name] = [letter.id for letter in batch]
        logger.info(
            "replaying %d dead letter(s) of graph %r: %s",
            sum(map(len, plan.values())),
            graph.name,
            ", ".join(f"{len(batch)} into {node!r}" for node, batch in plan.items()),
        )
        checkpoints = ReplayCheckpoints(options.get("checkpoints"), dead_letters, sources)
        with graph.running():
            async with open_run(replaying, **{**options, "checkpoints": checkpoints}) as run:
                yield run


def check_replay(options: Mapping[str, Any]) -> DeadLetters:
    """The run's dead letters, if they are in a store a replay can read.

    Raises:
        GraphError: if they are not.
    """
    dead_letters = options.get("dead_letters")
    if not isinstance(dead_letters, DeadLetters):
        raise GraphError(
            "replay_dead_letters=True needs the dead letters in a store: pass state= "
            f"or dead_letters=fg.DeadLetters(...) (got dead_letters={dead_letters!r})"
        )
    return dead_letters


def _by_node(graph: Graph, letters: Iterable[DeadLetter]) -> dict[str, list[DeadLetter]]:
    """The letters to replay, by node; refuses letters of nodes the graph does not have."""
    plan: dict[str, list[DeadLetter]] = {}
    for letter in letters:
        node = graph.nodes.get(letter.node)
        if node is None:
            raise GraphError(
                f"dead letter {letter.id} is from node {letter.node!r}, which graph "
                f"{graph.name!r} does not have: purge it (flowgraph dlq purge --graph "
                f"{graph.name} --node {letter.node}) or run without replaying"
            )
        if node.kind is NodeKind.SOURCE:
            logger.warning(
                "dead letter %d is from source %r, which takes no input: not replayed, "
                "it stays in the store",
                letter.id,
                letter.node,
            )
            continue
        plan.setdefault(letter.node, []).append(letter)
    return plan


def _free_name(base: str, taken: Mapping[str, object]) -> str:
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base} {n}"
    return name


def _letters_source(letters: list[DeadLetter]) -> Callable[[Any], AsyncIterator[Positioned]]:
    async def replay(after: Any) -> AsyncIterator[Positioned]:
        for letter in letters:
            if after is None or letter.id > after:
                yield Positioned(letter.item, letter.id)

    return replay


class ReplayCheckpoints:
    """The run's checkpoint store, where a replay source's commit removes its letters.

    Positions of the graph's own checkpointed sources go to *inner* (if any);
    the position of a replay source is the id of its last letter whose item,
    and every earlier one's, is fully processed: those letters are removed.
    """

    def __init__(
        self,
        inner: CheckpointStore | None,
        dead_letters: DeadLetters,
        sources: Mapping[str, list[int]],
    ) -> None:
        self.inner = inner
        self.every = inner.every if inner is not None else DEFAULT_EVERY
        self.interval = inner.interval if inner is not None else DEFAULT_INTERVAL
        self.dead_letters = dead_letters
        self.pending = {name: deque(ids) for name, ids in sources.items()}
        self.removed = 0
        self._exits = AsyncExitStack()

    async def __aenter__(self) -> Self:
        await self._exits.enter_async_context(self.dead_letters)
        inner: Any = self.inner
        if isinstance(inner, AbstractAsyncContextManager):
            await self._exits.enter_async_context(inner)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._exits.aclose()

    async def load(self, graph: str) -> Mapping[str, Any]:
        if self.inner is None:
            return {}
        positions = await self.inner.load(graph)
        return {name: p for name, p in positions.items() if name not in self.pending}

    async def commit(self, graph: str, positions: Mapping[str, Any]) -> None:
        theirs = {name: p for name, p in positions.items() if name not in self.pending}
        if theirs and self.inner is not None:
            await self.inner.commit(graph, theirs)
        store = self.dead_letters.store
        for name, position in positions.items():
            ids = self.pending.get(name)
            while ids and ids[0] <= position:
                await store.remove_dead_letter(ids[0])
                ids.popleft()
                self.removed += 1
