"""The in-place change queue's cost on Honcho's write path (not a test).

    .venv/bin/python bench/trigger.py [--rows 10000] [--inserts 40] [--batch 20] [--rounds 16]
                                      [--db ADMIN_URL] [--json]

While a stage is open, every INSERT or UPDATE Honcho makes on `documents` and `message_embeddings`
fires `embed_inplace_changes` (embed_store.inplace_queue, SECURITY DEFINER), which writes a queue
row per space with a column there. This measures what that adds to Honcho's own inserts.

Set-up, as production has it before a swap: Honcho-shaped tables at --rows rows over both
tables with text-embedding-3-small's 1536-d column (gateway `honcho`: legacy space
openai_3_small) and Honcho's HNSW index on it (m=16, ef_construction=64), a complete bge_m3 store
(seeded generator vectors), and `embed cutover --mode honcho-inplace`'s stage run for bge_m3 (so
the trigger queues each write for the staged space and for the live column's space).

Then --rounds rounds, each once with the trigger enabled and once disabled, back to back (ALTER
TABLE ... ENABLE / DISABLE TRIGGER: the same function and queue, nothing else differs; the order
alternates, and many short rounds pair each side with the load the other saw), each side doing:
  single     --inserts single-row INSERTs per table, one transaction each, a new 1536-d unit vector
             sent as the text literal pgvector's SQLAlchemy type binds (Honcho's ORM path);
  batch      --inserts / --batch multi-row INSERTs of --batch documents each (a create_documents flush).
Printed per kind: median per-row latency with and without the trigger, and over the rounds the
median of each round's ratio and of its overhead per row in microseconds; and the trigger function's own time
per call as Postgres counts it (track_functions = 'pl', pg_stat_user_functions): the overhead
without the noise of two medians of much longer inserts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.backfill import database, say  # noqa: E402
from bench.scale import Clustered, write_store  # noqa: E402
from embed import store  # noqa: E402
from embed.config import Config  # noqa: E402
from embed.cutover import inplace  # noqa: E402
from embed.cutover.inplace_queue import TRIGGER  # noqa: E402
from embed.db.connection import connect, ensure_pgvector  # noqa: E402
from embed.honcho.synthetic.corpus import generate  # noqa: E402
from embed.honcho.synthetic.seed import seed  # noqa: E402
from embed.store.target import Target  # noqa: E402
from tests.support.inplace import nanoid  # noqa: E402

NEW = "bge_m3"
TABLES = ("documents", "message_embeddings")
DOC_SHARE = 26 / 39.5  # Honcho's 26k documents : 13.5k message chunks

DOC = "INSERT INTO documents (id, content, observer, observed, workspace_name, session_name, embedding) VALUES {}"
MSG = ("INSERT INTO message_embeddings (content, embedding, message_id, workspace_name, session_name, peer_name)"
       " VALUES (%s, %s, %s, %s, %s, %s)")


@dataclass
class Cost:
    """One kind of insert with and without the trigger: per round, the median milliseconds per row
    of each side (the two sides of a round ran back to back, so they saw about the same load)."""

    kind: str
    rows: int  # per side, all rounds
    off_ms: list[float]
    on_ms: list[float]

    @property
    def ratio(self) -> float:
        """The median over rounds of on / off."""
        return statistics.median(a / b for a, b in zip(self.on_ms, self.off_ms, strict=True))

    @property
    def overhead_us(self) -> float:
        """The median over rounds of on - off, per row."""
        return statistics.median(a - b for a, b in zip(self.on_ms, self.off_ms, strict=True)) * 1000


def literal(v: np.ndarray) -> str:
    """The text pgvector's SQLAlchemy `Vector` binds (Vector._to_db): Postgres casts it to the column."""
    return "[" + ",".join(str(float(x)) for x in v) + "]"


def honcho_db(url: str, cfg: Config, rows: int) -> None:
    docs = round(rows * DOC_SHARE)
    legacy = Clustered(cfg.legacy_space.dims, 3)
    ensure_pgvector(url)
    with connect(url) as conn:
        seed(conn, generate(seed=7, documents=docs, messages=rows - docs, queries=8),
             dims=cfg.legacy_space.dims, vectors=lambda texts: legacy(len(texts)))
        store.init(conn, cfg)
    gen = Clustered(cfg.space(NEW).dims, 1)
    for name in TABLES:
        write_store(url, Target(cfg.source(name), cfg.space(NEW)), gen, keep=False)


class Inserts:
    """Honcho-shaped inserts on a plain psycopg connection (no pgvector adapters: text literals)."""

    def __init__(self, conn: psycopg.Connection, dims: int) -> None:
        self.conn, self.gen, self.n = conn, Clustered(dims, 9), 0
        self.doc_scope = conn.execute("SELECT workspace_name, observer, observed, session_name FROM documents"
                                      " WHERE session_name IS NOT NULL LIMIT 1").fetchone()
        self.msg_scope = conn.execute("SELECT public_id, workspace_name, session_name, peer_name FROM messages"
                                      " LIMIT 1").fetchone()

    def _doc_row(self, v: np.ndarray) -> tuple:
        self.n += 1
        ws, observer, observed, session = self.doc_scope
        return (nanoid(), f"bench memory {self.n}: prefers green tea", observer, observed, ws,
                session, literal(v))

    def doc(self) -> float:
        row = self._doc_row(self.gen(1)[0])
        t0 = time.perf_counter()
        self.conn.execute(DOC.format("(%s, %s, %s, %s, %s, %s, %s)"), row)
        return time.perf_counter() - t0

    def msg(self) -> float:
        self.n += 1
        mid, ws, session, peer = self.msg_scope
        row = (f"bench chunk {self.n}", literal(self.gen(1)[0]), mid, ws, session, peer)
        t0 = time.perf_counter()
        self.conn.execute(MSG, row)
        return time.perf_counter() - t0

    def batch(self, n: int) -> float:
        params = [x for v in self.gen(n) for x in self._doc_row(v)]
        stmt = DOC.format(", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * n))
        t0 = time.perf_counter()
        self.conn.execute(stmt, params)
        return (time.perf_counter() - t0) / n


def toggle(conn: psycopg.Connection, cfg: Config, on: bool) -> None:
    for name in TABLES:
        conn.execute(sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
            sql.Identifier(*cfg.source(name).schema_table), sql.SQL("ENABLE" if on else "DISABLE"),
            sql.Identifier(TRIGGER)))


@dataclass
class Calls:
    """The trigger function's calls during the run, as Postgres's function statistics count them."""

    calls: int
    total_ms: float

    @property
    def us_per_call(self) -> float:
        return self.total_ms * 1000 / self.calls if self.calls else 0.0


def function_calls(conn: psycopg.Connection) -> Calls:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute("SELECT calls, total_time FROM pg_stat_user_functions"
                       " WHERE schemaname = 'embed_store' AND funcname = 'inplace_queue'").fetchone()
    return Calls(*row) if row else Calls(0, 0.0)


def measure(url: str, cfg: Config, args: argparse.Namespace) -> tuple[list[Cost], int, Calls]:
    """(costs per kind, queue rows the enabled side wrote, the trigger function's calls meanwhile)."""
    kinds: dict[str, Callable[[Inserts], list[float]]] = {
        "documents single-row": lambda w: [w.doc() for _ in range(args.inserts)],
        "message_embeddings single-row": lambda w: [w.msg() for _ in range(args.inserts)],
        f"documents batch of {args.batch}": lambda w: [w.batch(args.batch) for _ in range(args.inserts // args.batch)],
    }
    got: dict[tuple[str, bool], list[list[float]]] = {(k, on): [] for k in kinds for on in (False, True)}
    with psycopg.connect(url, autocommit=True) as conn:
        queued0 = conn.execute("SELECT count(*) FROM embed_store.inplace_changed").fetchone()[0]
        conn.execute("SET track_functions = 'pl'")
        before = function_calls(conn)
        w = Inserts(conn, cfg.legacy_space.dims)
        for fn in kinds.values():
            fn(w)  # warm: plans, caches, the first HNSW pages
        for r in range(args.rounds):
            for on in (r % 2 == 0, r % 2 == 1):
                toggle(conn, cfg, on)
                for kind, fn in kinds.items():
                    got[(kind, on)].append(fn(w))
        toggle(conn, cfg, True)  # as stage left it
        queued = conn.execute("SELECT count(*) FROM embed_store.inplace_changed").fetchone()[0] - queued0
        conn.execute("SELECT pg_stat_force_next_flush()")
    with psycopg.connect(url, autocommit=True) as conn:  # the inserting session's statistics, flushed as it closed
        after = function_calls(conn)
    costs = [Cost(k, sum(map(len, got[(k, False)])), *([statistics.median(r) * 1000 for r in got[(k, on)]]
                                                          for on in (False, True))) for k in kinds]
    return costs, queued, Calls(after.calls - before.calls, after.total_ms - before.total_ms)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000, help="rows over both tables before the inserts")
    ap.add_argument("--inserts", type=int, default=40, help="rows per kind, per side and round")
    ap.add_argument("--batch", type=int, default=20, help="rows per multi-row INSERT")
    ap.add_argument("--rounds", type=int, default=16, help="trigger on/off pairs (order alternating)")
    ap.add_argument("--db", default=None, help="admin URL of a PostgreSQL with pgvector to create a temporary "
                    "database on (default: a private embedded server)")
    ap.add_argument("--json", action="store_true", help="also print one JSON line with every number")
    args = ap.parse_args()
    cfg = Config.load(ROOT, "honcho")
    url, cleanup = database(args)
    try:
        t0 = time.monotonic()
        honcho_db(url, cfg, args.rows)
        staged = inplace.stage(cfg, url, NEW, progress=False)
        say(f"set-up {time.monotonic() - t0:.0f} s: {args.rows} rows, {cfg.legacy_space.name} column "
            f"({cfg.legacy_space.dims}-d) with Honcho's HNSW, stage for {NEW} open "
            f"({', '.join(staged.sources)}: trigger {TRIGGER})")
        costs, queued, calls = measure(url, cfg, args)
    finally:
        cleanup()
    say(f"\n{'insert':34s}{'rows/side':>10s}{'off ms/row':>12s}{'on ms/row':>12s}{'ratio':>8s}{'overhead':>12s}"
        "   (ms: median of the rounds' medians; ratio, overhead: median over rounds, each round's sides paired)")
    for c in costs:
        say(f"{c.kind:34s}{c.rows:>10d}{statistics.median(c.off_ms):>12.3f}{statistics.median(c.on_ms):>12.3f}"
            f"{c.ratio:>8.3f}{c.overhead_us:>9.0f} us")
    say(f"queue rows written with the trigger on: {queued}; the trigger function {calls.calls} calls, "
        f"{calls.us_per_call:.0f} us per call (pg_stat_user_functions)")
    if args.json:
        print(json.dumps({"rows": args.rows, "queued": queued, "trigger_calls": calls.calls,
                          "trigger_us_per_call": calls.us_per_call,
                          "costs": [{**asdict(c), "ratio": c.ratio, "overhead_us": c.overhead_us} for c in costs]}))


if __name__ == "__main__":
    main()
