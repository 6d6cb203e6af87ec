"""Runs the project's SQLMesh unit tests (tests/test_*.yaml) on DuckDB, SQLMesh's test engine."""

from __future__ import annotations

from pathlib import Path

from sqlmesh import Context

ROOT = Path(__file__).resolve().parent.parent


def test_sqlmesh_unit_tests_pass_on_duckdb() -> None:
    ctx = Context(paths=[str(ROOT)], gateway="local", load=True)
    result = ctx.test()
    assert result.testsRun >= 2
    assert result.wasSuccessful(), [str(e) for e in result.errors + result.failures]
