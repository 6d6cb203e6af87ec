"""Real `sqlmesh plan`/audits against the real embedded Postgres: views per space, blocking gates.

Legacy vectors here are `hashed_unit_vectors` of the text (test data for the views and audits).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import psycopg
import pytest
import sqlglot
from sqlglot import exp

from embed import mesh
from embed.api import init_store
from embed.config import Config
from embed.db.connection import connect
from embed.errors import EmbedError
from embed.honcho.synthetic.corpus import generate
from embed.honcho.synthetic.seed import seed
from embed.store import table_name
from tests.conftest import hashed_unit_vectors
from tests.support.gate import plan_switch, plant_gates

ROOT = Path(__file__).resolve().parent.parent
DIMS = 384


def text_vectors(texts: list[str], dims: int = DIMS) -> np.ndarray:
    return hashed_unit_vectors(texts, dims)


@pytest.fixture
def honcho_url(db_url: str, cfg: Config) -> str:
    with connect(db_url, vector=False) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.commit()
    with connect(db_url) as conn:
        seed(conn, generate(seed=3, documents=120, messages=60), dims=DIMS, vectors=text_vectors)
    init_store(cfg, db_url)
    return db_url


def active_space_fps(url: str, source: str = "documents") -> set[str]:
    with connect(url) as conn:
        return {r[0] for r in conn.execute(f"SELECT DISTINCT space_fp FROM embed.{source}_active")}


def fill_store(url: str, cfg: Config, source: str, space: str) -> int:
    """What a backfill leaves: a vector for every live row with text in the (source, space)
    store table, and a skip record ('empty') for every blank one."""
    src, sp = cfg.source(source), cfg.space(space)
    with connect(url) as conn:
        rows = conn.execute(f"SELECT {src.id_column}, coalesce({src.text_column}, '') FROM {src.table} "
                            f"WHERE {src.live_filter}").fetchall()
        texts = [r for r in rows if r[1].strip()]
        vecs = text_vectors([r[1] for r in texts], sp.dims)
        with conn.cursor().copy(
            f"COPY embed_store.{table_name(src, sp)} (source_id, content_sha256, space_fp, embedding) FROM STDIN"
        ) as cp:
            for (rid, text), v in zip(texts, vecs, strict=True):
                cp.write_row((rid, hashlib.sha256(text.encode()).digest(), sp.fingerprint, v))
        for rid, text in rows:
            if not text.strip():
                conn.execute("INSERT INTO embed_store.skipped (source, space_fp, source_id, content_sha256, reason) "
                             "VALUES (%s, %s, %s, %s, 'empty')",
                             (source, sp.fingerprint, str(rid), hashlib.sha256(text.encode()).digest()))
        conn.commit()
    return len(texts)


def test_plan_builds_one_view_per_source_and_space(honcho_url: str, cfg: Config) -> None:
    out = mesh.plan(cfg, honcho_url)
    assert "embed.documents_active" in out.new_snapshots
    assert "embed.documents__e5_small" in out.new_snapshots
    with connect(honcho_url) as conn:
        live = conn.execute(
            "SELECT count(*) FROM documents WHERE deleted_at IS NULL AND embedding IS NOT NULL"
        ).fetchone()[0]
        assert live > 0
        assert conn.execute("SELECT count(*) FROM embed.documents_active").fetchone()[0] == live
        deleted = conn.execute(
            "SELECT count(*) FROM embed.documents_active a JOIN documents d ON d.id = a.source_id "
            "WHERE d.deleted_at IS NOT NULL"
        ).fetchone()[0]
        assert deleted == 0
        assert conn.execute("SELECT count(*) FROM embed.documents__e5_small").fetchone()[0] == 0
    assert active_space_fps(honcho_url) == {cfg.space("minilm_l6").fingerprint}
    assert mesh.plan(cfg, honcho_url).new_snapshots == ()  # converged: nothing to do
    assert all(r.passed for r in mesh.audit(cfg, honcho_url))


def test_store_table_refuses_a_row_of_another_space(honcho_url: str, cfg: Config) -> None:
    src, e5, minilm = cfg.source("documents"), cfg.space("e5_small"), cfg.space("minilm_l6")
    with connect(honcho_url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            f"INSERT INTO embed_store.{table_name(src, e5)} (source_id, content_sha256, space_fp, embedding) "
            "VALUES ('x', sha256('x'), %s, %s)",
            (minilm.fingerprint, text_vectors(["x"])[0]),
        )
    with connect(honcho_url) as conn, pytest.raises(psycopg.errors.DataException):
        conn.execute(  # a 1024-d vector in a 384-d space's table
            f"INSERT INTO embed_store.{table_name(src, e5)} (source_id, content_sha256, space_fp, embedding) "
            "VALUES ('x', sha256('x'), %s, %s)",
            (e5.fingerprint, text_vectors(["x"], 1024)[0]),
        )


def test_a_row_of_another_space_with_the_same_dims_blocks_the_plan(honcho_url: str, cfg: Config) -> None:
    mesh.plan(cfg, honcho_url)
    src, e5, minilm = cfg.source("documents"), cfg.space("e5_small"), cfg.space("minilm_l6")
    with connect(honcho_url) as conn:  # someone bypassed the constraint
        conn.execute(f"ALTER TABLE embed_store.{table_name(src, e5)} DROP CONSTRAINT space_tag")
        doc_id, text = conn.execute("SELECT id, content FROM documents WHERE content <> '' LIMIT 1").fetchone()
        conn.execute(
            f"INSERT INTO embed_store.{table_name(src, e5)} (source_id, content_sha256, space_fp, embedding) "
            "VALUES (%s, %s, %s, %s)",
            (doc_id, hashlib.sha256(text.encode()).digest(), minilm.fingerprint, text_vectors([text])[0]),
        )
        conn.commit()
    failed = [r for r in mesh.audit(cfg, honcho_url) if not r.passed]
    assert [(r.audit, r.model) for r in failed] == [
        ("embed_single_space", f"embed_store.{table_name(src, e5)}")
    ]
    with pytest.raises(EmbedError, match=r"plan blocked before any change.*embed_single_space"):
        mesh.plan(cfg, honcho_url)
    with connect(honcho_url) as conn:  # and the view never serves the foreign row
        assert conn.execute("SELECT count(*) FROM embed.documents__e5_small").fetchone()[0] == 0


def test_wrong_dims_in_the_legacy_column_fail_the_plan_and_prod_is_untouched(honcho_url: str, cfg: Config) -> None:
    with connect(honcho_url) as conn:  # an untyped `vector` column can hold vectors of any model
        for (idx,) in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'documents' AND indexdef ILIKE '%hnsw%'"
        ).fetchall():
            conn.execute(f'DROP INDEX "{idx}"')
        conn.execute("ALTER TABLE documents ALTER COLUMN embedding TYPE vector")
        conn.execute(
            "UPDATE documents SET embedding = %s WHERE id = (SELECT min(id) FROM documents "
            "WHERE embedding IS NOT NULL AND deleted_at IS NULL)",
            (text_vectors(["x"], DIMS - 1)[0],),
        )
        conn.commit()
    with pytest.raises(EmbedError, match="prod views unchanged"):
        mesh.plan(cfg, honcho_url)  # SQLMesh's own audit of the legacy view fails while building it
    with connect(honcho_url) as conn:
        assert conn.execute("SELECT to_regclass('embed.documents_active')").fetchone()[0] is None


def test_missing_coverage_blocks_the_switch_and_prod_is_unchanged(honcho_url: str, cfg: Config) -> None:
    mesh.plan(cfg, honcho_url)
    plant_gates(honcho_url, cfg, cfg.space("e5_small"), sources=["documents"])  # all but coverage
    with pytest.raises(EmbedError, match=r"sqlmesh plan failed: embed gate blocked the plan: documents\.coverage"):
        plan_switch(honcho_url, cfg, {"documents": "e5_small"})  # the store for e5_small is empty
    assert active_space_fps(honcho_url) == {cfg.space("minilm_l6").fingerprint}
    # The before_all guard stopped the plan before SQLMesh built anything: only the legacy version exists.
    with connect(honcho_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_views WHERE viewname LIKE 'embed__documents_active__%'"
        ).fetchone()[0] == 1

    n = fill_store(honcho_url, cfg, "documents", "e5_small")
    assert n > 0
    plan_switch(honcho_url, cfg, {"documents": "e5_small"})
    assert active_space_fps(honcho_url) == {cfg.space("e5_small").fingerprint}
    with connect(honcho_url) as conn:
        assert conn.execute("SELECT count(*) FROM embed.documents_active").fetchone()[0] == n
        dims = conn.execute("SELECT DISTINCT vector_dims(embedding) FROM embed.documents_active").fetchall()
        assert dims == [(384,)]


def test_no_bare_pgvector_distance_operator_in_sqlmesh_sql() -> None:
    """sqlglot reads `a <=> b` as MySQL's null-safe equality: in SQLMesh SQL it must be
    OPERATOR(public.<=>) or cosine_distance()."""
    parsed = sqlglot.parse_one("SELECT a <=> b FROM t", dialect="postgres")
    assert parsed.find(exp.NullSafeEQ) is not None  # the hazard is real
    offenders = []
    for folder in ("models", "audits", "macros"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".sql", ".py"):
                for n, line in enumerate(path.read_text().splitlines(), 1):
                    if re.search(r"(?<!OPERATOR\(public\.)<=>", line):
                        offenders.append(f"{path.relative_to(ROOT)}:{n}")
    assert offenders == []


def test_external_models_yaml_matches_config(cfg: Config) -> None:
    assert (ROOT / mesh.EXTERNAL_FILE).read_text() == mesh.render_external_models(cfg)


def test_a_plain_sqlmesh_plan_never_switches_production(honcho_url: str, cfg: Config) -> None:
    """config.yaml holds no machine state: a plain `sqlmesh plan` renders the views from
    $EMBED_SERVING, and the before_all guard refuses any rendering that differs from what
    embed_store.serving says (here: e5_small, with every gate input in place but no cutover)."""
    import json
    import os
    import subprocess
    import sys

    from embed.db.connection import sqlmesh_env
    from embed.store import serving

    mesh.plan(cfg, honcho_url)
    fill_store(honcho_url, cfg, "documents", "e5_small")
    plant_gates(honcho_url, cfg, cfg.space("e5_small"), sources=["documents"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBED_")}
    env.update(sqlmesh_env(honcho_url), EMBED_GATEWAY="local")
    wrong = json.dumps({"documents": {"fp": cfg.space("e5_small").fingerprint, "legacy_column": "embedding"}})
    sqlmesh = [str(Path(sys.executable).parent / "sqlmesh"), "plan", "--auto-apply", "--no-prompts"]
    r = subprocess.run(sqlmesh, env={**env, serving.ENV: wrong}, cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode != 0 and "this plan would serve documents on e5_small instead of minilm_l6" in r.stdout + r.stderr
    assert active_space_fps(honcho_url) == {cfg.space("minilm_l6").fingerprint}
    right = subprocess.run(sqlmesh, env={**env, serving.ENV: mesh.rendering(cfg, honcho_url)}, cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert right.returncode == 0, right.stdout[-2000:] + right.stderr[-2000:]
    assert active_space_fps(honcho_url) == {cfg.space("minilm_l6").fingerprint}
