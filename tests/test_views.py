"""Reads through the views keep the store's HNSW index (real `sqlmesh plan`, a real gated view
cutover, real Postgres + pgvector): an `ORDER BY embedding <=> q LIMIT k` through
`embed.<source>__<space>` and `embed.<source>_active`, unfiltered or with Honcho's tenant filter,
is the plan the same read on the tables is (the HNSW index scan where that read uses it), and
the views still hide stale and deleted rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embed import mesh
from embed.config import Config
from embed.cutover.switch import cutover
from embed.db.connection import connect
from embed.db.localpg import LocalServer
from embed.store import table_name
from embed.store.indexes import ensure_hnsw
from embed.store.target import Target
from tests.conftest import ROOT, new_database
from tests.support.gate import plant_gates
from tests.support.inplace import NEW, fill_store, honcho_db, synthetic

VIEW = f"embed.documents__{NEW}"
ACTIVE = "embed.documents_active"
VIEWS = (VIEW, ACTIVE)
TOP = "SELECT {id} FROM {rel} {where} ORDER BY {vec} OPERATOR(public.<=>) %(q)s LIMIT 10"
TENANT = "WHERE {p}workspace_name = %(ws)s AND {p}observer = %(observer)s AND {p}observed = %(observed)s"
LARGE_SHARE = 0.4  # of the documents, in one tenant: large enough that the planner reads it through HNSW


@pytest.fixture(scope="module")
def views(pg_server: LocalServer) -> tuple[str, str, str]:
    """(url, store table, its HNSW index): 3,000 Honcho-shaped documents, 40 % of them moved
    into one tenant, their store rows in a second space as a backfill leaves them (HNSW built
    after the load, then ANALYZE), views planned and documents_active switched to that space
    by a gated view cutover (gate inputs planted)."""
    cfg = Config.load(ROOT, "local")
    url = honcho_db(new_database(pg_server), cfg, documents=3000, messages=30)
    with connect(url) as conn:
        conn.execute(
            "WITH home AS (SELECT workspace_name, observer, observed, session_name FROM documents"
            " WHERE session_name IS NOT NULL GROUP BY 1, 2, 3, 4 ORDER BY count(*) DESC, 1, 2, 3, 4 LIMIT 1)"
            " UPDATE documents d SET workspace_name = h.workspace_name, observer = h.observer,"
            " observed = h.observed, session_name = h.session_name FROM home h"
            " WHERE ('x' || left(md5(d.id), 8))::bit(32)::bigint %% 100 < %s", (round(LARGE_SHARE * 100),))
        conn.commit()
    fill_store(url, cfg)
    target = Target(cfg.source("documents"), cfg.space(NEW))
    with connect(url, autocommit=True) as conn:
        index = ensure_hnsw(conn, target, cfg.index_params, concurrently=False)["name"]
        conn.execute("VACUUM ANALYZE")
    mesh.plan(cfg, url)
    plant_gates(url, cfg, cfg.space(NEW), sources=["documents"])
    cutover(cfg, url, NEW, sources=["documents"])
    return url, f"embed_store.{table_name(target.source, target.space)}", index


def tenants(url: str) -> list[dict[str, str]]:
    """Every live tenant (workspace, observer, observed), the largest first."""
    with connect(url) as conn:
        rows = conn.execute("SELECT workspace_name, observer, observed FROM documents WHERE deleted_at IS NULL"
                            " GROUP BY 1, 2, 3 ORDER BY count(*) DESC, 1, 2, 3").fetchall()
    return [{"ws": w, "observer": o, "observed": d} for w, o, d in rows]


def by_hand(store: str) -> str:
    return f"{store} v JOIN documents s ON s.id = v.source_id AND s.deleted_at IS NULL"


def query(rel: str, tenant: dict[str, str] | None, direct: bool = False) -> str:
    p, v = ("s.", "v.") if direct else ("", "")
    return TOP.format(id=f"{v}source_id", rel=rel, where=TENANT.format(p=p) if tenant else "", vec=f"{v}embedding")


def top(url: str, sql: str, q: np.ndarray, tenant: dict[str, str] | None = None) -> tuple[list[str], str]:
    """The ids of a top-10 read and its plan."""
    params = {"q": q, **(tenant or {})}
    with connect(url) as conn:
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params))
        return [r[0] for r in conn.execute(sql, params)], plan


def expected_rows(url: str, sql: str, q: np.ndarray, tenant: dict[str, str]) -> float:
    """The rows the planner expects under the LIMIT (what decides index scan vs sort)."""
    with connect(url) as conn:
        plan = conn.execute("EXPLAIN (FORMAT JSON) " + sql, {"q": q, **tenant}).fetchone()[0]
    plan = plan if isinstance(plan, list) else json.loads(plan)
    return plan[0]["Plan"]["Plans"][0]["Plan Rows"]


QUERIES = ["kawa i góry w weekend", "a query about coffee and mountains", "deadline for the report"]


@pytest.mark.parametrize("rel", VIEWS)
@pytest.mark.parametrize("text", QUERIES)
def test_a_top_k_through_the_views_is_the_store_index_scan(views: tuple[str, str, str], rel: str, text: str) -> None:
    url, store, index = views
    q = synthetic(NEW, [text])[0]
    direct, direct_plan = top(url, query(store, None), q)
    served, plan = top(url, query(rel, None), q)
    assert f"Index Scan using {index}" in direct_plan, direct_plan
    assert f"Index Scan using {index}" in plan and "Sort" not in plan, plan  # no scan of the store + sort
    assert served == direct and len(served) == 10  # every store row is current: the same answer


@pytest.mark.parametrize("rel", VIEWS)
def test_a_large_tenant_read_through_the_views_is_the_index_scan_the_direct_read_is(
    views: tuple[str, str, str], rel: str,
) -> None:
    url, store, index = views
    large = tenants(url)[0]
    for text in QUERIES:
        q = synthetic(NEW, [text])[0]
        direct, direct_plan = top(url, query(by_hand(store), large, direct=True), q, large)
        served, plan = top(url, query(rel, large), q, large)
        assert f"Index Scan using {index}" in direct_plan, direct_plan  # the case this test is about
        assert f"Index Scan using {index}" in plan and "Sort" not in plan, plan
        assert served == direct and len(served) == 10


def test_the_views_expect_the_rows_the_direct_read_expects(views: tuple[str, str, str]) -> None:
    """The planner's choice between the HNSW index and a sort turns on the rows it expects; the
    hash check must not change that estimate (as an opaque boolean it halved it, and tenants
    near the turning point were sorted through the view but read by index directly)."""
    url, store, _ = views
    q = synthetic(NEW, [QUERIES[0]])[0]
    every = tenants(url)
    for tenant in (every[0], every[len(every) // 2]):
        direct = expected_rows(url, query(by_hand(store), tenant, direct=True), q, tenant)
        for rel in VIEWS:
            assert 0.98 * direct <= expected_rows(url, query(rel, tenant), q, tenant) <= direct, (rel, tenant)


@pytest.mark.parametrize("tenant_filter", [False, True], ids=["unfiltered", "large tenant"])
def test_the_views_still_hide_edited_and_deleted_rows(views: tuple[str, str, str], tenant_filter: bool) -> None:
    url, _, index = views
    tenant = tenants(url)[0] if tenant_filter else None
    q = synthetic(NEW, [QUERIES[0]])[0]
    for rel in VIEWS:
        sql = query(rel, tenant)
        before, _ = top(url, sql, q, tenant)
        with connect(url) as conn:  # rolled back below: the module's database stays as seeded
            conn.execute("UPDATE documents SET content = content || ' (edited)' WHERE id = %s", (before[0],))
            conn.execute("UPDATE documents SET deleted_at = now() WHERE id = %s", (before[1],))
            params = {"q": q, **(tenant or {})}
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params))
            after = [r[0] for r in conn.execute(sql, params)]
            conn.rollback()
        assert f"Index Scan using {index}" in plan, plan
        assert before[0] not in after and before[1] not in after and len(after) == 10
        assert after[:8] == before[2:10]  # the rest keeps its order


@pytest.mark.parametrize("rel", VIEWS)
def test_a_tenant_filtered_read_through_the_views_answers_as_the_hand_written_join(
    views: tuple[str, str, str], rel: str,
) -> None:
    url, store, _ = views
    every = tenants(url)
    q = synthetic(NEW, [QUERIES[1]])[0]
    for tenant in (every[0], every[len(every) // 2], every[-1]):
        served, _ = top(url, query(rel, tenant), q, tenant)
        joined, _ = top(url, query(by_hand(store), tenant, direct=True), q, tenant)
        assert served == joined and served
