"""A short run of ``benchmarks/soak.py``: seeded kill -9 loops lose nothing, stay in the bound."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


@pytest.mark.timeout(120)
def test_soak_a_few_seeds_of_every_kind(postgres_url: str) -> None:
    """Eight seeds: SQLite and PostgreSQL, asyncio and trio, plain and slow-commit stores."""
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--seeds", "8", "--quick", "--postgres-url", postgres_url],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len([line for line in lines if line.startswith("seed ")]) == 8
    assert all(line.endswith(" ok") for line in lines if line.startswith("seed ")), proc.stdout
    assert lines[-2].startswith("8 seeds, ")
    assert " 0 failed; 0 lost and Upsert exact in 8; " in lines[-2]
    assert lines[-1] == (
        "seeds per (database, backend, slow store): postgres/asyncio/plain=1, "
        "postgres/asyncio/slow=1, postgres/trio/plain=1, postgres/trio/slow=1, "
        "sqlite/asyncio/plain=1, sqlite/asyncio/slow=1, sqlite/trio/plain=1, sqlite/trio/slow=1"
    )
