"""Every script in ``examples/`` runs to completion on its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


def test_examples_are_there() -> None:
    """The documented examples exist, so the test below cannot pass by finding none."""
    names = {path.name for path in EXAMPLES}
    assert {"quickstart.py", "fan_out_fan_in.py", "sqlite_sink.py"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_runs_and_exits_0(path: Path, tmp_path: Path) -> None:
    """The example finishes quickly with exit code 0 and prints what it did."""
    proc = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout
