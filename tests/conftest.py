from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.register_profile("ci", parent=settings.get_profile("default"), max_examples=50)
settings.load_profile("ci" if os.environ.get("CI") else "default")

_BACKENDS = ["asyncio", "trio"] if importlib.util.find_spec("trio") is not None else ["asyncio"]


@pytest.fixture(params=[(name, {}) for name in _BACKENDS], ids=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    """Run every async test on asyncio and on trio."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Run a test that starts its own event loops once with each backend's name."""
    return request.param  # type: ignore[no-any-return]


# --- state stores: a throwaway PostgreSQL server (tests/postgres_server.py) ---
pytest_plugins = ["postgres_server", "clusters"]


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for an empty database of each kind: a fresh SQLite file, a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data.db'}"
    url: str = request.getfixturevalue("postgres_schema_url")
    return url
