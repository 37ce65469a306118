"""PostgreSQL to PostgreSQL: a server-side cursor, a CPU-bound transform in batches, COPY.

The cookbook's PostgreSQL recipe (docs/cookbook/postgres-etl.md). Each run
copies the orders added to ``"Raw Orders"`` since the last run into ``"Order
Facts"``, cleaned (e-mail pseudonymised, country codes normalised, totals in
cents), and prints the throughput:

    python examples/postgres_etl.py --url postgresql://localhost/shop
    DATABASE_URL=postgresql://localhost/shop python examples/postgres_etl.py --rows 1000000

- The source reads ``"Raw Orders"`` through a named (server-side) cursor, 2,000
  rows a fetch, in id order, and resumes after the last id every sink finished
  (the checkpoint, kept in the same database).
- The transform takes the rows 1,000 at a time, in two worker processes.
- ``fg.CopyInto(..., key="id")`` loads each batch with COPY into a staging
  table merged by id, one transaction per batch: a batch replayed after a
  crash rewrites the same rows.

It fills ``"Raw Orders"`` with ``--rows`` generated orders first (adding the
missing ones), so that it runs on an empty database; point the query at your
own table instead. Without a URL it starts nothing and says how to get one.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
import unicodedata
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

import flowgraph as fg

if TYPE_CHECKING:
    from collections.abc import Iterator

SOURCE = "Raw Orders"  # names with spaces and capitals: psycopg quotes them, we never do
TARGET = "Order Facts"
COLUMNS = ["id", "customer", "country", "total_cents", "note", "ordered_on"]
COUNTRIES = {"fr": "FR", "fra": "FR", "france": "FR", "de": "DE", "deu": "DE", "us": "US"}
COUNTRIES |= {"usa": "US", "gb": "GB", "gbr": "GB", "united kingdom": "GB"}
PEPPER = b"cookbook"  # keep yours secret: it makes the pseudonyms unguessable


def build_graph(url: str, *, fetch: int = 2000, batch: int = 1000) -> fg.Graph:
    """The ETL: new rows of ``SOURCE`` -> batches of facts -> COPY into ``TARGET`` by id."""
    graph = fg.Graph("orders-etl")

    @graph.source(checkpoint=True)  # runs in a worker thread: it is a sync generator
    def orders(after: int | None) -> Iterator[fg.Positioned]:
        query = sql.SQL(
            "SELECT id, email, country, quantity, unit_price, note, created_at "
            "FROM {} WHERE id > %s ORDER BY id"
        ).format(sql.Identifier(SOURCE))
        with (
            psycopg.connect(url) as connection,
            connection.cursor("orders", row_factory=dict_row) as cursor,  # server-side
        ):
            cursor.itersize = fetch
            cursor.execute(query, [after if after is not None else -1])
            for row in cursor:
                yield fg.Positioned(row, position=row["id"])

    # A list of up to `batch` rows per call, in a pool of 2 worker processes for the run.
    clean = graph.transform(facts, name="clean", batch=batch, workers=2, executor="processes")
    load = fg.CopyInto(url, TARGET, columns=COLUMNS, key="id")
    graph.chain(orders, clean, graph.sink(load, name="load", workers=4))
    return graph


def facts(orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A batch of orders, cleaned in a worker process: sent there and back pickled."""
    return [fact(order) for order in orders]


def fact(order: dict[str, Any]) -> dict[str, Any]:
    """One order, cleaned: CPU work in plain Python."""
    email = order["email"].strip().lower().encode()
    note = unicodedata.normalize("NFKD", order["note"])
    return {
        "id": order["id"],
        "customer": hashlib.blake2b(email, key=PEPPER, digest_size=12).hexdigest(),
        "country": COUNTRIES.get(order["country"].strip().lower(), "??"),
        "total_cents": int(order["quantity"] * order["unit_price"] * 100),
        "note": " ".join("".join(c for c in note if not unicodedata.combining(c)).split()),
        "ordered_on": order["created_at"].date(),
    }


# -- the tables -----------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS {source} (
    id bigint PRIMARY KEY, email text NOT NULL, country text NOT NULL,
    quantity int NOT NULL, unit_price numeric(10, 2) NOT NULL, note text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS {target} (
    id bigint PRIMARY KEY, customer text NOT NULL, country char(2) NOT NULL,
    total_cents bigint NOT NULL, note text NOT NULL, ordered_on date NOT NULL
)
"""

FILL = """
INSERT INTO {source}
SELECT n, 'Customer.' || mod(n, 5000) || '@Example.com',
       (ARRAY['fr', ' FRA', 'France', 'de', 'DEU ', 'us', 'USA', 'gb'])[1 + mod(n, 8)],
       1 + mod(n, 7), mod(n * 37, 10000) / 100.0, 'Livraison  très   rapide, merci ! #' || n,
       timestamptz '2024-01-01 00:00+00' + n * interval '1 minute'
FROM generate_series((SELECT coalesce(max(id), 0) + 1 FROM {source}), %s) AS n
"""


def prepare(url: str, rows: int) -> int:
    """Create both tables if needed and add orders up to id *rows*; return how many were added."""
    names = {"source": sql.Identifier(SOURCE), "target": sql.Identifier(TARGET)}
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql.SQL(SCHEMA).format(**names))
        return connection.execute(sql.SQL(FILL).format(**names), [rows]).rowcount


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL"), help="$DATABASE_URL")
    parser.add_argument("--rows", type=int, default=20_000, help="orders in the source (20000)")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args(argv)
    if not args.url:
        print(
            "postgres_etl.py needs a PostgreSQL database: pass --url postgresql://... or set "
            "DATABASE_URL.\nA throwaway one: docker run --rm -e POSTGRES_PASSWORD=pw -p "
            "5432:5432 postgres, then --url postgresql://postgres:pw@localhost/postgres"
        )
        return
    added = prepare(args.url, args.rows)
    started = time.perf_counter()
    graph = build_graph(args.url)
    # Checkpoints in the same database, committed every 10,000 rows (or second), not every 100.
    result = fg.run(graph, backend=args.backend, state=args.url, checkpoint_every=10_000)
    seconds = time.perf_counter() - started
    read = result.statistics["orders"].items_out
    print(f"{added} new orders in {SOURCE!r}; read {read} through a server-side cursor")
    print(f"loaded {read} rows into {TARGET!r} in {seconds:.2f}s: {read / seconds:,.0f} rows/s")


if __name__ == "__main__":
    main()
