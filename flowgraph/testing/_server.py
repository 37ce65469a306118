"""open_server: serve any ASGI app, a FakeAPI for one, on a free loopback port with hypercorn."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import quote

import anyio
import httpx

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application."""

_logger = logging.getLogger("flowgraph.testing.server")
_GRACE = 1.0  # seconds open connections get to finish when a served app stops
_SHUTDOWN_LIMIT = _GRACE + 4.0  # seconds after which a server that has not stopped is cancelled


async def read_request(scope: Scope, receive: Receive) -> httpx.Request | None:
    """The ``httpx.Request`` of an ASGI ``http`` scope, body included; ``None`` on disconnect."""
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    headers = dict(scope.get("headers", []))
    host = headers.get(b"host", b"").decode("latin-1")
    if not host and scope.get("server"):
        server_host, port = scope["server"]
        host = f"{server_host}:{port}"
    path = quote(scope.get("root_path", "") + scope["path"])
    query = scope.get("query_string", b"").decode("latin-1")
    url = f"{scope.get('scheme', 'http')}://{host or 'localhost'}{path}"
    url += f"?{query}" if query else ""
    return httpx.Request(scope["method"], url, headers=list(scope.get("headers", [])), content=body)


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer the ASGI lifespan protocol: start up and shut down at once."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


@asynccontextmanager
async def open_server(app: ASGIApp, *, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve the ASGI *app* with hypercorn on a free port of *host*; yield its base URL.

    The socket is bound and listening before the block starts, so requests made
    at once succeed. Works on asyncio and trio (hypercorn supports both). On
    exit, whether the block ends, raises or is cancelled, the server shuts down
    gracefully, giving open connections up to one second to finish; an exception
    from the block then propagates unchanged, not wrapped in an ExceptionGroup.
    Use real time: over a real socket a virtual clock would fire timeouts early.
    Server-side errors are logged to the ``flowgraph.testing.server`` logger.

    Yields:
        The base URL, e.g. ``"http://127.0.0.1:54321"``.

    Raises:
        OSError: if the address cannot be bound.
    """
    from hypercorn.config import Config

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        sock.listen()
        port = sock.getsockname()[1]
        config = Config()
        # hypercorn adopts the descriptor and closes it at shutdown.
        config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = _logger
    config.graceful_timeout = _GRACE
    shutdown = anyio.Event()
    # hypercorn's asyncio server breaks if cancelled with connections open, so it runs
    # shielded and always stops through *shutdown*; the deadline only bounds a hang.
    server_scope = anyio.CancelScope(shield=True)
    error: BaseException | None = None
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_serve, app, config, shutdown, server_scope)
        try:
            yield f"http://{f'[{host}]' if family == socket.AF_INET6 else host}:{port}"
        except BaseException as exc:
            # Re-raised below, outside the task group, so it is not wrapped in an ExceptionGroup.
            error = exc
        finally:
            shutdown.set()
            server_scope.deadline = anyio.current_time() + _SHUTDOWN_LIMIT
    if error is not None:
        raise error


async def _serve(
    app: ASGIApp, config: Any, shutdown: anyio.Event, scope: anyio.CancelScope
) -> None:
    import sniffio

    with scope:
        if sniffio.current_async_library() == "trio":
            from hypercorn.trio import serve as serve_trio

            await serve_trio(cast("Any", app), config, shutdown_trigger=shutdown.wait, mode="asgi")
        else:
            from hypercorn.asyncio import serve as serve_asyncio

            await serve_asyncio(
                cast("Any", app), config, shutdown_trigger=shutdown.wait, mode="asgi"
            )
