"""Sync nodes on a Ray cluster: ``executor=fg.Ray(...)`` (``flowgraph[ray]``).

Each call is one Ray task (``ray.remote(fn).remote(item)``); the node's
``workers`` bound the tasks it has outstanding. Ray completes each task's
``ObjectRef.future()`` from its own callback thread, which hands the result
to the run's inbox: no thread waits for a task.

A worker process that dies is Ray's business: the task is retried up to its
``max_retries`` (3 unless ``options`` say otherwise), then fails with
``WorkerCrashedError``, which fails the item like any error. An exception
raised by the function comes back as itself, the remote traceback as its
cause. A call given up on (its timeout passed) has its task cancelled with
``ray.cancel``; a task that ignores that for :data:`FORCE_AFTER` seconds (a
sync function blocked in C code or in ``time.sleep``) is cancelled with
``force=True``, which kills the worker process running it.
"""

from __future__ import annotations

import inspect
import threading
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, final

import anyio.to_thread

from .._core._exceptions import GraphError, describe_error
from ._pickling import RemoteTraceback
from ._remote import BoundRemote

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping

FORCE_AFTER = 0.5
"""Seconds a cancelled Ray task has to end before it is cancelled with ``force=True``."""


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError("fg.Ray needs ray: pip install 'flowgraph[ray]'") from exc
    return ray


@final
class Ray:
    """Run a node's calls as Ray tasks: ``executor=fg.Ray()``.

    Uses the Ray this process is already connected to, if any; otherwise
    connects on first use with ``ray.init(address, **init_options)`` (no
    address: a local Ray, started for this process) and :meth:`close`
    disconnects. One object may serve several nodes and runs.

    Args:
        address: a Ray cluster's address (``"ray://head:10001"``, ``"auto"``),
            or ``None`` for an already connected or a new local Ray.
        options: ``ray.remote`` options for each node's tasks (``num_cpus``,
            ``max_retries``, ``resources``...).
        **init_options: passed to ``ray.init`` when this object connects.

    Raises:
        ImportError: if ray is not installed.

    Added in 0.2.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        options: Mapping[str, Any] | None = None,
        **init_options: Any,
    ) -> None:
        self._ray = _import_ray()
        self.address = address
        self.options = dict(options or {})
        self.init_options = init_options
        self._lock = threading.Lock()
        self._connected = False

    def __repr__(self) -> str:
        arguments = [repr(self.address)] if self.address is not None else []
        if self.options:
            arguments.append(f"options={self.options!r}")
        arguments += [f"{key}={value!r}" for key, value in self.init_options.items()]
        return f"Ray({', '.join(arguments)})"

    def check(self, fn: Callable[..., Any], *, node: str) -> None:
        """Refuse a function that Ray's cloudpickle cannot send to the cluster."""
        try:
            self._ray.cloudpickle.dumps(fn)
        except Exception as exc:
            raise GraphError(
                f"node {node!r} runs on Ray, but its function cannot be pickled "
                f"({describe_error(exc)})"
            ) from exc

    def connect(self) -> None:
        """Connect to Ray unless this process already is (blocking)."""
        with self._lock:
            if not self._ray.is_initialized():
                self._ray.init(self.address, **self.init_options)
                self._connected = True

    @asynccontextmanager
    async def bind(
        self, fn: Callable[[Any], Any], *, node: str, workers: int
    ) -> AsyncIterator[BoundRay]:
        """Serve one node for one run; force-cancel its tasks still running at the end."""
        ray = self._ray
        if not ray.is_initialized():
            await anyio.to_thread.run_sync(self.connect)
        if not inspect.isfunction(fn):
            fn = _as_function(fn)  # ray.remote takes functions only, not partials or objects
        remote = ray.remote(**self.options)(fn) if self.options else ray.remote(fn)
        bound = BoundRay(ray, remote, node)
        try:
            yield bound
        finally:
            await bound.wait_idle()
            for ref in list(bound.running):
                ray.cancel(ref, force=True)

    def close(self) -> None:
        """Disconnect from Ray (shutting down a local Ray) if this object connected."""
        with self._lock:
            if self._connected:
                self._connected = False
                self._ray.shutdown()


def _own_error(error: BaseException, task_error: type[BaseException]) -> Exception:
    """The function's own exception, as the process executor gives it, for a task's error."""
    cause = getattr(error, "cause", None) if isinstance(error, task_error) else None
    if isinstance(cause, Exception):
        cause.__cause__ = RemoteTraceback(str(error))
        return cause
    if isinstance(error, Exception):
        return error
    return RuntimeError(f"the Ray task ended with {describe_error(error)}")


def _as_function(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def call(item: Any) -> Any:
        return fn(item)

    call.__name__ = call.__qualname__ = getattr(fn, "__name__", type(fn).__name__)
    return call


@final
class BoundRay(BoundRemote[Any]):
    """A node's calls to Ray during one run: ``await call(item)``."""

    def __init__(self, ray: Any, remote: Any, node: str) -> None:
        super().__init__(node)
        self.ray = ray
        self.remote = remote
        self.running: dict[Any, None] = {}  # tasks given up on that have not ended yet

    def start(self, item: Any, deliver: Callable[[bool, Any], None]) -> Any:
        ref = self.remote.remote(item)
        task_error = self.ray.exceptions.RayTaskError

        def done(future: Any) -> None:
            self.running.pop(ref, None)
            try:
                value = future.result()
            except BaseException as exc:
                deliver(False, _own_error(exc, task_error))
            else:
                deliver(True, value)

        ref.future().add_done_callback(done)
        return ref

    def cancel(self, handle: Any) -> None:
        self.ray.cancel(handle)
        self.running[handle] = None
        timer = threading.Timer(FORCE_AFTER, self._force, (handle,))
        timer.daemon = True
        timer.start()

    def _force(self, ref: Any) -> None:
        """In a timer thread: the task ignored ``ray.cancel``; kill the process running it."""
        ready, _ = self.ray.wait([ref], timeout=0)
        if not ready:
            self.ray.cancel(ref, force=True)
