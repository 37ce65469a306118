"""`import flowgraph` stays light: optional extras load only when asked for."""

from __future__ import annotations

import subprocess
import sys


def test_import_does_not_load_optional_dependencies() -> None:
    """The core imports anyio only; httpx, rich, hypothesis, prometheus and psycopg stay unloaded."""
    code = (
        "import sys, flowgraph\n"
        "heavy = {'httpx', 'rich', 'hypothesis', 'prometheus_client', 'psycopg', 'trio'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
