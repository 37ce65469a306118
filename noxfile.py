"""Development tasks: `nox -s tests`, `nox -s lint`, `nox -s typing`, `nox -s docs`, `bench`."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typing"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.11", "3.12", "3.13", "3.14"]


@nox.session(python=PYTHONS)
@nox.parametrize("extras", ["test", "no-trio"])
def tests(session: nox.Session, extras: str) -> None:
    """Run the test suite; every async test runs on asyncio and on trio (unless no-trio)."""
    session.install("-e", ".[test]")
    if extras == "no-trio":
        session.run("pip", "uninstall", "-y", "trio", external=False)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[test]", "mypy==2.4.1")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site, failing on warnings."""
    session.install("-e", ".", "mkdocs-material", "mkdocstrings[python]")
    session.run("mkdocs", "build", "--strict")


@nox.session
def bench(session: nox.Session) -> None:
    """Compare flowgraph with hand-written anyio code on both backends."""
    session.install("-e", ".[trio]")
    session.run("python", "benchmarks/bench_core.py", *session.posargs)
