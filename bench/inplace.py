"""In-place cutover benchmark: how long `stage` takes and how long `swap` holds its lock (not a test).

    .venv/bin/python bench/inplace.py [--scale small|honcho] [--cycles 3] [--db ADMIN_URL] [--json]

Honcho-shaped tables at the scale's size with synthetic legacy (minilm_l6) vectors and Honcho's
HNSW indexes in place, a complete e5_small store; then, with a writer thread inserting like
Honcho's API throughout:
  stage       the staged columns filled by batched UPDATEs (each also inserts into Honcho's live
              HNSW index: the dominant cost), their HNSW indexes built CONCURRENTLY;
  swap        lock held (lock acquired to commit), repeated for --cycles swap / swap_back pairs;
  writer      the longest single insert while all that ran (how long Honcho would wait).
Target (DESIGN.md section 10): the lock is held < 1 s at Honcho scale (40k rows).
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
from embed.config import Config  # noqa: E402
from embed.cutover import inplace  # noqa: E402
from tests.support.inplace import LEGACY, NEW, Writer, fill_store, honcho_db  # noqa: E402


def run(cfg: Config, url: str, args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {"scale": args.scale}
    t0 = time.monotonic()
    docs, msgs = SCALES[args.scale]
    honcho_db(url, cfg, documents=docs, messages=msgs)
    fill_store(url, cfg)
    out["seed_s"] = round(time.monotonic() - t0, 1)
    say(f"seeded {docs} documents + {msgs} message chunks with legacy vectors in {out['seed_s']} s")
    writer = Writer(url)
    writer.start()
    try:
        staged = inplace.stage(cfg, url, NEW, progress=True)
        out["stage_s"] = {s: v.seconds for s, v in staged.sources.items()}
        out["index_s"] = {s: v.index.seconds for s, v in staged.sources.items()}
        out["rows_staged"] = staged.rows_staged
        say(f"stage: {staged.rows_staged} rows, {out['stage_s']} s per source "
            f"(of which the CONCURRENTLY index build {out['index_s']} s)")
        locks: list[float] = []
        waits: list[float] = []
        for _ in range(args.cycles):
            for r in (inplace.swap(cfg, url, NEW), inplace.swap_back(cfg, url, cfg.space(LEGACY), embed_missing=False)):
                locks.append(r["lock_ms"])
                waits.append(r["lock_wait_ms"])
    finally:
        writer.stop.set()
        writer.join(30)
    out.update(lock_ms=locks, lock_ms_median=statistics.median(locks), lock_ms_max=max(locks),
               lock_wait_ms_max=max(waits),
               writer_inserts=len(writer.docs) + len(writer.msgs), writer_errors=len(writer.errors),
               writer_longest_insert_ms=round(writer.max_wait * 1000, 1))
    say(f"swap lock held: median {out['lock_ms_median']} ms, max {out['lock_ms_max']} ms over {len(locks)} swaps "
        f"(target < 1000 ms), longest wait for it {out['lock_wait_ms_max']} ms; writer: {out['writer_inserts']} inserts, {out['writer_errors']} errors, "
        f"longest {out['writer_longest_insert_ms']} ms")
    return out


if __name__ == "__main__":
    run_bench(run, __doc__, "honcho", lambda ap: ap.add_argument("--cycles", type=int, default=3, help="swap / swap_back pairs to time"))
