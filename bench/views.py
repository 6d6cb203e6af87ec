"""Reads through the views vs the same reads on the tables (not a test).

    .venv/bin/python bench/views.py [--scale small|honcho] [--repeat 30] [--db ADMIN_URL] [--json]

Honcho-shaped documents at the scale's size, a complete store of a second space (synthetic
384-d vectors, HNSW built after the load as a backfill does), the SQLMesh views planned. Then,
side by side in one run, warm, the median of --repeat queries each:
  unfiltered   top-10 through embed.documents__<space>  vs  the store table alone;
  tenant       top-10 with Honcho's tenant filter (workspace, observer, observed) through the
               view  vs  the join written by hand (store + live source rows), for the largest
               and the smallest tenant.
Each line says whether the plan scanned the HNSW index. Target (DESIGN.md section 10): through
the views within 1.2x of the direct query, the index still used where the direct query uses it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.backfill import SCALES, run_bench, say  # noqa: E402
from embed import mesh  # noqa: E402
from embed.config import Config  # noqa: E402
from embed.db.connection import connect  # noqa: E402
from embed.store import table_name  # noqa: E402
from embed.store.indexes import ensure_hnsw  # noqa: E402
from embed.store.target import Target  # noqa: E402
from tests.support.inplace import NEW, fill_store, honcho_db, synthetic  # noqa: E402

TOP = "SELECT {id} FROM {rel} {where} ORDER BY {vec} OPERATOR(public.<=>) %(q)s LIMIT 10"
TENANT = "WHERE {p}workspace_name = %(ws)s AND {p}observer = %(observer)s AND {p}observed = %(observed)s"


def timed(url: str, query: str, params: list[dict[str, object]]) -> tuple[float, bool]:
    """(median ms, whether the plan scans an HNSW index) of `query` over the parameter sets."""
    with connect(url) as conn:
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + query, params[0]))
        for p in params[:3]:  # warm
            conn.execute(query, p).fetchall()
        times = []
        for p in params:
            t0 = time.perf_counter()
            conn.execute(query, p).fetchall()
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), "embedding_idx" in plan


def run(cfg: Config, url: str, args: argparse.Namespace) -> dict[str, object]:
    docs, msgs = SCALES[args.scale]
    honcho_db(url, cfg, documents=docs, messages=msgs)
    fill_store(url, cfg)
    target = Target(cfg.source("documents"), cfg.space(NEW))
    with connect(url, autocommit=True) as conn:
        ensure_hnsw(conn, target, cfg.index_params, concurrently=False)
        conn.execute("ANALYZE")
        tenants = conn.execute(
            "SELECT workspace_name, observer, observed, count(*) FROM documents WHERE deleted_at IS NULL "
            "GROUP BY 1, 2, 3 ORDER BY 4 DESC").fetchall()
    mesh.plan(cfg, url)
    say(f"seeded {docs} documents, store of {NEW} complete, views planned; {len(tenants)} tenants "
        f"(largest {tenants[0][3]} rows, smallest {tenants[-1][3]})")
    queries = synthetic(NEW, [f"bench query {i}" for i in range(args.repeat)])
    view, store = f"embed.documents__{NEW}", f"embed_store.{table_name(target.source, target.space)}"
    join = f"{store} v JOIN documents s ON s.id = v.source_id AND s.deleted_at IS NULL"
    out: dict[str, object] = {"scale": args.scale, "documents": docs}
    cases = [("unfiltered", None, TOP.format(id="source_id", rel=view, where="", vec="embedding"),
              TOP.format(id="source_id", rel=store, where="", vec="embedding"))]
    for label, t in (("tenant_largest", tenants[0]), ("tenant_smallest", tenants[-1])):
        cases.append((label, t, TOP.format(id="source_id", rel=view, where=TENANT.format(p=""), vec="embedding"),
                      TOP.format(id="v.source_id", rel=join, where=TENANT.format(p="s."), vec="v.embedding")))
    for label, tenant, via_view, direct in cases:
        ws = dict(zip(("ws", "observer", "observed"), tenant[:3], strict=True)) if tenant else {}
        params = [{"q": q, **ws} for q in queries]
        v_ms, v_idx = timed(url, via_view, params)
        d_ms, d_idx = timed(url, direct, params)
        out[label] = {"view_ms": round(v_ms, 3), "direct_ms": round(d_ms, 3), "ratio": round(v_ms / d_ms, 2),
                      "view_hnsw": v_idx, "direct_hnsw": d_idx}
        say(f"{label:16s} view {v_ms:7.2f} ms (hnsw {v_idx})  direct {d_ms:7.2f} ms (hnsw {d_idx})  "
            f"view/direct {v_ms / d_ms:.2f}")
    return out


if __name__ == "__main__":
    run_bench(run, __doc__, "small", lambda ap: ap.add_argument("--repeat", type=int, default=30, help="queries per case (median kept)"))
