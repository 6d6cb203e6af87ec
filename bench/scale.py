"""Scale: what every step costs as the tables grow, and its growth per x10 rows (not a test).

    .venv/bin/python bench/scale.py [--sizes 40000,400000] [--queries 1000] [--no-shadow]
                                    [--compare-storage] [--db ADMIN_URL] [--json]

For each size (rows over both tables, split as Honcho's 26k documents : 13.5k message chunks), in
a fresh database of its own, one after the other in one run:
  seed          Honcho-shaped tables (embed.honcho.synthetic: short PL/EN texts), tenants skewed
                (a few large collections, many small: per workspace the largest collection absorbs
                75 % / 30 % / 10 % of that workspace's documents), Honcho's own indexes with its
                HNSW (m=16, ef_construction=64) on the legacy minilm_l6 column (384-d vectors from
                a seeded generator), as a restore would leave them (not measured as a step);
  store write   bge_m3 (1024-d) vectors from a seeded generator (clustered unit vectors: points
                round 2,000 centres, so nearest neighbours mean something) written by the store's
                own writer (StoreWriter: binary COPY, source check, one transaction per 4,096 rows);
  hnsw build    ensure_hnsw on both store tables (maintenance_work_mem and parallel maintenance
                workers as the server has them, printed);
  status        `embed status` (embed.fill.status.status) over every declared pair;
  shadow        `embed shadow` minilm_l6 vs bge_m3, --queries stored-row queries per source, k=10,
                provenance labels, no query-model call (every query vector is read): its DB phases;
  stage         `embed cutover --mode honcho-inplace`'s stage, with a writer inserting like Honcho's
                API throughout: seconds, the staged HNSW build, and the Honcho tables' growth;
  swap lock     the swap's exclusive lock (writer running);
  verify        `embed verify --space bge_m3` after the swap: Honcho's live column against the store;
  rollback lock swap_back's lock (writer running);
  retire        `embed retire --space bge_m3 --dry-run` (a real retire needs a verified backup
                and the retention window).
With --compare-storage, after the store write: the same documents' vectors in a `storage: halfvec`
store (same spec, so the same fingerprint), and for both storages: write rate, HNSW build, table +
index size, top-10 latency (median of 200 queries, hnsw.ef_search 40) and recall@10 against the
exact fp32 neighbours (numpy).
Each figure is printed per size with its growth per x10 rows (from the smallest to the largest
size measured: (last / first) ** (1 / log10(last rows / first rows)); with three sizes or more
also per step between neighbouring sizes, `growth_steps` in the JSON); Ctrl-C ends the size in
progress and still prints the table of the sizes that completed. Targets (issue 15): the
swap and rollback locks do not grow with rows (<= 1.5x per x10), nothing grows faster than linear
(<= 10x per x10). With --json the last line is one JSON object: per size every figure, and
`growth` per figure.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.backfill import SCALES, database, run_bench, say  # noqa: E402
from embed import store  # noqa: E402
from embed.config import Config  # noqa: E402
from embed.cutover import inplace  # noqa: E402
from embed.db.connection import connect, ensure_pgvector  # noqa: E402
from embed.fill.status import status  # noqa: E402
from embed.honcho.synthetic.corpus import Corpus, generate  # noqa: E402
from embed.honcho.synthetic.seed import seed  # noqa: E402
from embed.safety.retire import retire_plan  # noqa: E402
from embed.spaces import parse_space  # noqa: E402
from embed.store.indexes import ensure_hnsw  # noqa: E402
from embed.store.target import Target, content_hash  # noqa: E402
from embed.store.writer import Rows, StoreWriter  # noqa: E402
from embed.verify import verify  # noqa: E402
from tests.support.inplace import LEGACY, Writer  # noqa: E402

NEW = "bge_m3"
HALF = "bge_m3_half"  # the same spec declared with storage: halfvec (its own table: the name differs)
DOC_SHARE = SCALES["honcho"][0] / sum(SCALES["honcho"])
ABSORB = (0.75, 0.30, 0.10)  # per workspace, the share of its documents its largest collection takes
BATCH = 4096
CENTRES = 2000
LATENCY_QUERIES = 200


@dataclass
class Storage:
    """One storage type of the same documents' vectors (--compare-storage)."""

    write_rows_per_s: float
    hnsw_build_s: float
    table_mb: float
    index_mb: float
    query_ms_p50: float
    recall_at_10: float


@dataclass
class SizeRun:
    """Every figure measured at one size."""

    rows: int
    documents: int
    message_embeddings: int
    largest_tenant: int
    median_tenant: int
    tenants: int
    seed_s: float = 0.0
    store_write_rows_per_s: float = 0.0
    store_write_s: float = 0.0
    hnsw_build_s: float = 0.0
    status_s: float = 0.0
    shadow_s: float | None = None
    shadow_phases_s: dict[str, float] = field(default_factory=dict)
    shadow_error: str | None = None
    stage_s: float = 0.0
    stage_index_s: float = 0.0
    table_mb_before_stage: float = 0.0
    table_mb_after_stage: float = 0.0
    swap_lock_ms: float = 0.0
    swap_rows_in_lock: int = 0  # rows the change queue named inside the lock (written since the catch-up)
    verify_s: float = 0.0
    verify_rows: int = 0
    rollback_lock_ms: float = 0.0
    rollback_rows_in_lock: int = 0
    # per lock (swap, rollback) and source: rows checked before the lock (the catch-up) and in it
    lock_rows: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    retire_dry_run_s: float = 0.0
    retire_blockers: int = 0
    writer_inserts: int = 0
    writer_errors: int = 0
    writer_longest_insert_ms: float = 0.0
    storage: dict[str, Storage] = field(default_factory=dict)

    def figures(self) -> dict[str, float]:
        """The measured figures, flat (name -> value), for the table and the growth factors."""
        out = {k: float(v) for k, v in asdict(self).items()
               if isinstance(v, int | float) and not isinstance(v, bool) and v is not None}
        out.update({f"shadow {k}_s": v for k, v in self.shadow_phases_s.items()})
        for kind, s in self.storage.items():
            out.update({f"{kind} {k}": float(v) for k, v in asdict(s).items()})
        out["table growth x (stage)"] = self.table_mb_after_stage / self.table_mb_before_stage if self.table_mb_before_stage else 0.0
        return out


class Clustered:
    """Seeded unit vectors round fixed centres: a geometry with real nearest neighbours (uniform
    random 1024-d points are all about equally far apart, which no embedding model produces)."""

    def __init__(self, dims: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.centres = self.rng.standard_normal((CENTRES, dims)).astype(np.float32)
        self.dims = dims

    def __call__(self, n: int) -> np.ndarray:
        v = self.centres[self.rng.integers(0, CENTRES, n)] + 1.2 * self.rng.standard_normal((n, self.dims), np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def skew(corpus: Corpus, seed: int = 11) -> None:
    """Move documents into the largest collection of their workspace (ABSORB shares, the
    largest workspace first), keeping every foreign key (same workspace, existing collection)."""
    rng = random.Random(seed)
    by_ws: dict[str, Counter] = {}
    for d in corpus.documents:
        by_ws.setdefault(d["workspace_name"], Counter())[(d["observer"], d["observed"])] += 1
    order = sorted(by_ws, key=lambda w: -sum(by_ws[w].values()))
    target = {w: (by_ws[w].most_common(1)[0][0], ABSORB[i] if i < len(ABSORB) else 0.0) for i, w in enumerate(order)}
    for d in corpus.documents:
        (obs, obd), share = target[d["workspace_name"]]
        if rng.random() < share:
            d["observer"], d["observed"] = obs, obd


def scale_config(cfg: Config) -> Config:
    """The project config plus HALF: bge_m3's spec with storage: halfvec (a fingerprint twin)."""
    raw = {**cfg.raw["variables"]["embed_spaces"][NEW], "storage": "halfvec"}
    spaces = dict(cfg.spaces)
    spaces[HALF] = parse_space(HALF, raw)
    cfg.__dict__["spaces"] = spaces  # cached_property: override for this process only
    return cfg


def mb(conn, relation: str) -> float:
    return conn.execute("SELECT pg_total_relation_size(to_regclass(%s))", (relation,)).fetchone()[0] / 2**20


def write_store(url: str, t: Target, gen: Clustered, keep: bool) -> tuple[int, float, np.ndarray | None, list]:
    """Every live non-blank row's vector through the store writer; (rows, seconds writing,
    the vectors and ids when `keep`)."""
    with connect(url) as conn:
        live = conn.execute(sql.SQL(
            "SELECT s.id, s.text FROM ({}) AS s WHERE btrim(coalesce(s.text, '')) <> '' ORDER BY s.id").format(
                t.live_rows())).fetchall()
        writer, spent, kept = StoreWriter(conn, t), 0.0, []
        for lo in range(0, len(live), BATCH):
            part = live[lo:lo + BATCH]
            rows = Rows([r[0] for r in part], [content_hash(r[1]) for r in part], gen(len(part)),
                        np.zeros(len(part), bool))
            t0 = time.perf_counter()
            writer.write(rows, np.zeros(len(part), bool), [], run_id=0)
            spent += time.perf_counter() - t0
            if keep:
                kept.append(rows.vectors)
    return len(live), spent, (np.concatenate(kept) if keep and kept else None), [r[0] for r in live]


def copy_to(url: str, src: Target, dst: Target) -> tuple[int, float]:
    """The same rows and vectors into another storage's table through its own writer (fp16 COPY
    for halfvec): (rows, seconds writing)."""
    with connect(url) as conn:
        got = conn.execute(sql.SQL("SELECT source_id, content_sha256, embedding FROM {}").format(src.store)).fetchall()
        writer, spent = StoreWriter(conn, dst), 0.0
        for lo in range(0, len(got), BATCH):
            part = got[lo:lo + BATCH]
            rows = Rows([r[0] for r in part], [bytes(r[1]) for r in part],
                        np.stack([r[2].to_numpy() for r in part]).astype(np.float32), np.zeros(len(part), bool))
            t0 = time.perf_counter()
            writer.write(rows, np.zeros(len(part), bool), [], run_id=0)
            spent += time.perf_counter() - t0
    return len(got), spent


def build_hnsw(url: str, cfg: Config, targets: list[Target]) -> float:
    with connect(url, autocommit=True) as conn:
        seconds = sum(ensure_hnsw(conn, t, cfg.index_params, concurrently=False).get("seconds", 0.0) for t in targets)
        for t in targets:
            conn.execute(sql.SQL("ANALYZE {}").format(t.store))
    return seconds


def queries_near(vectors: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n queries: stored vectors of random rows, moved a little (a paraphrase, not the row itself)."""
    rng = np.random.default_rng(seed)
    q = vectors[rng.choice(len(vectors), n, replace=False)] + 0.05 * rng.standard_normal((n, vectors.shape[1]), np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def search(url: str, t: Target, queries: np.ndarray) -> tuple[float, list[list[object]]]:
    """(median ms, ids) of a top-10 per query on the store table's HNSW index, warm, hnsw.ef_search 40."""
    stmt = sql.SQL("SELECT source_id FROM {} ORDER BY embedding <=> %s LIMIT 10").format(t.store)
    with connect(url) as conn:
        conn.execute("SET enable_seqscan = off")  # small sizes: the planner would sort; the index is measured
        plan = "\n".join(r[0] for r in conn.execute(sql.SQL("EXPLAIN ") + stmt, (queries[0],)))
        if "Index Scan" not in plan:
            raise RuntimeError(f"{t.table}: the top-10 does not use its HNSW index")
        for q in queries[:5]:
            conn.execute(stmt, (q,)).fetchall()
        times, ids = [], []
        for q in queries:
            t0 = time.perf_counter()
            ids.append([r[0] for r in conn.execute(stmt, (q,)).fetchall()])
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), ids


def compare_storage(url: str, cfg: Config, docs: Target, vectors: np.ndarray, ids: list, write_rate: float,
                    build_s: float) -> dict[str, Storage]:
    """vector vs halfvec on the documents store: size, build, latency, recall@10 vs exact fp32."""
    half = Target(docs.source, cfg.space(HALF))
    n, spent = copy_to(url, docs, half)
    half_build = build_hnsw(url, cfg, [half])
    queries = queries_near(vectors, LATENCY_QUERIES, 5)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    truth = [{ids[j] for j in row} for row in exact]
    out = {}
    for kind, t, rate, build in (("vector", docs, write_rate, build_s), ("halfvec", half, n / spent, half_build)):
        ms, got = search(url, t, queries)
        with connect(url) as conn:
            index = conn.execute("SELECT coalesce(sum(pg_relation_size(indexrelid)), 0)::bigint FROM pg_index i JOIN pg_class c"
                                 " ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'hnsw'"
                                 " AND i.indrelid = to_regclass(%s)", (f"{store.SCHEMA}.{t.table}",)).fetchone()[0]
            table = mb(conn, f"{store.SCHEMA}.{t.table}") - index / 2**20
        recall = statistics.mean(len(truth[i] & set(g)) / 10 for i, g in enumerate(got))
        out[kind] = Storage(round(rate), round(build, 1), round(table, 1), round(index / 2**20, 1), round(ms, 3),
                            round(recall, 4))
        say(f"  {kind:8s} write {rate:9.0f} rows/s  hnsw build {build:7.1f} s  table {table:8.1f} MB  index "
            f"{index / 2**20:8.1f} MB  top-10 p50 {ms:6.2f} ms  recall@10 {recall:.3f}")
    return out


def one_size(cfg: Config, url: str, rows: int, args: argparse.Namespace) -> SizeRun:
    docs_n = round(rows * DOC_SHARE)
    t0 = time.monotonic()
    corpus = generate(seed=7, documents=docs_n, messages=rows - docs_n, queries=24)
    skew(corpus)
    tenants = sorted(Counter((d["workspace_name"], d["observer"], d["observed"]) for d in corpus.documents).values())
    legacy = Clustered(cfg.space(LEGACY).dims, 3)
    ensure_pgvector(url)
    with connect(url) as conn:
        seed(conn, corpus, dims=cfg.space(LEGACY).dims, vectors=lambda texts: legacy(len(texts)))
        store.init(conn, cfg)
    run = SizeRun(rows, docs_n, rows - docs_n, tenants[-1], tenants[len(tenants) // 2], len(tenants),
                  seed_s=round(time.monotonic() - t0, 1))
    del corpus
    say(f"[{rows}] seeded {docs_n} documents + {rows - docs_n} message chunks, {len(tenants)} tenants "
        f"(largest {tenants[-1]}, median {tenants[len(tenants) // 2]}, smallest {tenants[0]}) in {run.seed_s} s")

    gen = Clustered(cfg.space(NEW).dims, 1)
    targets = [Target(cfg.source(s), cfg.space(NEW)) for s in ("documents", "message_embeddings")]
    written, spent, doc_vectors, doc_ids, doc_rate = 0, 0.0, None, [], 0.0
    for t in targets:
        n, s, kept, ids = write_store(url, t, gen, keep=args.compare_storage and t.source.name == "documents")
        written, spent = written + n, spent + s
        if kept is not None:
            doc_vectors, doc_ids, doc_rate = kept, ids, n / s
    run.store_write_s, run.store_write_rows_per_s = round(spent, 1), round(written / spent)
    with connect(url) as conn:
        mem, workers = (conn.execute(f"SHOW {g}").fetchone()[0] for g in
                        ("maintenance_work_mem", "max_parallel_maintenance_workers"))
    builds = [build_hnsw(url, cfg, [t]) for t in targets]
    run.hnsw_build_s = round(sum(builds), 1)
    say(f"[{rows}] store write {written} rows in {run.store_write_s} s ({run.store_write_rows_per_s} rows/s); "
        f"HNSW build {run.hnsw_build_s} s (ensure_hnsw sets maintenance_work_mem 512MB; server default {mem}, "
        f"parallel maintenance workers {workers})")
    if doc_vectors is not None:
        say(f"[{rows}] storage, documents store ({len(doc_ids)} rows):")
        run.storage = compare_storage(url, cfg, targets[0], doc_vectors, doc_ids, doc_rate, builds[0])
        del doc_vectors

    t0 = time.monotonic()
    status(cfg, url)
    run.status_s = round(time.monotonic() - t0, 2)
    say(f"[{rows}] embed status {run.status_s} s")

    if not args.no_shadow:
        shadow_phases(cfg, url, args.queries, run)

    with connect(url) as conn:
        run.table_mb_before_stage = round(mb(conn, "public.documents") + mb(conn, "public.message_embeddings"), 1)
    writer = Writer(url)
    writer.start()
    try:
        t0 = time.monotonic()
        staged = inplace.stage(cfg, url, NEW)
        run.stage_s = round(time.monotonic() - t0, 1)
        run.stage_index_s = round(sum(s.index.seconds for s in staged.sources.values()), 1)
        with connect(url) as conn:
            run.table_mb_after_stage = round(mb(conn, "public.documents") + mb(conn, "public.message_embeddings"), 1)
        say(f"[{rows}] stage {run.stage_s} s (staged HNSW builds {run.stage_index_s} s); Honcho tables "
            f"{run.table_mb_before_stage} MB -> {run.table_mb_after_stage} MB")
        swapped = inplace.swap(cfg, url, NEW)
        run.swap_lock_ms, run.swap_rows_in_lock = swapped["lock_ms"], swapped["rows_checked_in_lock"]
        run.lock_rows["swap"] = lock_rows(swapped)
        t0 = time.monotonic()
        checked = verify(cfg, url, NEW)
        run.verify_s, run.verify_rows = round(time.monotonic() - t0, 2), sum(c.checked for c in checked.locations)
        back = inplace.swap_back(cfg, url, cfg.space(LEGACY), embed_missing=False)
        run.rollback_lock_ms, run.rollback_rows_in_lock = back["lock_ms"], back["rows_checked_in_lock"]
        run.lock_rows["rollback"] = lock_rows(back)
    finally:
        writer.stop.set()
        writer.join(30)
    run.writer_inserts, run.writer_errors = len(writer.docs) + len(writer.msgs), len(writer.errors)
    run.writer_longest_insert_ms = round(writer.max_wait * 1000, 1)
    say(f"[{rows}] swap lock {run.swap_lock_ms} ms ({run.swap_rows_in_lock} rows checked in it), rollback lock "
        f"{run.rollback_lock_ms} ms ({run.rollback_rows_in_lock} rows) (writer: "
        f"{run.writer_inserts} inserts, {run.writer_errors} errors, longest {run.writer_longest_insert_ms} ms); "
        f"verify after the swap {run.verify_rows} rows in {run.verify_s} s (passed {checked.passed}); rows checked "
        "before / in each lock: " + "; ".join(f"{k} " + ", ".join(f"{src} {v['before']} / {v['in']}" for src, v in per.items())
                                              for k, per in run.lock_rows.items()))
    t0 = time.monotonic()
    plan = retire_plan(cfg, url, NEW)
    run.retire_dry_run_s, run.retire_blockers = round(time.monotonic() - t0, 2), len(plan.blockers)
    say(f"[{rows}] retire --dry-run {run.retire_dry_run_s} s ({len(plan.blockers)} blocker(s): a real retire "
        "needs a verified backup and the retention window)")
    return run


def lock_rows(swapped: dict) -> dict[str, dict[str, int]]:
    """Per source, the rows the swap's catch-up checked before its lock and the rows it checked in it."""
    return {src: {"before": s.get("rows_checked_before_lock", 0), "in": s["rows_checked_in_lock"]}
            for src, s in swapped["sources"].items()}


def shadow_phases(cfg: Config, url: str, queries: int, run: SizeRun) -> None:
    """`embed shadow` minilm_l6 vs bge_m3 with provenance labels and no query-model call; a
    failure is recorded, not raised (the rest of the size still runs)."""
    from bench.shadow import SyntheticEmbedder
    from embed.shadow.run import Phases, shadow

    phases = Phases()
    t0 = time.monotonic()
    try:
        shadow(cfg, url, baseline=LEGACY, candidates=[NEW], queries=queries, labels="provenance", k=10,
               embedders={n: SyntheticEmbedder(cfg.space(n)) for n in (LEGACY, NEW)}, phases=phases)
    except Exception as e:  # a bench reports what broke and goes on
        run.shadow_error = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    run.shadow_s = round(time.monotonic() - t0, 1)
    run.shadow_phases_s = {k: round(v, 2) for k, v in phases.seconds.items()}
    say(f"[{run.rows}] shadow ({queries} queries per source, k=10) {run.shadow_s} s: "
        + " · ".join(f"{k} {v:.1f}" for k, v in run.shadow_phases_s.items())
        + (f"  ERROR {run.shadow_error}" if run.shadow_error else ""))


def growth(a: SizeRun, b: SizeRun) -> dict[str, float | None]:
    """Per figure, its factor per x10 rows from size `a` to the larger size `b`."""
    fa, fb = a.figures(), b.figures()
    decades = math.log10(b.rows / a.rows)
    return {k: (round((fb[k] / fa[k]) ** (1 / decades), 2) if fa[k] > 0 and k in fb and fb[k] > 0 else None)
            for k in fa}


def run(cfg: Config, url: str, args: argparse.Namespace) -> dict[str, object]:
    cfg = scale_config(cfg)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    runs: list[SizeRun] = []
    for rows in sizes:
        sub, drop = database(argparse.Namespace(db=url))
        try:
            runs.append(one_size(cfg, sub, rows, args))
        except KeyboardInterrupt:  # out of time: the sizes that completed still make a table
            say(f"[{rows}] interrupted (its lines above are what it measured)")
            break
        finally:
            drop()
    return table(runs) if runs else {}


def table(runs: list[SizeRun]) -> dict[str, object]:
    """Print every figure per size with its growth per x10 rows; the JSON object of --json."""
    g = growth(runs[0], runs[-1]) if len(runs) > 1 else {}
    # with three sizes or more, also per step: a fixed cost flattens the first step, load moves any
    steps = {f"{a.rows}-{b.rows}": growth(a, b) for a, b in itertools.pairwise(runs)} if len(runs) > 2 else {}
    names = list(runs[0].figures())
    say("\n" + f"{'figure':34s}" + "".join(f"{r.rows:>14,d}" for r in runs) + f"{'per x10':>10s}"
        + "".join(f"{k:>16s}" for k in steps))
    for name in names:
        vals = [r.figures().get(name) for r in runs]
        say(f"{name:34s}" + "".join(f"{v:>14,.2f}" if v is not None else f"{'-':>14s}" for v in vals)
            + "".join(f"{x[name]:>{w}.2f}" if x.get(name) is not None else f"{'-':>{w}s}"
                      for x, w in [(g, 10), *((st, 16) for st in steps.values())]))
    return {"sizes": {str(r.rows): asdict(r) for r in runs}, "growth": g, "growth_steps": steps}


def options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--sizes", default="40000,400000", help="rows over both tables, comma-separated")
    ap.add_argument("--queries", type=int, default=1000, help="shadow: stored-row queries per source")
    ap.add_argument("--no-shadow", action="store_true", help="leave the shadow run out")
    ap.add_argument("--compare-storage", action="store_true", help="vector vs halfvec on the documents store")


if __name__ == "__main__":
    run_bench(run, __doc__, "honcho", options)
