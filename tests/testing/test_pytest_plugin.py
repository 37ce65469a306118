"""The pytest plugin, used exactly as a user would: test files run by pytester."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytest_plugins = ["pytester"]

CONFTEST = """
import pytest

@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param
"""

INI = """
[pytest]
anyio_mode = auto
addopts = -p no:asyncio -p no:cacheprovider --strict-markers
filterwarnings = error
"""

SEED_LINE = re.compile(r"flowgraph fault seed: (\d+) \(rerun with --flowgraph-seed=(\d+)\)")


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A user's project: anyio in auto mode, both backends, strict markers."""
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST)
    return pytester


def seeds_in(result: pytest.RunResult) -> list[int]:
    found = [SEED_LINE.search(line) for line in result.outlines]
    seeds = [(int(m[1]), int(m[2])) for m in found if m]
    assert all(shown == rerun for shown, rerun in seeds)
    return [shown for shown, _ in seeds]


def test_fixtures_crawl_the_fake_api_through_faults(project: pytest.Pytester) -> None:
    """fault_plan, fake_api and flaky_transport work together in a user's async test."""
    project.makepyfile(
        """
        import httpx
        from flowgraph.testing import FakeAPI, FaultPlan, FlakyTransport

        async def test_crawl(flaky_transport, fake_api, fault_plan, fault_seed):
            assert isinstance(fake_api, FakeAPI) and isinstance(fault_plan, FaultPlan)
            assert fault_plan.seed == fault_seed
            assert flaky_transport.plan is fault_plan
            records = []
            async with httpx.AsyncClient(transport=flaky_transport, base_url="http://t") as client:
                page = 1
                while page is not None:
                    for attempt in range(4):  # the default plan fails a URL at most 3 times in a row
                        try:
                            response = await client.get("/items", params={"page": page})
                            response.raise_for_status()
                            break
                        except httpx.HTTPError:
                            pass
                    body = response.json()
                    records += body["items"]
                    page = body["next_page"]
            assert records == fake_api.all_records()
        """
    )
    result = project.runpytest()
    result.assert_outcomes(passed=2)
    assert seeds_in(result) == []


def test_failure_reports_the_seed_and_the_option_replays_it(project: pytest.Pytester) -> None:
    """A failing test names its seed; --flowgraph-seed reruns it with the very same faults."""
    project.makepyfile(
        """
        import httpx

        def test_faults_then_fail(flaky_transport):
            async def crawl():
                async with httpx.AsyncClient(transport=flaky_transport, base_url="http://t") as c:
                    for page in range(1, 30):
                        try:
                            await c.get("/items", params={"page": page})
                        except httpx.HTTPError:
                            pass
            import anyio
            anyio.run(crawl)
            print("FAULTS", [(r.url, r.fault) for r in flaky_transport.faults_injected])
            assert False
        """
    )
    first = project.runpytest()
    first.assert_outcomes(failed=1)
    (seed,) = seeds_in(first)
    again = project.runpytest(f"--flowgraph-seed={seed}")
    again.assert_outcomes(failed=1)
    assert seeds_in(again) == [seed]
    faults = [line for line in first.outlines if line.startswith("FAULTS")]
    assert faults
    assert faults == [line for line in again.outlines if line.startswith("FAULTS")]
    again.stdout.fnmatch_lines([f"flowgraph fault seed: {seed} (from --flowgraph-seed)"])


def test_seed_comes_from_option_then_marker_then_chance(project: pytest.Pytester) -> None:
    """--flowgraph-seed beats @pytest.mark.flowgraph_seed, which beats a random seed."""
    project.makepyfile(
        """
        import pytest

        @pytest.mark.flowgraph_seed(1234)
        def test_marked(fault_seed):
            print("SEED", fault_seed)

        @pytest.mark.flowgraph_seed(seed=99)
        def test_marked_by_keyword(fault_seed):
            print("SEED", fault_seed)

        def test_random_a(fault_seed):
            print("SEED", fault_seed)

        def test_random_b(fault_seed):
            print("SEED", fault_seed)
        """
    )

    def seeds(result: pytest.RunResult) -> list[int]:
        result.assert_outcomes(passed=4)
        return [int(seed) for seed in re.findall(r"SEED (\d+)", result.stdout.str())]

    marked, keyword, a, b = seeds(project.runpytest("-s"))
    assert (marked, keyword) == (1234, 99)
    assert a != b
    assert seeds(project.runpytest("-s", "--flowgraph-seed=0x10")) == [16] * 4


def test_bad_seeds_are_usage_errors(project: pytest.Pytester) -> None:
    """A seed option that is not an int, or a marker without one int, is refused clearly."""
    project.makepyfile(
        """
        import pytest

        @pytest.mark.flowgraph_seed("abc")
        def test_marked(fault_seed):
            pass
        """
    )
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.flowgraph_seed takes one int seed*"])
    bad = project.runpytest("--flowgraph-seed=abc")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--flowgraph-seed must be an integer (got 'abc')*"])


def test_passing_tests_show_no_seed(project: pytest.Pytester) -> None:
    """The seed line is for failures only; tests that do not use fault_seed never get one."""
    project.makepyfile(
        """
        def test_passes(fault_seed):
            pass

        def test_fails_without_faults():
            assert False
        """
    )
    result = project.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    assert seeds_in(result) == []


def test_markers_are_registered(project: pytest.Pytester) -> None:
    """Both markers pass --strict-markers and are listed by --markers."""
    result = project.runpytest("--markers")
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.flowgraph_seed(seed): *",
            "@pytest.mark.flowgraph_virtual_time(autojump_threshold=0): *",
        ]
    )


def test_virtual_time_marker_and_clock_fixture(project: pytest.Pytester) -> None:
    """The marker, or the virtual_clock fixture, runs a test in virtual time on both backends."""
    project.makepyfile(
        """
        import time
        import anyio
        import pytest

        @pytest.mark.flowgraph_virtual_time
        async def test_an_hour_passes_at_once():
            real = time.monotonic()
            await anyio.sleep(3600)
            assert anyio.current_time() == pytest.approx(3600)
            assert time.monotonic() - real < 1

        async def test_clock_fixture(virtual_clock, anyio_backend):
            assert virtual_clock.backend == anyio_backend[0]
            with anyio.fail_after(100):
                await anyio.sleep(60)
            assert virtual_clock.current_time() == pytest.approx(60)

        @pytest.mark.flowgraph_virtual_time(autojump_threshold=0.01)
        async def test_threshold(virtual_clock):
            assert virtual_clock.autojump_threshold == 0.01

        async def test_real_time_elsewhere():
            start = time.monotonic()
            await anyio.sleep(0.05)
            assert time.monotonic() - start >= 0.04
        """
    )
    result = project.runpytest("-v")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["*test_an_hour_passes_at_once?trio? PASSED*"])


def test_virtual_time_keeps_the_backend_options(project: pytest.Pytester) -> None:
    """Options of the user's anyio_backend survive; the clock is added to them."""
    project.makeconftest(
        """
        import pytest

        @pytest.fixture
        def anyio_backend():
            return ("trio", {"restrict_keyboard_interrupt_to_checkpoints": True})
        """
    )
    project.makepyfile(
        """
        import pytest

        @pytest.mark.flowgraph_virtual_time
        async def test_options(anyio_backend):
            name, options = anyio_backend
            assert name == "trio"
            assert options["restrict_keyboard_interrupt_to_checkpoints"] is True
            assert "clock" in options
        """
    )
    project.runpytest().assert_outcomes(passed=1)


def test_virtual_time_refuses_a_module_scoped_backend(pytester: pytest.Pytester) -> None:
    """With anyio's default module-scoped anyio_backend, virtual time fails with the fix."""
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        import anyio
        import pytest

        @pytest.mark.flowgraph_virtual_time
        async def test_marked():
            await anyio.sleep(3600)

        async def test_clock(virtual_clock):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines(
        ["*virtual time needs an async test and a function-scoped anyio_backend fixture*"]
    )


def test_fake_api_is_parametrized_indirectly(project: pytest.Pytester) -> None:
    """parametrize("fake_api", [{...}], indirect=True) passes FakeAPI options."""
    project.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("fake_api", [{"records": 3}, {"records": 0}], indirect=True)
        def test_sizes(fake_api):
            assert len(fake_api.all_records()) in (0, 3)

        @pytest.mark.parametrize("fake_api", ["bad"], indirect=True)
        def test_bad(fake_api):
            pass
        """
    )
    result = project.runpytest()
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*indirect parameters of fake_api must be a dict*"])


def test_importing_the_plugin_stays_cheap() -> None:
    """Loading the plugin imports nothing of flowgraph's, nor anyio, httpx, Hypothesis or trio."""
    code = (
        "import sys, pytest, _flowgraph_pytestplugin\n"
        "heavy = {'flowgraph', 'anyio', 'httpx', 'hypothesis', 'trio', 'hypercorn'}\n"
        "print(sorted(heavy & {name.split('.')[0] for name in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_pytest_run_that_does_not_use_flowgraph_never_imports_it(
    pytester: pytest.Pytester,
) -> None:
    """The plugin is loaded in every pytest run, but flowgraph only when a fixture needs it."""
    pytester.makepyfile(
        """
        import sys

        def test_unrelated(request):
            assert request.config.pluginmanager.has_plugin("flowgraph")
            assert not [m for m in sys.modules if m.split(".")[0] in ("flowgraph", "anyio")]

        def test_using_a_fixture(fault_plan):
            assert "flowgraph.testing" in sys.modules
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:anyio", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_old_module_keeps_its_public_names() -> None:
    """``flowgraph.testing.pytest_plugin`` still offers the plugin's public names."""
    import _flowgraph_pytestplugin
    from flowgraph.testing import pytest_plugin

    assert pytest_plugin.default_fault_plan is _flowgraph_pytestplugin.default_fault_plan
    assert pytest_plugin.DEFAULT_FAULT_PROBABILITIES == {
        "connect_error": 0.05,
        "read_timeout": 0.05,
        "server_error": 0.10,
        "rate_limited": 0.05,
    }


def test_pytest_starts_without_httpx(pytester: pytest.Pytester) -> None:
    """Without the [testing] extra, the plugin still loads and pytest runs the user's tests.

    Regression test: the pytest11 entry point is registered for every install of
    flowgraph, so the plugin must not need httpx.
    """
    pytester.makepyfile("def test_nothing():\n    pass\n")
    code = "import sys; sys.modules['httpx'] = None; import pytest; sys.exit(pytest.main(['-q']))"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=pytester.path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
