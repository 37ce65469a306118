"""State stores: where checkpoints and dead letters outlive a run (SQLite, PostgreSQL).

Rooms: ``_protocol`` (what a store does), ``_codec`` (how values are written
and checked when read back), ``_sql`` (the SQL both databases share),
``_retry`` (backoff on transient errors), ``_sqlite`` and ``_postgres`` (how
each connects, and its lease), ``_filelock`` (the OS lock behind a SQLite
lease), ``_open`` (a URL to an open store), and on top ``_checkpoints`` and
``_dead_letters``, the two things users keep in a store.
"""

from ._checkpoints import Checkpoints
from ._codec import qualified_name
from ._dead_letters import DeadLetters, ReplayResult
from ._open import StoreRef, UsesStore, open_store, parse_store_url, target_repr
from ._protocol import DeadLetter, JSONValue, Serializer, StateStore

__all__ = [
    "Checkpoints",
    "DeadLetter",
    "DeadLetters",
    "JSONValue",
    "ReplayResult",
    "Serializer",
    "StateStore",
    "StoreRef",
    "UsesStore",
    "open_store",
    "parse_store_url",
    "qualified_name",
    "target_repr",
]
