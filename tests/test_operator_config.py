"""The operator's own configuration plans: `sqlmesh test`, `embed init`, `embed plan` and `embed
audit` on a full copy of the checkout (tests/ included), for the shipped `honcho` gateway, a new
gateway the operator adds, and spaces the operator declares; and a declared legacy space that
does not fit the column it claims is refused with one line by every command that relies on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from embed import api
from embed.config import Config
from embed.db.connection import sqlmesh_env
from tests.support.checkout import add_to_config, copy_checkout

pytestmark = pytest.mark.timeout(900)

# the server Honcho will call after the switch, declared as the runbook says
OPERATOR_SPACE = """    bge_m3_tei:
      provider: openai
      model: BAAI/bge-m3
      revision: tei-1.5
      dims: 1024
      metric: cosine
      normalize: true
      max_tokens: 8192
      endpoint: http://127.0.0.1:18080/v1
"""
# a second production database, declared like the shipped `honcho` gateway
NEW_GATEWAY = """  prod:
    connection:
      type: postgres
      host: "{{ env_var('EMBED_PGHOST', '127.0.0.1') }}"
      port: "{{ env_var('EMBED_PGPORT', '5432') }}"
      user: "{{ env_var('EMBED_PGUSER', 'postgres') }}"
      password: "{{ env_var('EMBED_PGPASSWORD', '') }}"
      database: "{{ env_var('EMBED_PGDATABASE', 'honcho') }}"
    variables:
      embed_legacy_space: openai_3_small
"""


def _run(project: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=600)


def _env(project: Path, url: str, gateway: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBED_")}
    return {**env, **sqlmesh_env(url), "EMBED_PROJECT": str(project), "EMBED_GATEWAY": gateway,
            "EMBED_DATABASE_URL": url}


def _honcho_shaped(url: str, project: Path, gateway: str, dims: int) -> None:
    """Honcho's tables with `vector(dims)` columns and no vectors (nothing to embed here)."""
    api.seed_honcho(Config.load(project, gateway), url, scale="tiny", dims=dims, vectors=False)


def _add_gateway(project: Path) -> None:
    add_to_config(project, "gateways:", NEW_GATEWAY)


def _add_space(project: Path) -> None:
    add_to_config(project, "  embed_spaces:", OPERATOR_SPACE)


@pytest.mark.parametrize(("gateway", "edit"), [
    ("honcho", None),
    ("prod", _add_gateway),
    ("honcho", _add_space),
], ids=["shipped-honcho", "new-gateway", "added-space"])
def test_the_operators_configuration_tests_and_plans(tmp_path: Path, db_url: str, gateway: str, edit) -> None:
    project = copy_checkout(tmp_path / "checkout")
    if edit:
        edit(project)
    _honcho_shaped(db_url, project, gateway, dims=1536)
    env = _env(project, db_url, gateway)
    embed = [sys.executable, "-m", "embed"]

    tested = _run(project, [str(Path(sys.executable).parent / "sqlmesh"), "--gateway", gateway, "test"], env)
    assert tested.returncode == 0, tested.stdout[-2000:] + tested.stderr[-2000:]
    for step in (["init"], ["plan"], ["audit"]):
        r = _run(project, [*embed, *step], env)
        assert r.returncode == 0, f"embed {step[0]}: {r.stdout[-1500:]} {r.stderr[-1500:]}"
    audited = _run(project, [*embed, "audit"], env).stdout
    assert "NOT RUN" not in audited and "FAIL" not in audited and audited.count("PASS") > 10
    if edit is _add_space:
        assert "embed_store.documents__bge_m3_tei_" in audited


def test_a_legacy_space_that_does_not_fit_its_column_is_refused(tmp_path: Path, db_url: str) -> None:
    """The shipped `honcho` gateway (openai_3_small, 1536-d) pointed at a Honcho whose columns are
    vector(384): init, status, plan and cutover each refuse in one line, and init creates nothing."""
    project = copy_checkout(tmp_path / "checkout")
    _honcho_shaped(db_url, project, "honcho", dims=384)
    env = _env(project, db_url, "honcho")
    for step in (["init"], ["status"], ["plan"], ["cutover", "--space", "bge_m3", "--mode", "honcho-inplace",
                                                   "--writers-stopped"]):
        r = _run(project, [sys.executable, "-m", "embed", *step], env)
        assert r.returncode == 1, (step, r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "public.documents.embedding holds 384-d vectors but the legacy space " \
            "openai_3_small has 1536 dims" in lines[0], (step, r.stderr)
    import psycopg

    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT to_regnamespace('embed_store') IS NULL").fetchone()[0]
