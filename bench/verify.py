"""`embed verify` against the store: its cost per row next to a plain SELECT of the same rows (not a test).

    .venv/bin/python bench/verify.py [--scale small|honcho] [--repeat 3] [--db ADMIN_URL] [--json]

Honcho-shaped tables at the scale's size (honcho: ~40k rows over both tables) whose live column
holds synthetic legacy (minilm_l6) vectors, and a complete store of the same space. Then, side by
side, best of --repeat:
  verify    embed.verify.verify of the legacy space on the live column: every row against the
            store's vector for its content (cosine in the database; no model call);
  select    a plain SELECT of the same rows (id, text, vector), fetched to the client;
  scan      the same rows with every vector read on the server but only its dims sent (the
            cheapest SELECT that touches every vector: the stricter baseline).
Target (DESIGN.md section 10): verify <= 3x the plain SELECT.
Then the watch (`embed verify --watch`, every `embed sync` pass) with nothing new: Honcho's rows
date from before the swap (created_at, last_sync_at a day old), the live columns are recorded as
swapped in (the bookkeeping a swap writes), a first pass records every row version, and the next
pass, best of --repeat, is timed; its statement's plan on the source tables is printed (the
planner's own choice at this size), next to the full scan it replaces (a source without written_at).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from psycopg import sql  # noqa: E402

from bench.backfill import SCALES, run_bench, say  # noqa: E402
from embed.config import Config  # noqa: E402
from embed.cutover.inplace_sql import record_column  # noqa: E402
from embed.db.connection import connect  # noqa: E402
from embed.store.target import Target  # noqa: E402
from embed.verify import column_query, verify, watch_mark  # noqa: E402
from tests.support.inplace import LEGACY, fill_store, honcho_db  # noqa: E402

PLAIN = {
    "documents": "SELECT id, content, embedding FROM documents WHERE deleted_at IS NULL AND embedding IS NOT NULL",
    "message_embeddings": "SELECT id, content, embedding FROM message_embeddings WHERE embedding IS NOT NULL",
}


def plain_select(url: str, scan: bool = False) -> int:
    n = 0
    with connect(url) as conn:
        for q in PLAIN.values():
            n += len(conn.execute(q.replace("content, embedding", "vector_dims(embedding)") if scan else q).fetchall())
    return n


def run(cfg: Config, url: str, args: argparse.Namespace) -> dict[str, object]:
    docs, msgs = SCALES[args.scale]
    t0 = time.monotonic()
    honcho_db(url, cfg, documents=docs, messages=msgs)
    with connect(url) as conn:  # Honcho's history: written before the swap
        for name in PLAIN:
            conn.execute(f"UPDATE {name} SET created_at = now() - interval '1 day', last_sync_at = now() - interval '1 day'")
        conn.commit()
        conn.autocommit = True
        for name in PLAIN:
            conn.execute(f"VACUUM ANALYZE {name}")
    fill_store(url, cfg, LEGACY)
    say(f"seeded {docs} documents + {msgs} message chunks, legacy store complete, in {time.monotonic() - t0:.1f} s")
    best_v = best_s = best_c = float("inf")
    checked = rows = 0
    for _ in range(args.repeat):
        t = time.monotonic()
        res = verify(cfg, url, LEGACY)
        best_v = min(best_v, time.monotonic() - t)
        checked = sum(c.checked for c in res.locations)
        assert res.passed and all(c.from_store == c.checked for c in res.locations), "expected a clean store-only check"
        t = time.monotonic()
        rows = plain_select(url)
        best_s = min(best_s, time.monotonic() - t)
        t = time.monotonic()
        assert plain_select(url, scan=True) == rows
        best_c = min(best_c, time.monotonic() - t)
    with connect(url) as conn:  # what a swap records: the live columns hold the space
        for name in PLAIN:
            conn.execute(*record_column(name, "embedding", cfg.legacy_space.fingerprint, cfg.legacy_space.fingerprint))
        conn.commit()
    first = sum(c.checked for c in verify(cfg, url, LEGACY, since_last=True).locations)
    best_w = best_i = best_f = float("inf")
    targets = [Target(cfg.source(name), cfg.legacy_space) for name in PLAIN]
    for _ in range(args.repeat):
        t = time.monotonic()
        again = sum(c.checked for c in verify(cfg, url, LEGACY, since_last=True).locations)
        best_w = min(best_w, time.monotonic() - t)
        assert again == 0, "nothing new was written: a watch pass must compare no row"
        with connect(url) as conn:
            t = time.monotonic()  # the pass's own statements: the mark, then the rows it selects
            for tg in targets:
                conn.execute(column_query(tg, "embedding", since_last=True,
                                          written_since=watch_mark(conn, tg, "embedding"))).fetchall()
            best_i = min(best_i, time.monotonic() - t)
            t = time.monotonic()  # the statement a source without written_at runs instead
            for tg in targets:
                conn.execute(column_query(tg, "embedding", since_last=True)).fetchall()
            best_f = min(best_f, time.monotonic() - t)
    plans = {}
    with connect(url) as conn:
        for name in PLAIN:
            t = Target(cfg.source(name), cfg.legacy_space)
            q = column_query(t, "embedding", since_last=True, written_since=watch_mark(conn, t, "embedding"))
            lines = [r[0] for r in conn.execute(sql.SQL("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) ") + q)]
            plans[name] = [ln.strip() for ln in lines if f" on {name}" in ln or "ix_" in ln]
    out = {"scale": args.scale, "watch_first_pass_rows": first, "watch_idle_s": round(best_w, 3),
           "watch_statements_s": round(best_i, 4), "watch_full_scan_s": round(best_f, 3), "watch_plans": plans, "rows_checked": checked, "rows_selected": rows, "verify_s": round(best_v, 3),
           "select_s": round(best_s, 3), "verify_us_per_row": round(best_v / checked * 1e6, 1),
           "select_us_per_row": round(best_s / rows * 1e6, 1), "ratio": round(best_v / best_s, 2),
           "scan_s": round(best_c, 3), "ratio_to_scan": round(best_v / best_c, 2)}
    say(f"verify (store, no model): {checked} rows in {out['verify_s']} s ({out['verify_us_per_row']} us/row); "
        f"plain SELECT of the same rows: {out['select_s']} s ({out['select_us_per_row']} us/row); "
        f"ratio {out['ratio']}x (target <= 3x); server-side scan of the same vectors: {out['scan_s']} s, "
        f"ratio {out['ratio_to_scan']}x")
    say(f"watch: first pass {first} rows; a pass with nothing new: {out['watch_idle_s']} s in all (connection, "
        f"catalog and event lookups included; no vector compared); its statements alone (mark + index read, both "
        f"tables): {out['watch_statements_s']} s; the full row-version scan they replace: {out['watch_full_scan_s']} s")
    for name, nodes in plans.items():
        say(f"  watch plan, {name}: " + " | ".join(nodes))
    return out


if __name__ == "__main__":
    run_bench(run, __doc__, "honcho", lambda ap: ap.add_argument("--repeat", type=int, default=3, help="runs of each, best kept"))
