"""What always-on statistics cost: W1 with the engine's worker loop, and with a copy of it
that keeps everything but the counters and the latency sampling.

    .venv/bin/python benchmarks/bench_stats.py          # both backends, best of 15

Prints items/s for both loops and the cost (1 - on / stripped); the target is
under 10 %. The stripped loop must stay in step with ``_consume`` in
``flowgraph/_core/_workers.py``: it is the same code minus the statistics.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.lowlevel
from _pipelines import Tally, linear_graph
from anyio import EndOfStream, WouldBlock

from flowgraph._core import _workers
from flowgraph._core._workers import YIELD_EVERY

N = 200_000
REPEATS = 15


async def consume_without_statistics(nr: Any, emit: Any, direct: Any) -> None:
    """``_consume`` minus the counters and the latency sampling."""
    inbox = nr.inbox
    call, many, fail = nr.call, nr.many, nr.fail
    tracked = nr.tracking is not None
    receive_nowait, receive = inbox.receive_nowait, inbox.receive
    checkpoint = anyio.lowlevel.checkpoint
    budget, yielded = 1, True
    if direct is not None:
        open_chunk = direct.open
    while True:
        try:
            chunk = receive_nowait()
        except WouldBlock:
            try:
                chunk = await receive()
            except EndOfStream:
                return
            budget, yielded = 1, True
        except EndOfStream:
            return
        chunk.room = 0
        for item in chunk:
            if tracked:
                ticket, item = item
            budget -= 1
            try:
                if not budget:
                    if not yielded:
                        await checkpoint()
                    yielded = False
                    budget = YIELD_EVERY
                result = await call(item)
            except Exception as exc:
                await fail(item, exc)
                if tracked:
                    ticket.release()
            else:
                if direct is not None:
                    out = (ticket, result) if tracked else result
                    open_ = direct.chunk
                    if open_.room:
                        open_.room -= 1
                        open_.append(out)
                    elif (waiting := open_chunk(out)) is not None:
                        await waiting
                elif emit is None or many:  # a generator's call sent its outputs itself
                    if tracked:
                        ticket.release()
                elif (waiting := emit((ticket, result) if tracked else result)) is not None:
                    await waiting


def main() -> None:
    loops = {"statistics on": _workers._consume, "stripped": consume_without_statistics}
    for backend in ("asyncio", "trio"):
        best: dict[str, float] = {}
        for _ in range(REPEATS):
            for name, loop in loops.items():
                _workers._consume = loop  # type: ignore[assignment]
                tally = Tally()
                graph = linear_graph(N, tally)
                started = time.perf_counter()
                anyio.run(graph.run, backend=backend)
                best[name] = max(best.get(name, 0.0), N / (time.perf_counter() - started))
                tally.check(N, N * (N - 1) // 2)
        _workers._consume = loops["statistics on"]  # type: ignore[assignment]
        on, off = best["statistics on"], best["stripped"]
        cost = 1 - on / off
        print(f"{backend}: statistics on {on:,.0f} items/s, stripped {off:,.0f}, cost {cost:.1%}")


if __name__ == "__main__":
    main()
