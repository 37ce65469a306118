"""HTTP helpers for pipelines on httpx: one client per run, a paginated source, a fetch transform.

:class:`HTTPClient` opens one ``httpx.AsyncClient`` per run and closes it when
the run ends; :func:`paginate` walks a paginated endpoint in a source, retrying
each page itself (a source that raises fails the run), several pages at a time
when their numbers are known; :func:`fetch` builds a transform whose errors
(``raise_for_status``) the node's ``Retry`` sees, with their ``Retry-After``;
:func:`is_transient` says which errors to retry.

Requires httpx: ``pip install 'flowgraph[http]'``. Added in 0.1.
"""

from __future__ import annotations

try:
    import httpx  # noqa: F401 - fail here, naming the extra, before any submodule
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError("flowgraph.http needs httpx: pip install 'flowgraph[http]'") from exc

from ._client import ClientLike as ClientLike
from ._client import HTTPClient as HTTPClient
from ._fetch import Decode as Decode
from ._fetch import fetch as fetch
from ._fetch import is_transient as is_transient
from ._pages import Cursors as Cursors
from ._pages import NextLinks as NextLinks
from ._pages import Offsets as Offsets
from ._pages import PageNumbers as PageNumbers
from ._pages import Pagination as Pagination
from ._pages import Style as Style
from ._paginate import paginate as paginate

__all__ = [
    "Cursors",
    "HTTPClient",
    "NextLinks",
    "Offsets",
    "PageNumbers",
    "fetch",
    "is_transient",
    "paginate",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("flowgraph.http."):
        _obj.__module__ = "flowgraph.http"
del _name, _obj
