"""Executors: where a node's sync work runs besides the event loop and threads.

Worker processes (:class:`Processes`, registered as ``executor="processes"``),
a Dask cluster (:class:`Dask`, ``flowgraph[dask]``) and a Ray cluster
(:class:`Ray`, ``flowgraph[ray]``), each behind the engine's ``Executor``
protocol (``_core/_executor``). Dask and Ray are imported only when one of
them is created.
"""

from .._core._executor import register_executor
from ._dask import Dask
from ._processes import Processes
from ._ray import Ray

register_executor("processes", Processes)

__all__ = ["Dask", "Processes", "Ray"]
