"""In-place cutover benchmark: how long `stage` takes and how long `swap` holds its lock (not a test).

    .venv/bin/python bench/inplace.py [--scale small|honcho|honcho_x10] [--cycles 3] [--no-honcho-index]
                                      [--db ADMIN_URL] [--json]

Honcho-shaped tables at the scale's size with synthetic legacy (minilm_l6) vectors and Honcho's
HNSW indexes in place (--no-honcho-index drops them for staging, ~3x faster, and builds them again
after it: the lock does not depend on them), a complete e5_small store; then, with a writer thread inserting like
Honcho's API throughout:
  stage       the staged columns filled by batched UPDATEs (each also inserts into Honcho's live
              HNSW index: the dominant cost), their HNSW indexes built CONCURRENTLY; the tables'
              size before, after, and after a plain VACUUM (the old row versions are dead tuples);
  swap        lock held (lock acquired to commit) and rows checked in it, for --cycles swap /
              swap_back pairs; the lock checks only the rows the change queue names;
  before      in the same run on the same tables, what the lock did before the change queue: the
              staged column's catch-up over every live row (one scan per table, compared by xmin),
              under the same exclusive lock, rolled back;
  switch      per cycle, the whole swap (catch-up from the change queue, lock, renames) and the
              whole swap back, against what each switch also did before it until f4b207a: a
              cutover staged again (every row passed, both tables VACUUMed: `stage` on the staged
              tables), a rollback made a pass over every row of the parked column (`fill_column`
              of the legacy space without embedding), each run right before the swap it preceded;
  writer      the longest single insert while all that ran (how long Honcho would wait).
Run it at two or three scales: the lock must not grow with the table (<= 1.5x per 10x rows).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from psycopg import sql  # noqa: E402

from bench.backfill import SCALES, run_bench, say  # noqa: E402
from embed.config import Config  # noqa: E402
from embed.cutover import inplace, inplace_run, inplace_sql  # noqa: E402
from embed.db.connection import connect  # noqa: E402
from embed.honcho.synthetic.schema import create_hnsw_indexes, hnsw_index_name  # noqa: E402
from embed.spaces import Space  # noqa: E402
from embed.store.target import Target  # noqa: E402
from tests.support.inplace import LEGACY, NEW, Writer, fill_store, honcho_db  # noqa: E402


def full_scan_lock_ms(cfg: Config, url: str, space: Space) -> float:
    """The locked work of the swap before the change queue: every live row's staged value
    checked (inplace_sql.stale over the whole table, states included), under the swap's lock,
    rolled back. Milliseconds from the lock acquired to the end of the checks."""
    srcs = inplace_run.sources_of(cfg)
    with inplace_run.session(url) as conn, conn.transaction(force_rollback=True):
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
            sql.SQL(", ").join(Target(s, space).src for s in srcs)))
        t0 = time.monotonic()
        for src in srcs:
            inplace_run.refresh(conn, Target(src, space), inplace_sql.tagged_column(src, space), states=True)
        return round((time.monotonic() - t0) * 1000, 1)


T = TypeVar("T")


def timed(fn: Callable[[], T], into: list[float]) -> T:
    """fn's result; its seconds appended to `into`."""
    t0 = time.monotonic()
    out = fn()
    into.append(round(time.monotonic() - t0, 2))
    return out


def sizes_mb(url: str) -> dict[str, float]:
    """Heap + TOAST and index megabytes of Honcho's two tables together."""
    with connect(url) as conn:
        heap, idx = conn.execute("SELECT sum(pg_table_size(c)), sum(pg_indexes_size(c)) FROM unnest("
                                 "ARRAY['public.documents', 'public.message_embeddings']::regclass[]) AS c").fetchone()
    return {"table_mb": round(float(heap) / 2**20, 1), "indexes_mb": round(float(idx) / 2**20, 1)}


def run(cfg: Config, url: str, args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {"scale": args.scale, "honcho_index": not args.no_honcho_index}
    t0 = time.monotonic()
    docs, msgs = SCALES[args.scale]
    honcho_db(url, cfg, documents=docs, messages=msgs)
    fill_store(url, cfg)
    with connect(url, autocommit=True) as conn:
        out["rows"] = sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                          for t in ("documents", "message_embeddings"))
        if args.no_honcho_index:
            for t in ("documents", "message_embeddings"):
                conn.execute(f"DROP INDEX {hnsw_index_name(t)}")
    out["seed_s"] = round(time.monotonic() - t0, 1)
    out["size_before_stage"] = sizes_mb(url)
    say(f"seeded {docs} documents + {msgs} message chunks ({out['rows']} rows) with legacy vectors in {out['seed_s']} s")
    writer = Writer(url)
    writer.start()
    locks: list[float] = []
    back: list[float] = []
    waits: list[float] = []
    checked: list[int] = []
    before: list[float] = []
    before_back: list[float] = []
    restage: list[float] = []
    refill: list[float] = []
    swaps: list[float] = []
    swaps_back: list[float] = []
    try:
        staged = inplace.stage(cfg, url, NEW, progress=True)
        out["stage_s"] = {s: v.seconds for s, v in staged.sources.items()}
        out["index_s"] = {s: v.index.seconds for s, v in staged.sources.items()}
        out["rows_staged"] = staged.rows_staged
        say(f"stage: {staged.rows_staged} rows, {out['stage_s']} s per source "
            f"(of which the CONCURRENTLY index build {out['index_s']} s)")
        out["size_after_stage"] = sizes_mb(url)
        t1 = time.monotonic()
        with connect(url, autocommit=True) as conn:  # the staged rows' old versions are dead tuples
            conn.execute("VACUUM (ANALYZE) public.documents, public.message_embeddings")
        out["vacuum_s"] = round(time.monotonic() - t1, 1)
        out["size_after_vacuum"] = sizes_mb(url)
        say(f"Honcho's tables (heap+TOAST, indexes) before stage {out['size_before_stage']}, after "
            f"{out['size_after_stage']}, after VACUUM ({out['vacuum_s']} s) {out['size_after_vacuum']}")
        if args.no_honcho_index:  # Honcho's indexes back (the rollback swaps its column back in)
            t1 = time.monotonic()
            with connect(url, autocommit=True) as conn:
                conn.execute("SET maintenance_work_mem = '512MB'")
                create_hnsw_indexes(conn)
            say(f"Honcho's HNSW indexes rebuilt in {time.monotonic() - t1:.1f} s")
        for _ in range(args.cycles):
            before.append(full_scan_lock_ms(cfg, url, cfg.space(NEW)))
            timed(lambda: inplace.stage(cfg, url, NEW), restage)
            fwd = timed(lambda: inplace.swap(cfg, url, NEW), swaps)
            before_back.append(full_scan_lock_ms(cfg, url, cfg.space(LEGACY)))
            timed(lambda: inplace.fill_column(cfg, url, LEGACY, embed_missing=False), refill)
            rev = timed(lambda: inplace.swap_back(cfg, url, cfg.space(LEGACY), embed_missing=False), swaps_back)
            locks.append(fwd["lock_ms"])
            back.append(rev["lock_ms"])
            waits += [fwd["lock_wait_ms"], rev["lock_wait_ms"]]
            checked += [fwd["rows_checked_in_lock"], rev["rows_checked_in_lock"]]
    finally:
        writer.stop.set()
        writer.join(30)
    out.update(lock_ms=locks, lock_ms_median=statistics.median(locks), rollback_lock_ms=back,
               rollback_lock_ms_median=statistics.median(back), lock_wait_ms_max=max(waits),
               rows_checked_in_lock=checked, full_scan_lock_ms=before,
               full_scan_lock_ms_median=statistics.median(before), full_scan_rollback_lock_ms=before_back,
               full_scan_rollback_lock_ms_median=statistics.median(before_back),
               writer_inserts=len(writer.docs) + len(writer.msgs), writer_errors=len(writer.errors),
               writer_longest_insert_ms=round(writer.max_wait * 1000, 1), swap_s=swaps, swap_back_s=swaps_back,
               restage_s=restage, refill_s=refill)
    say(f"swap lock held: median {out['lock_ms_median']} ms {locks}; rollback: median {out['rollback_lock_ms_median']} ms "
        f"{back}; rows checked in the lock {checked} of {out['rows']}; longest wait for it {out['lock_wait_ms_max']} ms")
    say(f"before (the lock's full scan, same tables, same run): swap median {out['full_scan_lock_ms_median']} ms "
        f"{before}; rollback median {out['full_scan_rollback_lock_ms_median']} ms {before_back}")
    med = {k: round(statistics.median(v), 2) for k, v in (("swap", swaps), ("restage", restage),
                                                         ("back", swaps_back), ("refill", refill))}
    say(f"switch: swap {med['swap']} s {swaps}, before it also staged again {med['restage']} s {restage}; "
        f"swap back {med['back']} s {swaps_back}, before it also passed every row {med['refill']} s {refill} (medians)")
    say(f"writer: {out['writer_inserts']} inserts, {out['writer_errors']} errors, "
        f"longest {out['writer_longest_insert_ms']} ms")
    return out


if __name__ == "__main__":
    def options(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--cycles", type=int, default=3, help="swap / swap_back pairs to time")
        ap.add_argument("--no-honcho-index", action="store_true", help="drop Honcho's HNSW indexes before stage")

    run_bench(run, __doc__, "honcho", options)
