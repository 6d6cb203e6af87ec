"""The project's SQLMesh unit tests of the view logic (tests/sqlmesh/*.yaml), run on DuckDB,
SQLMesh's test engine, in a full copy of the checkout where SQLMesh finds them."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlmesh import Context

from tests.support.checkout import ROOT, copy_checkout


def test_view_logic_unit_tests_pass_on_duckdb(tmp_path: Path) -> None:
    project = copy_checkout(tmp_path / "checkout")
    for f in (ROOT / "tests" / "sqlmesh").glob("*.yaml"):
        shutil.copy(f, project / "tests" / f"test_{f.name}")
    result = Context(paths=[str(project)], gateway="local", load=True).test()
    assert result.testsRun >= 2
    assert result.wasSuccessful(), [str(e) for e in result.errors + result.failures]


def test_a_plan_of_the_checkout_runs_no_configuration_bound_test() -> None:
    """What every plan runs: SQLMesh's tests/ glob must find nothing tied to the demo config."""
    assert not list((ROOT / "tests").glob("**/test*.yaml")) and not list((ROOT / "tests").glob("**/test*.yml"))
