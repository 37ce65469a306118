"""The public façade: one sorted __all__, every public name defined once, in the flowgraph module."""

from __future__ import annotations

import pickle
import types
from pathlib import Path

import pytest

import flowgraph as fg


def test_all_is_sorted() -> None:
    """__all__ is kept sorted."""
    assert fg.__all__ == sorted(fg.__all__)


def test_all_matches_public_names() -> None:
    """Every public name is exported and every export exists."""
    public = {
        name
        for name, value in vars(fg).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(fg.__all__) == public - {"annotations"}


def test_exports_claim_the_flowgraph_module() -> None:
    """Exported classes report flowgraph as their module, as users import them."""
    for name in fg.__all__:
        obj = getattr(fg, name)
        if isinstance(obj, type):
            assert obj.__module__ == "flowgraph", name


@pytest.mark.parametrize(
    "error",
    [
        fg.FlowgraphError("x"),
        fg.GraphError("bad graph"),
        fg.StoreError("disk"),
        fg.NodeError("fetch", {"page": 3}, 5, cause="ReadTimeout"),
        fg.NodeError.for_source("pages", 2, OSError("gone")),
    ],
    ids=lambda e: type(e).__name__,
)
def test_public_exceptions_pickle(error: Exception) -> None:
    """Errors survive a round trip through pickle (process pools, Dask)."""
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert str(clone) == str(error)
    assert vars(clone) == vars(error)


def test_node_error_message_names_attempts() -> None:
    """NodeError says how many attempts were made when there were several."""
    error = fg.NodeError("fetch", 17, 5, cause="ReadTimeout")
    assert str(error) == "node 'fetch' failed on item 17 after 5 attempts; last error: ReadTimeout"


def test_node_error_bounds_huge_items() -> None:
    """A huge item is abbreviated in the message."""
    error = fg.NodeError("parse", "x" * 10_000)
    assert len(str(error)) < 150


def test_node_error_bounds_nested_items() -> None:
    """A list of dicts is abbreviated too, not only long strings."""
    item = [{"id": i, "payload": "x" * 50, "tags": list(range(20))} for i in range(50)]
    assert len(str(fg.NodeError("parse", item))) < 200


def test_the_version_is_written_once() -> None:
    """The package's metadata takes its version from ``flowgraph.__version__`` (hatch)."""
    import importlib.metadata

    assert importlib.metadata.version("flowgraph") == fg.__version__
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert "\nversion =" not in pyproject
