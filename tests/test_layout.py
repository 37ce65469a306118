"""The package's rooms import one way (docs/architecture.md): no import points up, no circles."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "flowgraph"

# Each room, and the rooms it may import (besides itself).
RANK = {
    "_core": 0,
    "_stores": 1,
    "_policies": 2,
    "_executors": 2,
    "_sources": 3,
    "_sinks": 3,
    "_runner": 4,
    "http": 5,
    "prometheus": 5,
    "testing": 5,
    "__init__": 6,
    "_cli": 7,
    "__main__": 8,
}
MAX_LINES = 400
# Modules allowed over MAX_LINES, each with the reason.
LONG_MODULES: dict[str, str] = {}


def _room(module: str) -> str:
    """``flowgraph._core._run`` -> ``_core``; ``flowgraph`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every flowgraph module *path* imports, at any depth (inside functions and TYPE_CHECKING)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "flowgraph")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] == "flowgraph":
                found.add(target)
    return found


@functools.cache
def _modules() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_belongs_to_a_room() -> None:
    """A new top-level module or package must be placed in the layout on purpose."""
    rooms = {_room(name) for name in _modules()}
    assert rooms <= set(RANK), f"unplaced: {sorted(rooms - set(RANK))}"


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_point_down(module: str) -> None:
    """No room imports a room above it (docs/architecture.md, "What may import what")."""
    room = _room(module)
    up = [
        target
        for target in _modules()[module]
        if _room(target) != room and RANK[_room(target)] >= RANK[room]
    ]
    assert not up, f"{module} imports {up}, above or beside {room}"


def test_no_circle_between_rooms() -> None:
    """Rooms form a DAG: following imports between rooms never comes back."""
    graph: dict[str, set[str]] = {}
    for module, targets in _modules().items():
        graph.setdefault(_room(module), set()).update(
            _room(t) for t in targets if _room(t) != _room(module)
        )
    visiting: list[str] = []
    done: set[str] = set()

    def visit(room: str) -> None:
        assert room not in visiting, f"circle: {' -> '.join([*visiting, room])}"
        if room in done:
            return
        visiting.append(room)
        for target in graph.get(room, ()):
            visit(target)
        visiting.pop()
        done.add(room)

    for room in graph:
        visit(room)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_modules_stay_readable(path: Path) -> None:
    """No module grows past ~400 lines without a stated reason."""
    name = _module_name(path)
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES or name in LONG_MODULES, f"{name} has {lines} lines"


def test_the_map_names_every_module_of_the_engine() -> None:
    """docs/architecture.md's table of `_core/` is the map: a new engine module joins it."""
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    engine = sorted(p.name for p in (PACKAGE / "_core").glob("_*.py") if p.name != "__init__.py")
    assert [name for name in engine if f"`{name}`" not in page] == []
