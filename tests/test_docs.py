"""Every code block of README.md and docs/**/*.md runs as written, so that no page can rot.

Each page is a Sybil document, its blocks evaluated in order in one namespace (a
module of its own), in a fresh working directory:

* ```python blocks run. A block with a top-level ``await`` runs in the page's event
  loop, and a page that has such blocks runs twice: once on asyncio, once on trio.
* A block whose first line is ``# path/to/file.ext`` (``# conftest.py``,
  ``# crawler.py``, ``# pyproject.toml``) is also a file: it is written to that path
  in the working directory (a python one runs in the page's namespace too), so
  that later blocks can import it and the page's tests can use it.
* A page that shows its pytest set-up (a ``# conftest.py`` or ``# pyproject.toml``
  block) then has the ``test_*`` functions it defines run by pytest, in a directory
  holding the page's files, as they would run for a reader who pasted them.
* ```bash and ```console blocks are not run, but each ``flowgraph ...`` command line
  in them must parse with the real argument parser, and each
  ``pip install 'flowgraph[extra]'`` must name extras that exist.
* ``<!-- skip: next "reason" -->`` skips the next block, for a block that needs a
  real remote service. The reason is required, and such skips should stay rare.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
import shlex
import subprocess
import sys
import textwrap
import threading
import types
import unittest
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest
from sybil import Document, Example
from sybil.evaluators.skip import Skipper
from sybil.parsers.markdown import CodeBlockParser, SkipParser

from flowgraph._cli import build_parser

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BACKENDS = ["asyncio", "trio"] if importlib.util.find_spec("trio") else ["asyncio"]

FILE_HEADER = re.compile(r"#\s*(?P<path>[\w./-]+\.(?:py|toml|ini|cfg))\b")
"""The first line of a block that is also a file: ``# crawler.py: the code under test``."""

PIP_EXTRAS = re.compile(r"^(?:flowgraph|\.)\[(?P<extras>[\w,-]+)\]$")
"""An install argument naming extras: ``flowgraph[http,cli]``, or ``.[test]`` in a clone."""


# -- reading pages ----------------------------------------------------------------------


def parse(page: Path, runner: PageRunner | None = None) -> Document:
    """The page as a Sybil document: python blocks, command lines and skips."""
    run_python = runner.run_python if runner else _never
    parsers: list[Callable[[Document], Any]] = [
        CodeBlockParser(language="python", evaluator=run_python),
        CodeBlockParser(language="toml", evaluator=runner.write_toml if runner else _never),
        CodeBlockParser(language="bash", evaluator=check_commands),
        CodeBlockParser(language="console", evaluator=check_console),
        SkipParser(),
    ]
    return Document.parse(str(page), *parsers)


def _never(example: Example) -> None:
    raise AssertionError("a page parsed for inspection is never evaluated")


def _is_python(example: Example) -> bool:
    return example.region.lexemes.get("arguments") == "python"


def compile_block(example: Example) -> types.CodeType:
    """Compile a python block, top-level ``await`` allowed, with the page's line numbers."""
    source = "\n" * (example.line + example.parsed.line_offset) + str(example.parsed)
    code: types.CodeType = compile(
        source, example.path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    return code


def awaits(page: Path) -> bool:
    """Whether a python block of *page* has a top-level ``await``."""
    for example in parse(page):
        if _is_python(example):
            try:
                code = compile_block(example)
            except SyntaxError:
                continue  # reported when the page runs
            if code.co_flags & inspect.CO_COROUTINE:
                return True
    return False


def uses_trio(page: Path) -> bool:
    """Whether a python block of *page* names the trio backend."""
    return any(_is_python(example) and '"trio"' in str(example.parsed) for example in parse(page))


def page_runs() -> Iterator[Any]:
    for page in PAGES:
        name = page.relative_to(ROOT).as_posix()
        if awaits(page):
            for backend in BACKENDS:
                yield pytest.param(page, backend, id=f"{name}-{backend}")
        else:
            yield pytest.param(page, None, id=name)


# -- running pages ----------------------------------------------------------------------


@dataclass
class PageRunner:
    """Evaluates the blocks of one page in its working directory and event loop."""

    workdir: Path
    portal: anyio.from_thread.BlockingPortal | None
    files: list[Path] = field(default_factory=list)

    def run_python(self, example: Example) -> None:
        code = compile_block(example)
        self.write_file(example)
        if code.co_flags & inspect.CO_COROUTINE:
            assert self.portal is not None
            self.portal.call(_await_block, code, example.namespace)
        else:
            exec(code, example.namespace)

    def write_file(self, example: Example) -> bool:
        """Write a block headed ``# path`` to that file; say whether it was one."""
        source = str(example.parsed)
        header = FILE_HEADER.match(source.partition("\n")[0])
        if header is None:
            return False
        path = self.workdir / header["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
        self.files.append(path)
        return True

    def write_toml(self, example: Example) -> None:
        self.write_file(example)  # a fragment without a '# path' header is only shown


async def _await_block(code: types.CodeType, namespace: dict[str, Any]) -> None:
    await eval(code, namespace)


def check_console(example: Example) -> None:
    """The ``$ ...`` lines of a console block, checked as bash."""
    commands = [line[2:] for line in _logical_lines(str(example.parsed)) if line.startswith("$ ")]
    _check_command_lines(commands)


def check_commands(example: Example) -> None:
    _check_command_lines(_logical_lines(str(example.parsed)))


def _logical_lines(text: str) -> list[str]:
    return text.replace("\\\n", " ").splitlines()


def _check_command_lines(lines: list[str]) -> None:
    for line in lines:
        for words in _commands(line):
            program = Path(words[0]).name if words else ""
            if program == "flowgraph":
                _check_flowgraph_arguments(words[1:])
            elif words[:3] == ["python", "-m", "flowgraph"]:
                _check_flowgraph_arguments(words[3:])
            elif program in {"pip", "pip3"} and words[1:2] == ["install"]:
                _check_extras(words[2:])


def _commands(line: str) -> Iterator[list[str]]:
    """The simple commands of a shell line, split at ``&&``, ``;``, ``|`` and redirections."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words: list[str] = []
    redirected = False
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&"}:
            yield words
            words, redirected = [], False
        elif token in {">", ">>", "<", "2>"}:
            redirected = True
        elif not redirected:
            words.append(token)
    yield words


def _check_flowgraph_arguments(arguments: list[str]) -> None:
    try:
        build_parser().parse_args(arguments)
    except SystemExit as exit:
        if exit.code != 0:
            raise AssertionError(f"flowgraph {shlex.join(arguments)}: rejected") from None


def _check_extras(arguments: list[str]) -> None:
    known = set(importlib.metadata.metadata("flowgraph").get_all("Provides-Extra") or [])
    for argument in arguments:
        match = PIP_EXTRAS.match(argument)
        wanted = match["extras"].split(",") if match else []
        assert set(wanted) <= known, f"pip install {argument}: no such extra"


@contextlib.contextmanager
def page_module(page: Path) -> Iterator[types.ModuleType]:
    """A module whose namespace is the page's, registered so that pickle and pytest find it."""
    docs = ROOT / "docs"
    where = page.relative_to(docs).with_suffix("") if page.is_relative_to(docs) else page.stem
    name = "docs_" + re.sub(r"\W", "_", str(where).lower())
    module = types.ModuleType(name)
    module.__file__ = str(page)
    sys.modules[name] = module
    try:
        yield module
    finally:
        del sys.modules[name]


@contextlib.contextmanager
def isolated(workdir: Path) -> Iterator[None]:
    """Run in *workdir*, importable, and forget the modules imported from it afterwards."""
    saved_path = list(sys.path)
    sys.path.insert(0, str(workdir))
    try:
        with contextlib.chdir(workdir):
            yield
    finally:
        sys.path[:] = saved_path
        for name, module in list(sys.modules.items()):
            if Path(getattr(module, "__file__", None) or "/").is_relative_to(workdir):
                del sys.modules[name]


@contextlib.contextmanager
def running_page(page: Path, backend: str | None, workdir: Path) -> Iterator[PageRun]:
    """Evaluate every block of *page* in order; the page's module lives until the block ends."""
    with contextlib.ExitStack() as stack:
        portal = None
        if backend is not None:
            portal = stack.enter_context(anyio.from_thread.start_blocking_portal(backend))
        runner = PageRunner(workdir, portal)
        document = parse(page, runner)
        module = stack.enter_context(page_module(page))
        document.namespace = module.__dict__
        run = PageRun(module, runner.files)
        with isolated(workdir):
            for example in document.examples():
                run.evaluate(example)
        yield run


@dataclass
class PageRun:
    """What running a page left: its module, the files it wrote, the blocks it skipped."""

    module: types.ModuleType
    files: list[Path]
    skipped: list[str] = field(default_factory=list)

    def evaluate(self, example: Example) -> None:
        page = Path(example.path).name
        if isinstance(example.region.evaluator, Skipper):
            action, reason = example.parsed
            assert reason, f"{page}, line {example.line}: 'skip: {action}' needs a reason"
        try:
            example.evaluate()
        except unittest.SkipTest as skip:
            self.skipped.append(f"line {example.line}: {skip}")
        except BaseException as exc:
            exc.add_note(f"in the block of {page} at line {example.line}")
            raise

    @property
    def shows_pytest_set_up(self) -> bool:
        return any(path.name in ("conftest.py", "pyproject.toml") for path in self.files)

    @property
    def tests(self) -> list[str]:
        return [
            name
            for name, value in vars(self.module).items()
            if name.startswith("test_") and callable(value)
        ]

    def run_tests(self, pytester: pytest.Pytester, workdir: Path) -> None:
        """Run the page's tests with pytest, next to the files the page wrote."""
        for path in self.files:
            target = pytester.path / path.relative_to(workdir)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text())
        pytester.makepyfile(test_page=f"from {self.module.__name__} import *\n")
        result = pytester.runpytest("-p", "no:cacheprovider")
        outcomes = result.parseoutcomes()
        assert result.ret == pytest.ExitCode.OK, result.stdout.str()
        assert outcomes.get("passed", 0) >= len(self.tests), result.stdout.str()


@pytest.mark.parametrize(("page", "backend"), list(page_runs()))
def test_page_runs(
    page: Path, backend: str | None, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Every block of the page runs in order, in one namespace, in a fresh directory.

    The page's own tests, if it defines some, then pass under pytest.
    """
    if "trio" not in BACKENDS and uses_trio(page):
        pytest.skip("the page runs code on trio, which is not installed")
    with running_page(page, backend, tmp_path) as run:
        if run.tests and run.shows_pytest_set_up and backend in (None, BACKENDS[0]):
            run.run_tests(request.getfixturevalue("pytester"), tmp_path)
    if run.skipped:
        print(f"{page.name}: skipped", *run.skipped, sep="\n  ")


def test_index_is_the_readme() -> None:
    """The site's home page is the README, with links relative to docs/."""
    readme = (ROOT / "README.md").read_text()
    assert (ROOT / "docs" / "index.md").read_text() == readme.replace("](docs/", "](")


# -- the harness itself ---------------------------------------------------------------


def write_page(tmp_path: Path, text: str) -> Path:
    page = tmp_path / "page.md"
    page.write_text(textwrap.dedent(text).replace("~~~", "```"))
    return page


def run_page(page: Path, backend: str | None, workdir: Path) -> PageRun:
    workdir.mkdir()
    with running_page(page, backend, workdir) as run:
        return run


@pytest.mark.parametrize("backend", BACKENDS)
def test_top_level_await_runs_in_the_pages_loop(tmp_path: Path, backend: str) -> None:
    """Blocks share one namespace; those with ``await`` run in one event loop of the backend."""
    page = write_page(
        tmp_path,
        """
        ~~~python
        import threading
        import anyio, sniffio
        seen = [("sync", threading.get_ident())]
        ~~~

        ~~~python
        await anyio.sleep(0)
        seen.append((sniffio.current_async_library(), threading.get_ident()))
        ~~~

        ~~~python
        seen.append((sniffio.current_async_library(), threading.get_ident()))
        await anyio.sleep(0)
        ~~~
        """,
    )
    run = run_page(page, backend, tmp_path / "work")
    (_, main), (first, loop), (second, same) = run.module.seen
    assert (first, second) == (backend, backend)
    assert main == threading.get_ident() != loop == same


def test_a_failing_block_names_its_line(tmp_path: Path) -> None:
    """An error in a block propagates with a note naming the page and the block's line."""
    page = write_page(tmp_path, "Text.\n\n~~~python\nx = 1\n~~~\n\n~~~python\n1 / 0\n~~~\n")
    with pytest.raises(ZeroDivisionError) as caught:
        run_page(page, None, tmp_path / "work")
    assert caught.value.__notes__ == ["in the block of page.md at line 7"]


def test_file_blocks_are_written_and_importable(tmp_path: Path) -> None:
    """A block headed ``# name.py`` becomes a file in the working directory, not a statement."""
    page = write_page(
        tmp_path,
        """
        ~~~python
        # helpers.py: a module of the reader's project
        VALUE = 42
        ~~~

        ~~~python
        import os
        from helpers import VALUE
        where = os.getcwd()
        ~~~
        """,
    )
    run = run_page(page, None, tmp_path / "work")
    assert (run.module.VALUE, run.module.where) == (42, str(tmp_path / "work"))
    assert "helpers" not in sys.modules  # forgotten with the working directory


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            "~~~bash\nflowgraph run graphs:graph --grace=-1\n~~~",
            "flowgraph run graphs:graph --grace=-1: rejected",
        ),
        ("~~~console\n$ flowgraph shwo x:y | dot\n~~~", "flowgraph shwo x:y: rejected"),
        (
            "~~~bash\npip install 'flowgraph[htttp]'\n~~~",
            "pip install flowgraph[htttp]: no such extra",
        ),
    ],
)
def test_command_lines_are_checked(tmp_path: Path, block: str, message: str) -> None:
    """A ``flowgraph`` command the parser rejects, or an unknown extra, fails the page."""
    page = write_page(tmp_path, block)
    with pytest.raises(AssertionError, match=f"^{re.escape(message)}"):
        run_page(page, None, tmp_path / "work")


def test_a_skip_needs_a_reason(tmp_path: Path) -> None:
    """``<!-- skip: next "reason" -->`` skips the next block; a bare skip is refused."""
    skipping = '<!-- skip: next "needs a real server" -->\n~~~python\n1 / 0\n~~~\n'
    run = run_page(write_page(tmp_path, skipping), None, tmp_path / "work")
    assert run.skipped == ["line 2: needs a real server"]
    bare = write_page(tmp_path, "<!-- skip: next -->\n~~~python\n1 / 0\n~~~\n")
    with pytest.raises(AssertionError, match=r"^page.md, line 1: 'skip: next' needs a reason"):
        run_page(bare, None, tmp_path / "work2")


@pytest.mark.parametrize(
    "module", ["flowgraph", "flowgraph.http", "flowgraph.testing", "flowgraph.prometheus"]
)
def test_api_overview_names_every_public_name(module: str) -> None:
    """docs/api.md's overview, readable without the site, has a line for each public name."""
    names = importlib.import_module(module).__all__
    overview = (ROOT / "docs" / "api.md").read_text().split("## Graphs and runs")[0]
    rows = [line for line in overview.splitlines() if line.startswith("| ")]
    missing = [n for n in names if not any(f"`{n}`" in row for row in rows)]
    assert missing == []


OPTIONAL = ["trio", "httpx", "rich", "psycopg", "prometheus_client", "hypothesis", "croniter"]


def test_the_readme_runs_on_a_core_install(tmp_path: Path) -> None:
    """With no extra installed (each optional dependency made unimportable), the README runs."""
    code = "\n".join(
        [
            "import sys",
            f"for name in {OPTIONAL!r}:",
            "    sys.modules[name] = None",
            f"sys.path.insert(0, {str(Path(__file__).parent)!r})",
            "from pathlib import Path",
            "from test_docs import ROOT, running_page",
            "with running_page(ROOT / 'README.md', 'asyncio', Path(sys.argv[1])):",
            f"    print('imported:', [n for n in {OPTIONAL!r} if sys.modules[n] is not None])",
        ]
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "imported: []"
