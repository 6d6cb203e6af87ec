"""Shadow-run benchmark: seconds per phase of `embed shadow` (not a test).

    .venv/bin/python bench/shadow.py [--scale tiny|small|honcho] [--queries 1000] [--k 10]
                                     [--labels provenance|seeded] [--candidate bge_m3]
                                     [--query-embedder real|synthetic] [--db URL]

Builds a Honcho-shaped corpus (embed.honcho.synthetic.corpus SCALES; honcho = ~26k documents + ~13.5k
message_embeddings) with two spaces: the legacy minilm_l6 vectors in the source columns and
the candidate's (default bge_m3) in its store tables, both deterministic synthetic unit vectors
(sha256-seeded, as tests/conftest.py makes them) loaded with binary COPY, HNSW-indexed as Honcho
indexes them (m=16, ef_construction=64). Then one shadow run over every source: --queries stored
rows per source as label-free queries, plus labelled queries capped by --queries: Honcho's
provenance (the default: every message with derived documents, every document citing messages;
both spaces are symmetric, so every query vector is read from the store and the columns and the
line says how many query-model calls there were: the target is none), or the seeded set on
documents, embedded by the real models (--query-embedder real: model load included) or by
sha256-seeded vectors (synthetic: no model at all). The synthetic vectors carry no meaning, so the metric
values are noise: only the timings count. The run includes the filtered-recall sweep (phase
`sweep`: embed.shadow.filtered, each space's stored rows on HNSW-served tenants at every scan
setting); its advice per space is printed under each source (bench/filtered.py measures it on
a 100k-row tenant). The database is a private embedded PostgreSQL in a
temp directory unless --db is given (then a temporary database there, dropped at the end).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embed import store  # noqa: E402
from embed.config import Config  # noqa: E402
from embed.db.connection import connect  # noqa: E402
from embed.embedders import EmbedResult  # noqa: E402
from embed.honcho.synthetic.corpus import SCALES, generate  # noqa: E402
from embed.honcho.synthetic.seed import seed  # noqa: E402
from embed.shadow.filtered import advice, fmt  # noqa: E402
from embed.shadow.run import Phases, shadow  # noqa: E402
from embed.spaces import Space  # noqa: E402
from embed.store.indexes import ensure_hnsw  # noqa: E402
from embed.store.target import Target, content_hash  # noqa: E402
from embed.store.writer import Rows, copy_statement, encode_parts  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from backfill import database  # noqa: E402  (bench/backfill.py: a fresh database, embedded or on --db)

BASELINE = "minilm_l6"
PHASES = (
    "labels",
    "query vectors",
    "check",
    "sample",
    "ann",
    "neighbours",
    "exact",
    "sweep",
    "probe",
    "distances",
    "metrics",
    "persist",
)


def unit_vectors(texts: list[str], dims: int, salt: str) -> np.ndarray:
    """sha256(salt + text)-seeded unit vectors: same text, same vector; another salt, another space."""
    out = np.empty((len(texts), dims), dtype=np.float32)
    for i, t in enumerate(texts):
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256((salt + t).encode()).digest()[:8], "little"))
        out[i] = rng.standard_normal(dims)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


class SyntheticEmbedder:
    """Query vectors without a model (for a quick run of everything else); counts its calls."""

    def __init__(self, space: Space) -> None:
        self.space = space
        self.calls = 0

    def embed(self, texts: list[str], kind: str) -> EmbedResult:
        self.calls += 1
        return EmbedResult(unit_vectors(texts, self.space.dims, self.space.name + kind), np.zeros(len(texts), bool))

    def close(self) -> None:
        pass


def prepare(cfg: Config, url: str, scale: str, candidate: str) -> dict[str, int]:
    """Seed the corpus with legacy vectors, then fill and index the candidate's store tables."""
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS vector")
    base, cand = cfg.space(BASELINE), cfg.space(candidate)
    n_docs, n_msgs = SCALES[scale]
    with connect(url) as conn:
        counts = seed(
            conn,
            generate(seed=7, documents=n_docs, messages=n_msgs),
            dims=base.dims,
            vectors=lambda texts: unit_vectors(texts, base.dims, BASELINE),
        )
        store.init(conn, cfg)
    for source in cfg.sources.values():
        t = Target(source, cand)
        with connect(url) as conn:
            rows = conn.execute(
                sql.SQL("SELECT s.id, s.text FROM ({}) AS s WHERE btrim(coalesce(s.text, '')) <> ''").format(
                    t.live_rows()
                )
            ).fetchall()
            texts = [r[1] for r in rows]
            batch = Rows(
                [r[0] for r in rows],
                [content_hash(x) for x in texts],
                unit_vectors(texts, cand.dims, candidate),
                np.zeros(len(rows), bool),
            )
            with conn.cursor() as cur, cur.copy(copy_statement(t.store)) as cp:
                for part in encode_parts(batch, source.id_type, cand.fingerprint, 0):
                    cp.write(part)
            conn.commit()
        with connect(url, autocommit=True) as conn:
            ensure_hnsw(conn, t, cfg.index_params, concurrently=False)
            conn.execute(sql.SQL("ANALYZE {}").format(t.store))
        counts[f"{t.table}"] = len(rows)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="honcho")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--labels", choices=("provenance", "seeded"), default="provenance")
    ap.add_argument("--candidate", default="bge_m3", help="a space without a query prefix reads its query vectors")
    ap.add_argument("--query-embedder", choices=("real", "synthetic"), default="real")
    ap.add_argument("--db", help="a PostgreSQL URL to create the temporary database on (default: embedded)")
    args = ap.parse_args()
    cfg = Config.load(ROOT, "local")
    url, cleanup = database(args)
    try:
        t0 = time.monotonic()
        counts = prepare(cfg, url, args.scale, args.candidate)
        print(
            f"prepared {args.scale}: {counts.get('documents')} documents, {counts.get('message_embeddings')} "
            f"message_embeddings, two spaces ({BASELINE} in the source columns, {args.candidate} in store tables), "
            f"{time.monotonic() - t0:.1f}s",
            flush=True,
        )
        embedders = None
        if args.query_embedder == "synthetic" or args.labels == "provenance":  # provenance: counted, never needed
            embedders = {n: SyntheticEmbedder(cfg.space(n)) for n in (BASELINE, args.candidate)}
        phases = Phases(say=lambda line: print("  " + line, file=sys.stderr, flush=True))
        t0 = time.monotonic()
        results = shadow(
            cfg,
            url,
            baseline=BASELINE,
            candidates=[args.candidate],
            queries=args.queries,
            labels=args.labels,
            k=args.k,
            n_boot=args.n_boot,
            embedders=embedders,
            phases=phases,
        )
        total = time.monotonic() - t0
    finally:
        cleanup()
    calls = sum(e.calls for e in (embedders or {}).values())
    print(
        f"\nshadow run: {args.queries} stored-row queries per source + {args.labels} labelled queries (capped "
        f"by --queries), k={args.k}, 2 spaces, query-model calls: {calls if embedders else 'real models'}"
    )
    print(f"{'phase':<16}{'seconds':>9}{'share':>8}")
    for name in [*PHASES, *(p for p in phases.seconds if p not in PHASES)]:
        s = phases.seconds.get(name)
        if s is not None:
            print(f"{name:<16}{s:>9.2f}{100 * s / total:>7.1f}%")
    print(f"{'total':<16}{total:>9.2f}")
    for source, r in results.as_dict().items():
        run = r["run"]
        recall = {x["space"]: round(x["value"], 3) for x in r["ann_recall"]}
        grecall = {x["space"]: round(x["value"], 3) for x in r["ann_recall_global"]}
        lat = {x["space"]: f"{x['p50']:.2f}/{x['p95']:.2f}" for x in r["latency_ms"]}
        print(
            f"{source}: {run['n_queries']} queries ({run['n_labelled_queries']} labelled, {r['labels']}); served ANN "
            f"recall {recall}; unfiltered HNSW recall {grecall}; served latency p50/p95 ms {lat}"
        )
        print(f"  query vectors: {r['label_details']['query_vectors']}; left out: {r['label_details']['excluded']}")
        for sw in results[source].filtered:
            for x in sw.rows:
                print(f"  {sw.space} {x.setting.label}{' *' if x.session else ''}: {x.index_queries}/{x.queries} via "
                      f"HNSW, recall {fmt(x.recall)}, {x.short} short, {x.unordered} out of order, p50/p95 "
                      f"{x.p50_ms:.2f}/{x.p95_ms:.2f} ms")
            print("  filtered recall: " + "\n  ".join(advice(sw)))


if __name__ == "__main__":
    main()
