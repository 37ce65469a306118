"""Quickstart: a linear pipeline mixing async and sync nodes, then its statistics.

Run it with ``python examples/quickstart.py`` or ``flowgraph run examples/quickstart.py:graph``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

import flowgraph as fg

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

graph = fg.Graph("quickstart")
totals: dict[str, int] = {"words": 0}


@graph.source
async def lines() -> AsyncIterator[str]:
    """Produce lines of text, as a file or a socket would."""
    for n in range(1_000):
        yield f"line {n}: the quick brown fox jumps over the lazy dog"


@graph.transform(workers=8)
async def fetch_length(line: str) -> tuple[str, int]:
    """An async step that waits on I/O: eight items wait at once."""
    await anyio.sleep(0.001)
    return line, len(line)


@graph.transform(workers=2)
def words(pair: tuple[str, int]) -> Iterator[str]:
    """A sync generator: runs in a worker thread and emits many items per input."""
    line, _length = pair
    yield from line.split()


@graph.sink
async def count(word: str) -> None:
    totals["words"] += 1


graph.chain(lines, fetch_length, words, count)


def main() -> None:
    result = fg.run(graph)  # or: await graph.run() inside your own event loop
    for name, stats in result.statistics.items():
        print(f"{name:>12}: in={stats.items_in:>5} out={stats.items_out:>5} errors={stats.errors}")
    print(f"counted {totals['words']} words in {result.elapsed:.2f}s")


if __name__ == "__main__":
    main()
