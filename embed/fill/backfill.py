"""`embed backfill`: fill a space's store tables from the source rows, fast, resumable, shareable.

Per source, a pass is a plan of id-range chunks (embed.fill.leases). Three stages overlap through
bounded queues so the encoder never waits on the database:

    reader   claims a chunk (advisory lock), reads its pending live rows (no current vector,
             no current skip record), reuses vectors the store already has for the same
             content hash, and marks blank rows as skipped;
    embedder (--workers threads) sends the remaining unique texts, longest first, in one
             large call per batch (FlagEmbedding re-runs the first batch of every encode()
             call, so small calls would pay that again and again); identical content is
             embedded once per run (a bounded hash -> vector cache); a batch the model
             rejects is bisected so only the offending rows are skipped;
    writer   one transaction per batch: binary COPY into the store (embed.store.writer), skip
             records, and the chunk's done mark, all or nothing.

Kill -9 at any moment loses at most the uncommitted batches; a rerun joins the unfinished
plan, finds the same rows pending and ends with the store a clean run would leave. A lost
database connection (server restart) is retried with backoff for `retry_seconds`, then
reported as a clear error; committed batches are kept either way. When the plan is complete
the HNSW index is built (CONCURRENTLY if the table already had rows when the run started).

Nothing here logs or reports text: ids, counts, hashes and timings only.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from embed import store
from embed.config import Config, Source
from embed.db.connection import mask
from embed.db.hooks import pause_point
from embed.errors import EmbedError, NotInitialized, first_line
from embed.fill import leases as lease_mod
from embed.fill.leases import Chunk, Leases
from embed.fill.progress import NONE, Progress, Say, to_stderr, wanted
from embed.fill.runs import BACKFILL, finish_run, start_run
from embed.spaces import Space
from embed.store import migrations
from embed.store.indexes import ensure_hash_index, ensure_hnsw
from embed.store.target import Target
from embed.store.writer import Rows, Skip, StoreWriter

MODEL, STORED, CACHED = 0, 1, 2  # where a row's vector came from
RESPONSE_RETRIES = 3  # retries of one text whose response was malformed, before it is skipped


@dataclass
class Options:
    """How a pass runs. Defaults suit production; tests shrink chunk_rows."""

    limit: int | None = None  # stop after this many pending rows (per process, all sources)
    workers: int = 1  # concurrent embed calls (useful for HTTP endpoints)
    chunk_rows: int = 4096  # rows per lease chunk, and the most texts in one embed call
    dedupe: bool = True  # reuse vectors for identical content (store + this run's cache)
    cache_mb: int = 256  # bound of the run's hash -> vector cache
    retry_seconds: float = 120.0  # how long to keep retrying a lost database
    progress: bool | str = True  # a Progress on stderr: True/auto (a bar on a terminal, plain lines otherwise), json
    progress_every: float | None = None
    say: Say = to_stderr  # notices (a lost database being retried)
    build_index: bool = True
    stop: threading.Event | None = None  # set to stop between batches (SIGINT/SIGTERM)
    budget_usd: float | None = None  # a priced space: stop before the embed call that would pass it


@dataclass
class SourceStats:
    source: str
    table: str
    run_id: int | None = None
    rows_pending_at_start: int = 0
    rows_written: int = 0
    rows_embedded: int = 0  # rows whose vector the model computed in this run
    rows_reused: int = 0  # rows that got a vector already known for the same content
    rows_dropped: int = 0  # edited or deleted in the source while being embedded
    texts_embedded: int = 0  # texts sent to the model
    skipped: Counter = field(default_factory=Counter)
    truncated: int = 0
    seconds: float = 0.0
    retries: int = 0
    chunks_done: int = 0
    complete: bool = False
    limited: bool = False
    interrupted: bool = False
    index: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        handled = self.rows_written + sum(self.skipped.values())
        return {
            "source": self.source,
            "table": self.table,
            "run_id": self.run_id,
            "rows_pending_at_start": self.rows_pending_at_start,
            "rows_written": self.rows_written,
            "rows_embedded": self.rows_embedded,
            "rows_reused": self.rows_reused,
            "rows_dropped": self.rows_dropped,
            "texts_embedded": self.texts_embedded,
            "skipped": dict(self.skipped),
            "truncated": self.truncated,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(handled / self.seconds, 1) if self.seconds > 0 else 0.0,
            "retries": self.retries,
            "chunks_done": self.chunks_done,
            "complete": self.complete,
            "limited": self.limited,
            "interrupted": self.interrupted,
            "index": self.index,
            **self.extra,
        }


@dataclass
class Work:
    """One batch on its way from the reader to the writer."""

    chunk: Chunk | None
    last: bool  # the chunk's last batch: its write marks the chunk done
    ids: list[Any]
    hashes: list[bytes]
    texts: list[str | None]
    has_row: np.ndarray
    vectors: np.ndarray
    known: np.ndarray
    tokens: np.ndarray
    truncated: np.ndarray
    origin: np.ndarray
    release: bool = True  # the chunk's final piece: once written, its lease is released
    skips: list[Skip] = field(default_factory=list)
    counted: int = 0  # rows the model stage already added to the progress, call by call


class _Stop(Exception):
    """Raised inside a stage when the pass is being stopped."""


def _connect(url: str, *, autocommit: bool) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=autocommit, application_name="embed-backfill", connect_timeout=10)
    register_vector(conn)
    return conn


def _is_rejection(e: Exception) -> bool:
    """Did the embedder refuse these inputs (as opposed to being unreachable or misconfigured)?"""
    from embed.embedders import EmbedInputError, EmbedRejectedError, EmbedResponseError

    return isinstance(e, EmbedInputError | EmbedRejectedError | EmbedResponseError)


class VectorCache:
    """hash -> (vector, tokens, truncated), least recently used evicted beyond `max_items`."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max(max_items, 0)
        self._d: OrderedDict[bytes, tuple[np.ndarray, int, bool]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> tuple[np.ndarray, int, bool] | None:
        with self._lock:
            hit = self._d.get(key)
            if hit is not None:
                self._d.move_to_end(key)
            return hit

    def put(self, key: bytes, value: tuple[np.ndarray, int, bool]) -> None:
        if not self.max_items:
            return
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.max_items:
                self._d.popitem(last=False)


# ---------------------------------------------------------------------------------------------
# one source


class SourcePass:
    """One pass of one (source, space) by this process: plan, pipeline, index, run record."""

    def __init__(
        self, url: str, target: Target, embedder: Any, opts: Options, index_params: dict[str, int],
        kind: str = BACKFILL, budget: list[int] | None = None,
        before: Callable[[psycopg.Connection, Target], dict[str, Any]] | None = None,
    ) -> None:
        self.url = url
        self.before = before
        self.t = target
        self.embedder = embedder
        self.opts = opts
        self.index_params = index_params
        self.kind = kind
        self.budget = budget if budget is not None else [opts.limit if opts.limit is not None else -1]
        self.stats = SourceStats(source=target.source.name, table=target.table)
        self.stop = opts.stop or threading.Event()
        self.cache = VectorCache((opts.cache_mb * 2**20) // max(4 * target.space.dims, 1) if opts.dedupe else 0)
        self.holder = f"{store.actor()}:{os.getpid()}"
        self.progress: Progress | None = None
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._committed = False
        self._inflight = 0
        self._written = threading.Event()  # set by the writer after each batch: the reader's wait ends at once
        self.lease_conn: psycopg.Connection | None = None

    # -- budget (--limit is shared by all sources of one invocation) ---------------------------
    def _take(self, n: int) -> int:
        with self._lock:
            if self.budget[0] < 0:
                return n
            got = min(n, self.budget[0])
            self.budget[0] -= got
            return got

    # -- entry -------------------------------------------------------------------------------
    def run(self) -> SourceStats:
        t0 = time.monotonic()
        try:
            had_rows = self._start()
        except psycopg.OperationalError as e:
            first = first_line(str(e), type(e).__name__)
            raise EmbedError(f"cannot reach the database at {mask(self.url)}: {first}") from None
        fmt = wanted(self.opts.progress)
        if fmt != NONE and self.stats.rows_pending_at_start:
            label = f"{self.kind} {self.t.source.name}/{self.t.space.name}"
            self.progress = Progress(label, self.stats.rows_pending_at_start, every=self.opts.progress_every,
                                     fmt=fmt).start()
        ok, reason = False, None
        try:
            self._run_with_retries(had_rows)
            ok = not self.stats.interrupted
            reason = "interrupted" if self.stats.interrupted else None
        except KeyboardInterrupt:
            self.stats.interrupted = True
            reason = "interrupted"
            raise
        except BaseException as e:
            reason = type(e).__name__ if not isinstance(e, EmbedError) else str(e)[:300]
            raise
        finally:
            if self.progress:
                self.progress.finish()
            self.stats.seconds = time.monotonic() - t0
            self._finish(ok, reason)
        return self.stats

    def _start(self) -> bool:
        """Checks, the hash index, the `before` step (sync's deletes), the pending count and
        the run record. Returns whether the store table already had rows (serves reads)."""
        with _connect(self.url, autocommit=True) as conn:
            if not self.t.has_store_table(conn):
                raise EmbedError(
                    f"no store table for source {self.t.source.name} in space {self.t.space.name}: run `embed init`"
                )
            migrations.migrate(conn)
            had_rows = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(self.t.store)).fetchone()[0]
            ensure_hash_index(conn, self.t, concurrently=had_rows)
            if self.before is not None:
                self.stats.extra.update(self.before(conn, self.t))
            self.stats.rows_pending_at_start = conn.execute(self.t.pending_query(count=True)).fetchone()[0]
            params = {"limit": self.opts.limit, "workers": self.opts.workers, "chunk_rows": self.opts.chunk_rows,
                      "dedupe": self.opts.dedupe, "pid": os.getpid()}
            self.stats.run_id = start_run(conn, self.t, self.kind, params)
        return bool(had_rows)

    def _finish(self, ok: bool, reason: str | None) -> None:
        try:
            with _connect(self.url, autocommit=True) as conn:
                finish_run(conn, self.t, self.kind, self.stats.run_id, ok, self.stats.as_dict(), reason)
        except psycopg.Error:
            pass  # the database is gone: status shows the run as abandoned once its lock is gone
        finally:
            self._drop_lease_conn()

    def _run_with_retries(self, had_rows: bool) -> None:
        delay = 0.5
        failing_since: float | None = None
        while True:
            try:
                self._passes(had_rows)
                return
            except psycopg.OperationalError as e:
                if self.stop.is_set():
                    self.stats.interrupted = True
                    return
                now = time.monotonic()
                if self._committed:
                    failing_since, delay, self._committed = None, 0.5, False
                failing_since = failing_since or now
                first = first_line(str(e), type(e).__name__)
                if now - failing_since > self.opts.retry_seconds:
                    raise EmbedError(
                        f"lost the database at {mask(self.url)} for over {self.opts.retry_seconds:g}s ({first}); "
                        "every committed batch is kept: run the same command again to resume"
                    ) from None
                self.stats.retries += 1
                self.opts.say(f"database connection lost ({first}); retrying in {delay:.1f}s")
                self._drop_lease_conn()
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
            except BaseException:
                self._drop_lease_conn()
                raise

    def _drop_lease_conn(self) -> None:
        """Close the lease connection: every chunk lock and the run lock go with it."""
        if self.lease_conn is not None:
            try:
                self.lease_conn.close()
            finally:
                self.lease_conn = None

    def _passes(self, had_rows: bool) -> None:
        self.lease_conn = _connect(self.url, autocommit=True)
        lease_mod.hold_run(self.lease_conn, self.stats.run_id)
        for _ in range(2):  # a joined plan is followed by one fresh pass: it may predate new rows
            gen, created = lease_mod.open_plan(self.lease_conn, self.t, self.kind, self.opts.chunk_rows)
            leases = Leases(self.lease_conn, self.t, self.kind, gen, self.holder)
            self._pipeline(leases)
            if self.stats.interrupted or self.stats.limited:
                return
            self.stats.complete = leases.remaining() == 0
            if created or not self.stats.complete:
                break
            # We joined a plan someone else cut, maybe long ago: rows added since to chunks
            # already done would be missed, so one fresh pass follows if anything is pending.
            if not self.lease_conn.execute(self.t.pending_query(count=True)).fetchone()[0]:
                break
        if self.stats.complete and self.opts.build_index:
            pause_point("before_index")
            self.stats.index = ensure_hnsw(self.lease_conn, self.t, self.index_params, concurrently=had_rows)

    # -- the pipeline ------------------------------------------------------------------------
    def _pipeline(self, leases: Leases) -> None:
        workers = max(1, int(self.opts.workers))
        q_read: queue.Queue[Work | None] = queue.Queue(maxsize=workers + 1)
        q_write: queue.Queue[Work | None] = queue.Queue(maxsize=workers + 1)
        halt = threading.Event()  # this pipeline only: an error in one stage stops the others
        self._error = None
        self._inflight = 0  # batches read and not yet written

        def guard(fn: Any, *args: Any) -> None:
            try:
                fn(*args)
            except _Stop:
                pass
            except BaseException as e:
                with self._lock:
                    if self._error is None:
                        self._error = e
                halt.set()

        threads = [threading.Thread(target=guard, args=(self._reader, leases, q_read, halt, workers), name="embed-read")]
        threads += [
            threading.Thread(target=guard, args=(self._embedder, q_read, q_write, halt), name=f"embed-model-{i}")
            for i in range(workers)
        ]
        threads.append(
            threading.Thread(target=guard, args=(self._writer, leases, q_write, halt, workers), name="embed-write")
        )
        for th in threads:
            th.start()
        try:
            for th in threads:
                while th.is_alive():
                    th.join(0.2)
                    if self.stop.is_set():
                        halt.set()
        except KeyboardInterrupt:
            halt.set()
            self.stop.set()
            for th in threads:
                th.join()
            raise
        if self._error is not None:
            raise self._error
        if self.stop.is_set():
            self.stats.interrupted = True

    @staticmethod
    def _put(q: queue.Queue, item: Any, halt: threading.Event) -> None:
        while True:
            if halt.is_set():
                raise _Stop
            try:
                q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    @staticmethod
    def _get(q: queue.Queue, halt: threading.Event) -> Any:
        while True:
            if halt.is_set():
                raise _Stop
            try:
                return q.get(timeout=0.2)
            except queue.Empty:
                continue

    # -- reader ------------------------------------------------------------------------------
    def _reader(self, leases: Leases, q: queue.Queue, halt: threading.Event, workers: int) -> None:
        with _connect(self.url, autocommit=True) as conn:
            taken: set[int] = set()
            while not halt.is_set():
                if self.budget[0] == 0:
                    self.stats.limited = True
                    break
                self._written.clear()
                chunk = leases.claim(taken, self.stats.run_id)
                if chunk is None:
                    # Nothing free now. While our own batches are still in flight, keep looking:
                    # a peer that dies frees its chunks, and this process takes them over. The
                    # writer's next batch ends the wait (a pass with little to write would
                    # otherwise sit out the whole half second, per source).
                    if self._inflight == 0:
                        break
                    self._written.wait(0.5)
                    continue
                taken.add(chunk.index)
                self._read_chunk(conn, leases, chunk, q, halt)
        for _ in range(workers):
            self._put(q, None, halt)

    def _read_chunk(
        self, conn: psycopg.Connection, leases: Leases, chunk: Chunk, q: queue.Queue, halt: threading.Event
    ) -> None:
        with conn.cursor(binary=True) as cur:
            rows = cur.execute(self.t.pending_query(chunk.lo, chunk.hi)).fetchall()
        allowed = self._take(len(rows))
        finished = allowed == len(rows)
        rows = rows[:allowed]
        if not finished:
            self.stats.limited = True
        if not rows:
            if finished:
                leases.mark_done(chunk)
                self.stats.chunks_done += 1
            leases.release(chunk)
            return
        step = max(1, self.opts.chunk_rows)
        for start in range(0, len(rows), step):
            part = rows[start : start + step]
            last = finished and start + step >= len(rows)
            work = self._work(conn, chunk, part, last, final=start + step >= len(rows))
            with self._lock:
                self._inflight += 1
            self._put(q, work, halt)

    def _work(self, conn: psycopg.Connection, chunk: Chunk, rows: list[tuple], last: bool, final: bool) -> Work:
        n, dims = len(rows), self.t.space.dims
        w = Work(
            chunk=chunk, last=last, ids=[], hashes=[], texts=[], has_row=np.zeros(n, bool),
            vectors=np.zeros((n, dims), np.float32), known=np.zeros(n, bool), tokens=np.full(n, -1, np.int64),
            truncated=np.zeros(n, bool), origin=np.full(n, MODEL, np.int8),
        )
        w.release = final
        keep: list[int] = []
        for i, (rid, text, sha, has_row) in enumerate(rows):
            sha = bytes(sha)
            if text is None or not text.strip():
                w.skips.append(Skip(rid, sha, "empty"))
                continue
            keep.append(i)
            w.ids.append(rid)
            w.hashes.append(sha)
            w.texts.append(text)
            w.has_row[len(keep) - 1] = bool(has_row)
        m = len(keep)
        w.has_row, w.vectors, w.known = w.has_row[:m], w.vectors[:m], w.known[:m]
        w.tokens, w.truncated, w.origin = w.tokens[:m], w.truncated[:m], w.origin[:m]
        if self.opts.dedupe and m:
            wanted = list({h for h in w.hashes})
            with conn.cursor(binary=True) as cur:
                found = cur.execute(
                    sql.SQL(
                        "SELECT DISTINCT ON (content_sha256) content_sha256, embedding, tokens, truncated FROM {}"
                        " WHERE content_sha256 IN (SELECT substring(%s::bytea FROM (i - 1) * 32 + 1 FOR 32)"
                        " FROM generate_series(1, %s) AS i)"
                    ).format(self.t.store),
                    (b"".join(wanted), len(wanted)),
                ).fetchall()
            known = {bytes(h): (np.asarray(v.to_numpy(), np.float32), -1 if tok is None else tok, tr)
                     for h, v, tok, tr in found}
            for i, h in enumerate(w.hashes):
                hit = known.get(h)
                if hit is not None:
                    w.vectors[i], w.tokens[i], w.truncated[i] = hit
                    w.known[i] = True
                    w.origin[i] = STORED
                    w.texts[i] = None  # no need to keep text we will not send anywhere
        return w

    # -- embedder ----------------------------------------------------------------------------
    def _embedder(self, q_in: queue.Queue, q_out: queue.Queue, halt: threading.Event) -> None:
        while True:
            w = self._get(q_in, halt)
            if w is None:
                self._put(q_out, None, halt)
                return
            self._embed_work(w)
            self._put(q_out, w, halt)

    def _embed_work(self, w: Work) -> None:
        first_of: dict[bytes, int] = {}
        dups: list[tuple[int, int]] = []
        to_model: list[int] = []
        for i in np.flatnonzero(~w.known):
            h = w.hashes[i]
            if self.opts.dedupe:
                hit = self.cache.get(h)
                if hit is not None:
                    w.vectors[i], w.tokens[i], w.truncated[i] = hit
                    w.known[i], w.origin[i] = True, CACHED
                    continue
                if h in first_of:
                    dups.append((i, first_of[h]))
                    continue
                first_of[h] = i
            to_model.append(int(i))
        order = sorted(to_model, key=lambda i: len(w.texts[i] or ""), reverse=True)
        rejected: dict[int, str] = {}
        if order:
            vecs, toks, trunc, rejected_pos = self._embed_texts([w.texts[i] or "" for i in order])
            w.counted = len(order)
            with self._lock:
                self.stats.texts_embedded += len(order)
            for k, i in enumerate(order):
                if k in rejected_pos:
                    rejected[i] = rejected_pos[k]
                    continue
                w.vectors[i], w.tokens[i], w.truncated[i] = vecs[k], toks[k], trunc[k]
                w.known[i] = True
                if self.opts.dedupe:
                    self.cache.put(w.hashes[i], (vecs[k].copy(), int(toks[k]), bool(trunc[k])))
        for i, j in dups:
            if j in rejected:
                rejected[i] = rejected[j]
            else:
                w.vectors[i], w.tokens[i], w.truncated[i] = w.vectors[j], w.tokens[j], w.truncated[j]
                w.known[i], w.origin[i] = True, CACHED
        for i, reason in rejected.items():
            w.skips.append(Skip(w.ids[i], w.hashes[i], reason))
        w.texts = []  # the text is not needed past this point
        if rejected:
            keep = np.flatnonzero(w.known)
            w.ids = [w.ids[i] for i in keep]
            w.hashes = [w.hashes[i] for i in keep]
            w.has_row, w.vectors, w.tokens = w.has_row[keep], w.vectors[keep], w.tokens[keep]
            w.truncated, w.origin, w.known = w.truncated[keep], w.origin[keep], w.known[keep]

    def _embed_texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, str]]:
        """Embed in one call; if the model rejects the call, bisect to find the rows it rejects.

        Returns vectors, tokens (-1 unknown), truncated, and {position: reason} for rejections.
        An embedder that rejects every text is a configuration problem, not bad rows: that
        stops the run instead of skipping the whole source.
        """
        from embed.embedders import EmbedResponseError

        n, dims = len(texts), self.t.space.dims
        vecs = np.zeros((n, dims), np.float32)
        toks = np.full(n, -1, np.int64)
        trunc = np.zeros(n, bool)
        rejected: dict[int, str] = {}
        malformed: list[int] = []  # positions rejected for a malformed response: retried below
        state = {"ok": 0, "bad_in_a_row": 0}

        def go(lo: int, hi: int) -> None:
            try:
                res = self.embedder.embed(texts[lo:hi], "passage")
            except Exception as e:
                if not _is_rejection(e):
                    raise
                if hi - lo == 1:
                    rejected[lo] = f"rejected by embedder ({type(e).__name__})"
                    if isinstance(e, EmbedResponseError):
                        malformed.append(lo)
                    state["bad_in_a_row"] += 1
                    if state["ok"] == 0 and state["bad_in_a_row"] >= 8:
                        raise EmbedError(
                            f"space {self.t.space.name}: the embedder rejects every input tried "
                            f"({type(e).__name__}: {e}); stopping instead of skipping rows"
                        ) from None
                    return
                mid = (lo + hi) // 2
                go(lo, mid)
                go(mid, hi)
                return
            state["ok"] += hi - lo
            state["bad_in_a_row"] = 0
            vecs[lo:hi] = res.vectors
            trunc[lo:hi] = res.truncated
            if res.tokens is not None:
                toks[lo:hi] = res.tokens

        # One call per `call_rows` texts (the provider's natural batch), each reported to the
        # progress as it ends; a provider that must get the whole list at once says None.
        step = getattr(self.embedder, "call_rows", None) or n
        for lo in range(0, n, step):
            go(lo, min(n, lo + step))
            if self.progress:
                self.progress.add(min(n, lo + step) - lo)
        # A malformed response (NaN, wrong dims, a count mismatch) for one text is more often a
        # glitching endpoint than a property of the text: retry those texts alone, after the rest,
        # with a short backoff, before skipping them for good (found by the fault suite, seed 3:
        # a burst of NaN responses skipped a healthy row, which then never reached the new space).
        for pos in malformed:
            for attempt in range(RESPONSE_RETRIES):
                time.sleep(0.1 * 2**attempt)
                try:
                    res = self.embedder.embed(texts[pos : pos + 1], "passage")
                except Exception as e:
                    if not _is_rejection(e):
                        raise
                    continue
                del rejected[pos]
                vecs[pos], trunc[pos] = res.vectors[0], res.truncated[0]
                if res.tokens is not None:
                    toks[pos] = res.tokens[0]
                break
        return vecs, toks, trunc, rejected

    # -- writer ------------------------------------------------------------------------------
    def _writer(self, leases: Leases, q: queue.Queue, halt: threading.Event, workers: int) -> None:
        with _connect(self.url, autocommit=False) as conn:
            writer = StoreWriter(conn, self.t)
            ended = 0
            while ended < workers:
                w = self._get(q, halt)
                if w is None:
                    ended += 1
                    continue
                rows = Rows(ids=w.ids, hashes=w.hashes, vectors=w.vectors, truncated=w.truncated, tokens=w.tokens)
                done = leases.done_sql(w.chunk) if (w.last and w.chunk is not None) else None
                res = writer.write(rows, w.has_row, w.skips, self.stats.run_id, done)
                self._committed = True
                if w.chunk is not None and w.release:
                    leases.release(w.chunk)
                with self._lock:
                    st = self.stats
                    st.rows_written += res.written
                    st.rows_dropped += res.dropped
                    st.rows_embedded += int((w.origin == MODEL).sum())
                    st.rows_reused += int((w.origin != MODEL).sum())
                    st.truncated += int(w.truncated.sum())
                    st.skipped.update(s.reason for s in w.skips)
                    st.chunks_done += int(done is not None)
                    self._inflight -= 1
                self._written.set()
                if self.progress:  # what the model stage did not count call by call (reused, skipped rows)
                    self.progress.add(len(w.ids) + len(w.skips) - w.counted)


# ---------------------------------------------------------------------------------------------
# public API


def _targets(cfg: Config, space: Space, sources: list[str] | None) -> list[Target]:
    names = list(cfg.sources) if not sources or sources == ["all"] else sources
    if not names:
        raise EmbedError("config.yaml declares no sources (variables.embed_sources)")
    return [Target(cfg.source(n), space) for n in names]


def check_ready(url: str, sources: list[Source] | None = None, step: str = "embed backfill") -> None:
    """A one-line error unless `embed init` has run on this database (and this role may write its
    store), and (for `sources`) unless this role may read every row: SELECT granted, no row-level
    security hiding rows (they would be missed)."""
    from embed.db import catalog, privileges
    from embed.db.connection import connect

    with connect(url) as conn:
        privileges.require(privileges.store_owner(conn), step)
        if not store.is_initialized(conn):
            raise NotInitialized()
        user, _, _ = privileges.role(conn)
        for src in sources or ():
            privileges.require(privileges.table_select(conn, src.table, catalog.READ_STEPS), step)
            facts = catalog.table_facts(conn, *src.schema_table, None)
            problem = catalog.hidden_rows(facts, user) if facts else None
            if problem:
                problem.refuse(step)


def run_pass(
    cfg: Config, url: str, space: str | Space, *, sources: list[str] | None = None, kind: str = BACKFILL,
    opts: Options | None = None, embedder: Any = None,
    before: Callable[[psycopg.Connection, Target], dict[str, Any]] | None = None,
) -> PassResult:
    """One pass of `kind` over the sources for one space; returns the summary (see backfill)."""
    opts = opts or Options()
    if opts.limit is not None and opts.limit < 0:
        raise EmbedError("--limit must be >= 0")
    if opts.workers < 1 or opts.chunk_rows < 1:
        raise EmbedError("--workers and chunk_rows must be >= 1")
    sp = space if isinstance(space, Space) else cfg.space(space)
    targets = _targets(cfg, sp, sources)
    check_ready(url, [t.source for t in targets], f"embed {kind}")
    own = embedder is None
    if own:
        from embed.embedders import Deferred

        embedder = Deferred(sp)  # loaded only if a row needs embedding
    if opts.budget_usd is not None:
        from embed.preview import Spend

        embedder = Spend(embedder, opts.budget_usd)  # counts each call's tokens before it is sent
    t0 = time.monotonic()
    budget = [opts.limit if opts.limit is not None else -1]
    per: dict[str, dict[str, Any]] = {}
    try:
        for t in targets:
            st = SourcePass(url, t, embedder, opts, cfg.index_params, kind=kind, budget=budget, before=before).run()
            per[t.source.name] = st.as_dict()
            if st.interrupted:
                break
    finally:
        if own:
            embedder.close()
    return summarize(sp, kind, per, time.monotonic() - t0)


@dataclass(frozen=True)
class PassResult:
    """What one backfill or sync pass did, over every source it covered."""

    kind: str
    space: str
    fingerprint: str
    rows_written: int
    rows_embedded: int
    rows_reused: int
    rows_dropped: int
    texts_embedded: int
    truncated: int
    skipped: dict[str, int]
    seconds: float
    rows_per_s: float
    complete: bool
    interrupted: bool
    sources: dict[str, dict[str, Any]]  # per source: SourcePass.as_dict() (+ a sync pass's lag)
    rows_pending: int | None = None  # sync: live rows still without a current vector
    store_rows_deleted: int = 0  # sync: vectors of deleted or soft-deleted rows removed

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.rows_pending is None:
            del out["rows_pending"], out["store_rows_deleted"]
        return out


def summarize(sp: Space, kind: str, per: dict[str, dict[str, Any]], seconds: float) -> PassResult:
    skipped: Counter = Counter()
    for s in per.values():
        skipped.update(s["skipped"])
    total = {k: sum(s[k] for s in per.values()) for k in
             ("rows_written", "rows_embedded", "rows_reused", "rows_dropped", "texts_embedded", "truncated")}
    handled = total["rows_written"] + sum(skipped.values())
    return PassResult(
        kind=kind, space=sp.name, fingerprint=sp.fingerprint, **total, skipped=dict(skipped),
        seconds=round(seconds, 3), rows_per_s=round(handled / seconds, 1) if seconds > 0 else 0.0,
        complete=all(s["complete"] for s in per.values()) if per else False,
        interrupted=any(s["interrupted"] for s in per.values()), sources=per,
    )


def backfill(
    cfg: Config, url: str, space: str, *, sources: list[str] | None = None, limit: int | None = None,
    workers: int = 1, chunk_rows: int = 4096, progress: bool | str = True, stop: threading.Event | None = None,
    **more: Any,
) -> PassResult:
    """Embed every live source row that has no current vector in `space` and store it.

    Idempotent and resumable; several processes can run it at once and share the work.
    Returns rows written/embedded/reused/dropped, skipped by reason, truncated, seconds, rows/s,
    per source with the run id and the HNSW index state.
    """
    opts = Options(limit=limit, workers=workers, chunk_rows=chunk_rows, progress=progress, stop=stop, **more)
    return run_pass(cfg, url, space, sources=sources, kind=BACKFILL, opts=opts)
