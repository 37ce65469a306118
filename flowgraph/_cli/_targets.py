"""Turn a command-line TARGET (``module:attr`` or ``file.py:attr``) into a graph.

Every way a target can fail to load (malformed, not found, failing on import
or in its factory, a missing attribute, not a graph) is a :class:`UsageError`
whose message names the problem in the user's terms; the underlying exception
is chained, so that ``--traceback`` can show it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any

from .._core import Graph, GraphError, describe_error
from ._args import UsageError


def load_graph(target: str, *, validate: bool = True) -> Graph:
    """Import *target* (``module:attr`` or ``file.py:attr``) and return the graph it names.

    ``attr`` may be dotted, and may name a zero-argument callable that returns
    the graph. Like ``python -m``, a module target is imported with the current
    directory on ``sys.path``; like ``python file.py``, a file target is loaded
    with its own directory on ``sys.path``. With *validate*, a graph that
    cannot run (a node wired to nothing) is refused here, as a cycle is when
    the module declares it: both are mistakes in the target, before anything runs.

    Raises:
        UsageError: naming the problem: malformed target, module or file not
            found, import failure, missing attribute, not a graph, or (with
            *validate*) a graph that cannot run.
    """
    graph = _load(target)
    if validate:
        try:
            graph.validate()
        except GraphError as exc:
            raise UsageError(f"{target!r} cannot run: {exc}") from exc
    return graph


def _load(target: str) -> Graph:
    where, sep, attr = target.rpartition(":")
    if not sep or not where or not attr:
        raise UsageError(
            f"target {target!r} must be 'package.module:attr' or 'path/to/file.py:attr'"
        )
    module = _load_file(where) if _is_path(where) else _load_module(where)
    obj: Any = module
    walked: list[str] = []
    for part in attr.split("."):
        if not part.isidentifier() or not hasattr(obj, part):
            owner = ":".join([where, ".".join(walked)]) if walked else where
            raise UsageError(f"{owner!r} has no attribute {part!r}")
        obj = getattr(obj, part)
        walked.append(part)
    if isinstance(obj, Graph):
        return obj
    if not callable(obj):
        raise UsageError(f"{target!r} is not a flowgraph.Graph (got {type(obj).__name__})")
    try:
        inspect.signature(obj).bind()
    except TypeError:
        raise UsageError(
            f"{target!r} must be a flowgraph.Graph or a function that takes no arguments "
            "and returns one"
        ) from None
    except ValueError:  # no signature (some builtins): let the call decide
        pass
    try:
        built = obj()
    except Exception as exc:
        raise UsageError(f"{target!r} raised {describe_error(exc)}") from exc
    if not isinstance(built, Graph):
        raise UsageError(f"{target!r} returned {type(built).__name__}, not a flowgraph.Graph")
    return built


def _is_path(where: str) -> bool:
    return where.endswith(".py") or os.sep in where or "/" in where


def _load_module(name: str) -> Any:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # Only a missing target module is a usage error; a missing dependency of it
        # is an import failure, reported below with its own name.
        if exc.name is not None and (name == exc.name or name.startswith(f"{exc.name}.")):
            raise UsageError(f"cannot import {name!r}: no module named {exc.name!r}") from None
        raise UsageError(f"cannot import {name!r}: {describe_error(exc)}") from exc
    except Exception as exc:
        raise UsageError(f"cannot import {name!r}: {describe_error(exc)}") from exc


def _load_file(where: str) -> Any:
    path = Path(where)
    if not path.is_file():
        raise UsageError(f"no such file: {where!r}")
    # Never "__main__": loading must not run the file's `if __name__ == "__main__":` block.
    module_name = path.stem
    if not module_name.isidentifier() or module_name in sys.modules:
        module_name = "__flowgraph_target__"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {where!r}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    directory = str(path.resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    # Registered before running, so that dataclasses, pickling and the like find it.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise UsageError(f"cannot import {where!r}: {describe_error(exc)}") from exc
    return module
