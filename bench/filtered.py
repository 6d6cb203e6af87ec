"""Filtered recall as Honcho sees it: recall and latency per pgvector scan setting (not a test).

    .venv/bin/python bench/filtered.py [--big 100000] [--queries 100] [--db ADMIN_URL] [--json]

Honcho's `documents` (its schema and HNSW index, m=16, ef_construction=64) in one workspace with
skewed collections (observer, observed), the way Honcho's memories pile up: one user with --big
documents, three with 10k / 3k / 1k, and 200 with 50 each, all observed by the same assistant
peer; 384-d vectors (the local legacy space, minilm_l6, in Honcho's column) from a seeded mixture
of shared topics, written by binary COPY before the index is built. Then `embed shadow`'s sweep
(embed.shadow.filtered) per collection class, on --queries of its own rows each searched within
its collection (k=10, the row itself included, as the shadow's served reads): for every
hnsw.ef_search x hnsw.iterative_scan, how many queries the planner served through the HNSW index
(EXPLAIN per setting), recall@10 against the exact ranking of the collection, queries that came
back short of 10 rows, out-of-order results, and latency p50/p95 — all measured side by side in
one run on one server. The vectors carry no meaning: recall is the index's, not a model's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.backfill import database  # noqa: E402
from embed.config import Config  # noqa: E402
from embed.db.connection import connect  # noqa: E402
from embed.shadow import filtered as F  # noqa: E402
from embed.shadow.inputs import SpaceReader  # noqa: E402
from tests.support.tenants import WORKSPACE, tenant_documents  # noqa: E402

K = 10
ASSISTANT = "assistant"


def collections(big: int) -> dict[tuple[str, str], int]:
    out = {(ASSISTANT, "user-big"): big, (ASSISTANT, "user-10k"): 10_000, (ASSISTANT, "user-3k"): 3_000,
           (ASSISTANT, "user-1k"): 1_000}
    out |= {(ASSISTANT, f"user-{i:03d}"): 50 for i in range(200)}
    return out


def classes(big: int) -> dict[str, list[tuple[str, str]]]:
    return {f"{big // 1000}k": [(ASSISTANT, "user-big")], "10k": [(ASSISTANT, "user-10k")],
            "3k": [(ASSISTANT, "user-3k")], "1k": [(ASSISTANT, "user-1k")],
            "50 (x200)": [(ASSISTANT, f"user-{i:03d}") for i in range(200)]}


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", type=int, default=100_000, help="documents of the largest collection")
    ap.add_argument("--queries", type=int, default=100, help="stored rows searched per collection class")
    ap.add_argument("--db", help="a PostgreSQL URL to create the temporary database on (default: embedded)")
    ap.add_argument("--json", action="store_true", help="the last line: every row as JSON")
    args = ap.parse_args()
    cfg = Config.load(ROOT, "local")
    space = cfg.legacy_space
    url, cleanup = database(args)
    out: dict[str, list[dict]] = {}
    sweeps: list[F.FilteredSweep] = []
    try:
        print(f"load average {load()} (1/5/15 min) at start", flush=True)
        t0 = time.monotonic()
        sizes = tenant_documents(url, collections(args.big), dims=space.dims)
        print(f"prepared {sum(sizes.values())} documents in {len(sizes)} collections ({space.dims}-d, HNSW built): "
              f"{time.monotonic() - t0:.0f} s", flush=True)
        rng = np.random.default_rng(5)
        with connect(url) as conn:
            reader = SpaceReader(conn, cfg, cfg.source("documents"), space)
            reader.check(conn)
            for name, members in classes(args.big).items():
                rows = conn.execute(
                    "SELECT id, observed FROM documents WHERE observer = %s AND observed = ANY(%s) ORDER BY id",
                    (ASSISTANT, [m[1] for m in members])).fetchall()
                pick = [rows[i] for i in np.sort(rng.choice(len(rows), min(args.queries, len(rows)), replace=False))]
                tenants = [(WORKSPACE, ASSISTANT, observed) for _, observed in pick]
                qv = reader.stored(conn, [i for i, _ in pick])
                exact = reader.search(conn, qv, tenants, K + 1, exact=True)
                t1 = time.monotonic()
                sw = F.sweep(conn, reader, qv, tenants, exact, K, floor=0.95, limit=args.queries, fetch=K + 1)
                out[name] = [r.__dict__ | {"recommended": r.setting == sw.recommended} for r in sw.rows]
                sweeps.append(sw)
                print(f"\ncollection {name}: {len(pick)} queries, {sw.index_tenants}/{sw.tenants} tenant filter(s) "
                      f"planned through HNSW at some setting, sweep {time.monotonic() - t1:.1f} s, load {load()}")
                if not sw.rows:
                    print("  exact plan (btree + sort) at every setting: recall 1.000 whatever the setting")
                    continue
                print(f"  {'ef_search iterative_scan':<28}{'via HNSW':>9}{'recall':>8}{'short':>7}{'unordered':>10}"
                      f"{'p50 ms':>9}{'p95 ms':>9}")
                for r in sw.rows:
                    mark = ("*" if r.session else "") + (">" if r.setting == sw.recommended else "")
                    print(f"  {f'{r.ef_search} {r.iterative_scan} {mark}':<28}{r.index_queries:>9}"
                          f"{F.fmt(r.recall):>8}{r.short:>7}{r.unordered:>10}{r.p50_ms:>9.2f}{r.p95_ms:>9.2f}")
                print("  " + "\n  ".join(F.advice(sw)))
    finally:
        cleanup()
    one = F.combine(sweeps)
    print(f"\n* pgvector's default (what Honcho runs with unless told), > the cheapest meeting recall 0.95 in that "
          f"class; one setting for every class (a role has one): {one.label if one else 'none meets 0.95'}; "
          f"load average {load()} at the end")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
