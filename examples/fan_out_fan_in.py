"""Fan-out, routing and fan-in: one source feeds two branches that merge again.

``orders`` fans out to ``audit`` (sees every order) and to ``triage``, which
routes each order to ``express`` or ``standard`` by its size; both branches
merge into ``ship``, whose input ends once both have finished.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

import flowgraph as fg

if TYPE_CHECKING:
    from collections.abc import Iterator

graph = fg.Graph("orders")
shipped: list[str] = []
audited: list[int] = []


@graph.source
def orders() -> Iterator[dict[str, int]]:
    """A sync generator source: read in a worker thread."""
    for n in range(200):
        yield {"id": n, "amount": (n * 37) % 500}


@graph.sink
def audit(order: dict[str, int]) -> None:
    audited.append(order["id"])


@graph.transform(inline=True)
def triage(order: dict[str, int]) -> dict[str, int]:
    """Cheap enough to run on the event loop: no thread hop."""
    return order


@graph.transform(workers=4)
async def express(order: dict[str, int]) -> str:
    await anyio.sleep(0.001)
    return f"express #{order['id']}"


@graph.transform
async def standard(order: dict[str, int]) -> str:
    return f"standard #{order['id']}"


@graph.sink
async def ship(label: str) -> None:
    shipped.append(label)


graph.connect(orders, audit, triage)  # fan-out: every order goes to both
graph.route(
    triage,
    by=lambda order: "express" if order["amount"] >= 250 else "standard",
    to={"express": express, "standard": standard},
)
graph.connect(express, ship)  # fan-in: ship merges both branches
graph.connect(standard, ship)


def main() -> None:
    result = fg.run(graph)
    stats = result.statistics
    print(f"audited {len(audited)} orders, shipped {len(shipped)}")
    print(f"express: {stats['express'].items_out}, standard: {stats['standard'].items_out}")
    assert len(audited) == len(shipped) == stats["orders"].items_out


if __name__ == "__main__":
    main()
