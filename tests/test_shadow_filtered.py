"""The filtered-recall sweep (embed.shadow.filtered) on a real PostgreSQL + pgvector.

Honcho's documents with correlated tenant columns: observers a/b and observed a/b each hold
half the rows, but (a, b) and (b, a) are tiny collections. The planner multiplies the two
selectivities, expects a quarter of the table and reads them through the HNSW index; with
iterative_scan off the index hands the filter ef_search candidates once and the query comes
back short (Honcho bug #1048). (c, c) is small and selective on its own: an exact plan.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from embed import store
from embed.config import Config
from embed.db.connection import connect
from embed.db.localpg import LocalServer
from embed.honcho.settings import honcho_settings
from embed.shadow import filtered as F
from embed.shadow.inputs import SpaceReader
from embed.shadow.run import persist
from tests.support.backfill import ROOT, make_db
from tests.support.tenants import WORKSPACE, tenant_documents

K = 10
COLLECTIONS = {("a", "a"): 1500, ("b", "b"): 1500, ("a", "b"): 60, ("b", "a"): 60, ("c", "c"): 20}
SELECTIVE = (("a", "b"), ("b", "a"))
ROLE = "fr_honcho"


@pytest.fixture(scope="module")
def world(pg_server: LocalServer) -> Iterator[dict[str, Any]]:
    cfg = Config.load(ROOT, "local")
    url = make_db(pg_server)
    tenant_documents(url, COLLECTIONS, dims=cfg.legacy_space.dims)
    with connect(url) as conn:
        store.init(conn, cfg)
    yield {"cfg": cfg, "url": url}


def run_sweep(world: dict, collections: tuple[tuple[str, str], ...], per: int = 30, **kw: Any) -> F.FilteredSweep:
    """The sweep over `per` stored rows of each collection, each searched within its own collection."""
    cfg = world["cfg"]
    with connect(world["url"]) as conn:
        reader = SpaceReader(conn, cfg, cfg.source("documents"), cfg.legacy_space)
        ids, tenants = [], []
        for observer, observed in collections:
            got = conn.execute("SELECT id FROM documents WHERE observer = %s AND observed = %s ORDER BY id LIMIT %s",
                               (observer, observed, per)).fetchall()
            ids += [r[0] for r in got]
            tenants += [(WORKSPACE, observer, observed)] * len(got)
        qv = reader.stored(conn, ids)
        exact = reader.search(conn, qv, tenants, K + 1, exact=True)
        for stmt in kw.pop("session", ()):
            conn.execute(stmt)
        return F.sweep(conn, reader, qv, tenants, exact, K, fetch=K + 1, **{"floor": 0.95, **kw})


def test_iterative_scans_recover_what_off_leaves_short(world: dict) -> None:
    sw = run_sweep(world, SELECTIVE)
    assert {r.setting for r in sw.rows} == set(F.SETTINGS)  # every setting reported
    assert sw.index_tenants == 2 and sw.tenants == 2 and sw.index == "ix_documents_embedding_hnsw"
    off, strict, relaxed = (sw.at(F.ScanSetting(40, it)) for it in F.ITERATIVE_SCANS)
    assert off.queries == off.index_queries == 60  # the planner reads both through the index at ef_search 40
    assert off.short > 0 and off.recall < 0.95  # fewer than k rows: the bug
    for it in (strict, relaxed):  # resumed until k rows pass the filter: never short, never worse
        assert it.short == 0 and it.recall > off.recall
    assert off.session and sum(r.session for r in sw.rows) == 1  # pgvector's default: what Honcho runs with
    meets = [r.setting for r in sw.rows if r.recall >= 0.95]
    assert sw.recommended == (min(meets, key=lambda s: s.cost_rank) if meets else None)  # the cheapest
    assert all(r.p50_ms is not None and r.p95_ms >= r.p50_ms for r in sw.rows)
    assert F.from_dict(sw.as_dict()) == sw
    lenient = run_sweep(world, SELECTIVE, floor=0.5)  # off stays short of it, the iterative scans reach it
    assert lenient.recommended == F.ScanSetting(40, "strict_order")
    lines = F.advice(lenient, ROLE)
    assert "apply it for Honcho's role" in lines[0]
    assert lines[1:] == [f"  ALTER ROLE \"{ROLE}\" SET hnsw.ef_search = 40;",
                         f"  ALTER ROLE \"{ROLE}\" SET hnsw.iterative_scan = 'strict_order';"]


def test_the_sweep_marks_the_sessions_setting_and_restores_it(world: dict) -> None:
    sw = run_sweep(world, SELECTIVE, per=10, session=["SET hnsw.iterative_scan = strict_order",
                                                      "SET hnsw.ef_search = 64"])
    assert sw.session == F.ScanSetting(64, "strict_order")
    assert sw.at(sw.session) is not None and sw.at(sw.session).session  # swept too: the gate's number
    assert len(sw.rows) == len(F.SETTINGS) + 1
    assert "meets the floor, nothing to apply" in F.advice(run_sweep(
        world, SELECTIVE, per=10, floor=0.5, session=["SET hnsw.iterative_scan = strict_order"]))[0]


def test_a_small_tenant_is_exact_at_every_setting(world: dict) -> None:
    sw = run_sweep(world, (("c", "c"),), per=10)
    assert sw.rows == () and sw.tenants == 1 and sw.index_tenants == 0 and sw.recommended is None
    assert "exact plan" in F.advice(sw)[0]
    both = run_sweep(world, (("c", "c"), ("a", "b")), per=10)
    assert both.tenants == 2 and both.index_tenants == 1
    assert {r.queries for r in both.rows} == {10}  # only the HNSW-served tenant is measured


def test_the_recommendation_lands_in_honchos_settings(world: dict) -> None:
    cfg, url = world["cfg"], world["url"]
    sw = run_sweep(world, SELECTIVE, per=20, floor=0.5)
    space = cfg.legacy_space
    cand = cfg.space("e5_small")
    with connect(url) as conn:
        run_id = persist(conn, {"run": {}, "filtered_recall": [sw.as_dict()]}, {}, source="documents",
                         started_at=dt.datetime.now(dt.UTC), base=space, cands=[cand])
        names = conn.execute("SELECT slice_value, value FROM embed_store.shadow_metrics WHERE run_id = %s"
                             " AND metric = 'filtered_recall@10' AND slice = 'scan'", (run_id,)).fetchall()
    assert {n for n, _ in names} == {s.label for s in F.SETTINGS}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {ROLE} LOGIN")  # Honcho's own role: embed reads as it here
        conn.execute(f"GRANT USAGE ON SCHEMA embed_store TO {ROLE}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA embed_store TO {ROLE}")
    role_url = url.replace("postgres@", f"{ROLE}@", 1)
    try:
        hs = honcho_settings(cfg, role_url, space)
        assert hs.scan is not None and hs.scan.setting == F.ScanSetting(40, "strict_order")
        block = hs.env_block()
        assert f"# ALTER ROLE \"{ROLE}\" SET hnsw.iterative_scan = 'strict_order';" in block
        assert f"documents (shadow #{run_id}, 40 queries on HNSW-served tenants)" in block
        assert hs.as_dict()["scan"]["statements"] == list(hs.scan.statements)
        # the printed statements give the role's new sessions the setting, and nobody else's
        with psycopg.connect(url, autocommit=True) as conn:
            for st in hs.scan.statements:
                conn.execute(st)
        with psycopg.connect(role_url) as conn:
            assert F.session_setting(conn) == F.ScanSetting(40, "strict_order")
        with psycopg.connect(url) as conn:
            assert F.session_setting(conn) == F.ScanSetting(*F.PGVECTOR_DEFAULT)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {ROLE}")
            conn.execute(f"DROP ROLE {ROLE}")
    assert np.isfinite([v for _, v in names if v is not None]).all()


def test_the_sweep_is_printed_and_in_the_html_report(world: dict) -> None:
    import polars as pl

    from embed.shadow import build_result, render_html, render_table

    sw = run_sweep(world, SELECTIVE, per=10, floor=0.5)
    schema = {"qid": pl.String, "space": pl.String, "rank": pl.Int64, "doc_id": pl.String}
    ranks = pl.DataFrame([(f"q{i}", s, r, f"d{i}.{r}") for i in range(4) for s in ("base", "cand") for r in range(1, 11)],
                         schema=schema, orient="row")
    result = build_result(ranks, ("base", "f" * 64), [("cand", "a" * 64)], K, n_boot=20)
    result["filtered_recall"] = [sw.as_dict()]
    text = render_table(result)
    assert "40 off *" in text and "40 strict_order >" in text and "100 relaxed_order" in text
    assert "  ALTER ROLE <honcho role> SET hnsw.iterative_scan = 'strict_order';" in text
    page = render_html(result)
    assert "<h2>Filtered recall as Honcho sees it</h2>" in page and "&lt;honcho role&gt;" in page
    assert page.count("<tr") - render_html({**result, "filtered_recall": []}).count("<tr") == len(sw.rows) + 1


def test_status_says_to_apply_the_setting_when_the_ann_recall_gate_fails(db_url: str, cfg: Config) -> None:
    from embed.fill.status import status
    from embed.store.target import Target
    from embed.store.writer import Rows, Skip, StoreWriter
    from tests.support.backfill import expected, seeded
    from tests.support.gate import plant_backup, plant_gates, plant_shadow
    from tests.test_status import fill

    space = cfg.space("e5_small")
    seeded(db_url, cfg, documents=20, messages=2)
    keep, empty = expected(db_url, cfg)
    fill(db_url, cfg, sorted(keep), keep)
    with connect(db_url) as conn:
        StoreWriter(conn, Target(cfg.source("documents"), space)).write(
            Rows([], [], np.zeros((0, space.dims), np.float32), np.zeros(0, bool)), np.zeros(0, bool),
            [Skip(i, h, "empty") for i, h in empty.items()], run_id=0)
        conn.commit()
    plant_gates(db_url, cfg, space, omit=["shadow"])
    plant_backup(db_url)
    plant_shadow(db_url, cfg, "documents", space, ann_recall=0.62)
    (step,) = status(cfg, db_url, spaces=[space.name], sources=["documents"]).next["documents"]
    assert step.command == f"embed shadow --baseline {cfg.legacy_space.name} --candidate {space.name}"
    assert step.why.startswith("gate shadow_ann_recall fails (ANN recall 0.620")
    assert "first apply the scan setting the shadow's filtered-recall table recommends" in step.why


def test_text_queries_join_stored_rows_of_their_own_space_only() -> None:
    from embed.shadow.inputs import CrossSpaceError, Hits, QueryVectors

    a = QueryVectors("fp-a", ("q1",), np.ones((1, 3), np.float32))
    b = QueryVectors("fp-a", ("r1", "r2"), np.zeros((2, 3), np.float32))
    both = F.joined(a, b)
    assert both.keys == ("q1", "r1", "r2") and both.vectors[0].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(CrossSpaceError):
        F.joined(a, QueryVectors("fp-b", ("r1",), np.zeros((1, 3), np.float32)))
    hits = F.joined_hits(Hits([["x"]], [[0.1]], [1.0]), Hits([["y"], ["z"]], [[0.2], [0.3]], [2.0, 3.0]))
    assert (hits.ids, hits.ms) == ([["x"], ["y"], ["z"]], [1.0, 2.0, 3.0])
