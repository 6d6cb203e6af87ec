"""Reads through the per-space views keep the store's HNSW index (real `sqlmesh plan`, real
Postgres + pgvector): an `ORDER BY embedding <=> q LIMIT k` through `embed.<source>__<space>`
is the index scan the same query on the store table is, and the view still hides stale and
deleted rows."""

from __future__ import annotations

import numpy as np
import pytest

from embed import mesh
from embed.config import Config
from embed.db.connection import connect
from embed.db.localpg import LocalServer
from embed.store import table_name
from embed.store.indexes import ensure_hnsw
from embed.store.target import Target
from tests.conftest import ROOT, new_database
from tests.support.inplace import NEW, fill_store, honcho_db, synthetic

VIEW = f"embed.documents__{NEW}"
TOP = "SELECT {id} FROM {rel} {where} ORDER BY {vec} OPERATOR(public.<=>) %(q)s LIMIT 10"


@pytest.fixture(scope="module")
def views(pg_server: LocalServer) -> tuple[str, str, str]:
    """(url, store table, its HNSW index): 3,000 Honcho-shaped documents, their store rows in a
    second space as a backfill leaves them (HNSW built after the load, then ANALYZE), views planned."""
    cfg = Config.load(ROOT, "local")
    url = honcho_db(new_database(pg_server), cfg, documents=3000, messages=30)
    fill_store(url, cfg)
    target = Target(cfg.source("documents"), cfg.space(NEW))
    with connect(url, autocommit=True) as conn:
        index = ensure_hnsw(conn, target, cfg.index_params, concurrently=False)["name"]
        conn.execute("ANALYZE")
    mesh.plan(cfg, url)
    return url, f"embed_store.{table_name(target.source, target.space)}", index


def top(url: str, rel: str, q: np.ndarray, where: str = "", ws: str | None = None,
        id: str = "source_id", vec: str = "embedding") -> tuple[list[str], str]:
    """The ids of a top-10 read and its plan."""
    query, params = TOP.format(id=id, rel=rel, where=where, vec=vec), {"q": q, "ws": ws}
    with connect(url) as conn:
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + query, params))
        return [r[0] for r in conn.execute(query, params)], plan


QUERIES = ["kawa i góry w weekend", "a query about coffee and mountains", "deadline for the report"]


@pytest.mark.parametrize("text", QUERIES)
def test_a_top_k_through_the_view_is_the_store_index_scan(views: tuple[str, str, str], text: str) -> None:
    url, store, index = views
    q = synthetic(NEW, [text])[0]
    direct, direct_plan = top(url, store, q)
    served, plan = top(url, VIEW, q)
    assert f"Index Scan using {index}" in direct_plan, direct_plan
    assert f"Index Scan using {index}" in plan and "Sort" not in plan, plan  # no scan of the store + sort
    assert served == direct and len(served) == 10  # every store row is current: the same answer


def test_the_view_still_hides_edited_and_deleted_rows(views: tuple[str, str, str]) -> None:
    url, _, index = views
    q = synthetic(NEW, [QUERIES[0]])[0]
    before, _ = top(url, VIEW, q)
    with connect(url) as conn:  # rolled back below: the module's database stays as seeded
        conn.execute("UPDATE documents SET content = content || ' (edited)' WHERE id = %s", (before[0],))
        conn.execute("UPDATE documents SET deleted_at = now() WHERE id = %s", (before[1],))
        query = TOP.format(id="source_id", rel=VIEW, where="", vec="embedding")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + query, {"q": q}))
        after = [r[0] for r in conn.execute(query, {"q": q})]
        conn.rollback()
    assert f"Index Scan using {index}" in plan
    assert before[0] not in after and before[1] not in after and len(after) == 10
    assert after[:8] == before[2:10]  # the rest keeps its order


def test_a_tenant_filtered_read_through_the_view_answers_as_the_hand_written_join(
    views: tuple[str, str, str],
) -> None:
    url, store, _ = views
    with connect(url) as conn:
        tenants = [r[0] for r in conn.execute(
            "SELECT workspace_name FROM documents WHERE deleted_at IS NULL GROUP BY 1 ORDER BY count(*) DESC")]
    q = synthetic(NEW, [QUERIES[1]])[0]
    for ws in (tenants[0], tenants[-1]):
        served, _ = top(url, VIEW, q, where="WHERE workspace_name = %(ws)s", ws=ws)
        joined, _ = top(url, f"{store} v JOIN documents s ON s.id = v.source_id AND s.deleted_at IS NULL", q,
                        where="WHERE s.workspace_name = %(ws)s", ws=ws, id="v.source_id", vec="v.embedding")
        assert served == joined and served
