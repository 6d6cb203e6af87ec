"""How embed.cutover.inplace runs its SQL: one locked session per operation, short transactions under a
lock timeout (retried while Honcho holds a row or table), id-range batches, and where the
in-place bookkeeping says each space lives."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg import sql

from embed import store
from embed.config import Config, Source
from embed.cutover import inplace_queue, inplace_sql
from embed.db import catalog, locks, privileges
from embed.db.connection import connect
from embed.db.hooks import pause_point
from embed.errors import Busy, EmbedError, NotInitialized
from embed.fill.progress import AUTO, Progress
from embed.store import migrations
from embed.store.target import Target

BATCH_ROWS = 500  # rows per UPDATE batch: a short transaction (each row also updates Honcho's HNSW index)
STAGE_LOCK_TIMEOUT_S = 2.0  # a batch never queues long behind Honcho (and never makes it queue)
STAGE_ATTEMPTS = 5
SYNC_COLUMNS = ("sync_state", "last_sync_at", "sync_attempts")  # Honcho's vector sync bookkeeping
BUSY = (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


@contextmanager
def session(url: str, *, wait_s: float = 10.0) -> Iterator[psycopg.Connection]:
    """An autocommit connection holding the in-place lock for as long as it is open (closing
    it, or killing its process, releases the lock; we wait a little for a dead holder's)."""
    with connect(url, autocommit=True) as conn:
        if not store.is_initialized(conn):
            raise NotInitialized()
        migrations.migrate(conn)
        conn.execute(set_timeout(STAGE_LOCK_TIMEOUT_S, local=False))  # no statement queues long behind Honcho
        conn.execute(inplace_queue.SELF)  # its own writes are not changes to queue (embed.cutover.inplace_queue)
        with locks.held(conn, locks.INPLACE, wait_s=wait_s,
                        busy="another embed in-place operation (stage, swap, fill) is running on this database"):
            yield conn


def set_timeout(seconds: float, *, local: bool = True) -> sql.Composed:
    """`SET [LOCAL] lock_timeout`; 0 waits forever."""
    ms = f"{max(int(seconds * 1000), 1)}ms" if seconds > 0 else "0"
    return sql.SQL("SET {} lock_timeout = {}").format(sql.SQL("LOCAL" if local else "SESSION"), sql.Literal(ms))


def busy_message(table: str, seconds: float) -> str:
    return (f"{table}: writers still hold the table (no lock within {seconds:g}s): "
            "pause Honcho's writers (API and deriver) and retry")


T = TypeVar("T")
Work = Callable[[psycopg.Connection], tuple[int, int]]


def attempt(conn: psycopg.Connection, work: Callable[[psycopg.Connection], T], *, lock_s: float, attempts: int,
            busy: str) -> T:
    """`work` in its own short transaction under a lock timeout, retried while busy."""
    for i in range(attempts):
        try:
            with conn.transaction():
                conn.execute(set_timeout(lock_s))
                return work(conn)
        except BUSY:
            if i == attempts - 1:
                raise Busy(busy) from None
            time.sleep(min(0.5 * 2**i, 5.0))
    raise AssertionError("unreachable")


def one(stmt: sql.Composable) -> Work:
    """A statement that returns one row of two counts, as a unit of work."""
    def work(conn: psycopg.Connection) -> tuple[int, int]:
        a, b = conn.execute(stmt).fetchone()
        return int(a), int(b)
    return work


def refresh(conn: psycopg.Connection, t: Target, col: str, where: Sequence[sql.Composable] = (), *,
            states: bool = False) -> tuple[int, int, list[tuple[str, str]]]:
    """Make the tagged column current for the live rows of `where`: (rows filled, rows cleared,
    [(id, sync_state it must get)] for rows left NULL whose state is not that yet: with `states`)."""
    rows = conn.execute(inplace_sql.stale(t, col, where, states=states)).fetchall()
    todo = [(i, bytes(sha)) for i, sha, empty, has, _ in rows if has or not empty]
    changed: dict[str, bool] = {}
    if todo:
        changed = dict(conn.execute(inplace_sql.refresh(t, col), ([i for i, _ in todo], [h for _, h in todo])).fetchall())
    filled = sum(1 for v in changed.values() if v)
    marks = [(i, state) for i, _, _, _, state in rows if state is not None and not changed.get(i, False)]
    return filled, len(changed) - filled, marks


def batched(
    conn: psycopg.Connection, t: Target, make: Callable[[str | None, str | None], Work], *,
    batch_rows: int, lock_s: float = STAGE_LOCK_TIMEOUT_S, attempts: int = STAGE_ATTEMPTS, busy: str | None = None,
    label: str | None = None, fmt: str = AUTO, pause: str | None = None,
) -> tuple[int, int]:
    """Run `make(lo, hi)` over the source's id ranges of `batch_rows` rows, each its own
    transaction; returns the sums of its two counts. A rerun simply starts over: every
    statement only touches rows that still need it."""
    if batch_rows < 1:
        raise EmbedError(f"batch_rows must be >= 1, got {batch_rows}")
    busy = busy or (f"{t.source.table} stays locked by other sessions ({attempts} tries, {lock_s:g}s each); "
                    "finished batches are kept: rerun to continue")
    progress = None
    if label:
        total = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(t.src)).fetchone()[0]
        progress = Progress(label, total, fmt=fmt).start()
    done = (0, 0)
    lo: str | None = None
    bound = inplace_sql.next_bound(t)
    try:
        while True:
            hi, n = attempt(conn, lambda c, lo=lo: c.execute(bound, {"lo": lo, "n": batch_rows}).fetchone(),
                            lock_s=lock_s, attempts=attempts, busy=busy)
            if hi is None:
                return done
            a, b = attempt(conn, make(lo, hi), lock_s=lock_s, attempts=attempts, busy=busy)
            done = (done[0] + a, done[1] + b)
            if progress:
                progress.add(n)
            if pause:
                pause_point(pause)
            lo = hi
    finally:
        if progress:
            progress.finish()


def by_page(conn: psycopg.Connection, t: Target, col: str, *, states: bool, batch_pages: int,
            label: str | None = None, fmt: str = AUTO, pause: str | None = None) -> int:
    """Fill the tagged column one row a heap page per transaction (inplace_sql.page_firsts), in
    passes over the table, `batch_pages` pages a transaction, until a pass fills nothing: after a
    page's first row moves out (no room on a full page), each later update of the page finds the
    room its predecessor freed and is HOT. Its picks are live rows with a store vector for their
    content, which `refresh` alone fills; the id-range pass of `check` that follows moves records,
    clears and queues whatever else there is. Rows filled."""
    firsts = inplace_sql.page_firsts(t, col)
    busy = (f"{t.source.table} stays locked by other sessions ({STAGE_ATTEMPTS} tries, {STAGE_LOCK_TIMEOUT_S:g}s "
            "each); finished batches are kept: rerun to continue")
    progress = Progress(label, conn.execute(sql.SQL("SELECT count(*) FROM {}").format(t.src)).fetchone()[0],
                        fmt=fmt).start() if label else None

    def batch(c: psycopg.Connection, lo: int) -> int:
        ids = [r[0] for r in c.execute(firsts, {"lo": lo, "hi": lo + batch_pages}).fetchall()]
        return refresh(c, t, col, inplace_sql.among(t, ids), states=states)[0] if ids else 0

    filled = 0
    try:
        while True:
            n = 0
            try:  # the records grow by a pass's rows: the next pass's lookups plan as lookups
                conn.execute(sql.SQL("ANALYZE {}").format(inplace_sql.STAGED))
            except BUSY:
                pass  # autovacuum holds it, and analyzes it itself
            for lo in range(0, conn.execute(inplace_sql.pages(t)).fetchone()[0], batch_pages):
                got = attempt(conn, lambda c, lo=lo: batch(c, lo), lock_s=STAGE_LOCK_TIMEOUT_S,
                              attempts=STAGE_ATTEMPTS, busy=busy)
                n += got
                if progress:
                    progress.add(got)
                if pause:
                    pause_point(pause)
            filled += n
            if not n:
                return filled
    finally:
        if progress:
            progress.finish()


def check(conn: psycopg.Connection, t: Target, col: str, where: Sequence[sql.Composable], *,
          states: bool) -> tuple[int, int, list[tuple[str, str]]]:
    """`refresh` of the tagged column, also moving unchanged rows' records to their current xmin,
    clearing stale vectors of rows that are no longer live (inplace_sql.clear_dead) and queueing
    the live rows still without a vector (inplace_queue.requeue). `states`: the source has
    Honcho's sync_state."""
    filled, cleared, marks = refresh(conn, t, col, where, states=states)
    conn.execute(inplace_sql.touch(t, col, where))
    _, dead = conn.execute(inplace_sql.clear_dead(t, col, where)).fetchone()
    conn.execute(inplace_queue.requeue(t, col, where, states=states))
    return filled, cleared + dead, marks


def refresher(t: Target, col: str, states: bool) -> Callable[[str | None, str | None], Work]:
    """Batches of `check` over id ranges (a full pass)."""
    return lambda lo, hi: checker(t, col, states)(inplace_sql.bounds(t, lo, hi))


def checker(t: Target, col: str, states: bool) -> Callable[[Sequence[sql.Composable]], Work]:
    """`check` of the rows of a `where`, as a unit of work (the change queue's consumer)."""
    def make(where: Sequence[sql.Composable]) -> Work:
        def work(conn: psycopg.Connection) -> tuple[int, int]:
            filled, cleared, _ = check(conn, t, col, where, states=states)
            return filled, cleared
        return work
    return make


def adopter(t: Target, col: str, trusted: sql.Composable, states: bool) -> Callable[[Sequence[sql.Composable]], Work]:
    """inplace_sql.adopt of the rows of a `where`, queueing the live rows it could not record."""
    def make(where: Sequence[sql.Composable]) -> Work:
        def work(conn: psycopg.Connection) -> tuple[int, int]:
            a, b = conn.execute(inplace_sql.adopt(t, col, trusted, where)).fetchone()
            conn.execute(inplace_queue.requeue(t, col, where, states=states))
            return int(a), int(b)
        return work
    return make


@dataclass(frozen=True)
class Drained:
    rows_checked: int  # queue entries taken (each a row changed since the last check, or still without a vector)
    a: int  # the work's two counts, summed (check: filled, cleared; adopt: adopted, dropped)
    b: int


def drain(conn: psycopg.Connection, t: Target, make: Callable[[Sequence[sql.Composable]], Work], *,
          batch_rows: int, locked: bool = False, changed: bool = False, lock_s: float = STAGE_LOCK_TIMEOUT_S,
          attempts: int = STAGE_ATTEMPTS, busy: str | None = None) -> Drained:
    """One pass over the space's change queue in id order, `batch_rows` ids at a time: each batch
    taken out and checked in one transaction (`locked`: in the caller's, which holds the tables).
    `changed` (always when `locked`): only the rows changed since their last check or whose
    sync_state is still to set, not those only waiting for a vector."""
    take = inplace_queue.take(t)
    busy = busy or f"{t.source.table} stays locked by other sessions ({attempts} tries, {lock_s:g}s each); rerun"
    after: str | None = None
    n = a = b = 0
    while True:
        def work(c: psycopg.Connection, after: str | None = after) -> tuple[int, str | None, int, int]:
            ids, last = c.execute(take, {"after": after, "n": batch_rows, "changed": locked or changed}).fetchone()
            if not ids:
                return 0, None, 0, 0
            x, y = make(inplace_sql.among(t, ids))(c)
            return len(ids), last, x, y
        got, after, x, y = work(conn) if locked else attempt(conn, work, lock_s=lock_s, attempts=attempts, busy=busy)
        n, a, b = n + got, a + x, b + y
        if got < batch_rows:
            return Drained(n, a, b)


def sources_of(cfg: Config, names: list[str] | None = None) -> list[Source]:
    chosen = [cfg.source(n) for n in names] if names else list(cfg.sources.values())
    bare = [s.name for s in chosen if not s.vector_column]
    if names and bare:
        raise EmbedError(f"source {bare[0]} has no vector_column: nothing to cut over in place")
    out = [s for s in chosen if s.vector_column]
    if not out:
        raise EmbedError("no source declares a vector_column: nothing to cut over in place")
    return out


def check_table(conn: psycopg.Connection, src: Source, step: str) -> None:
    """Refuse `step` (one line, nothing changed) on a table whose layout or dependents the swap
    would break, whose rows row-level security hides from this role, or that this role may not
    alter (embed.db.catalog, embed.db.privileges)."""
    facts = catalog.table_facts(conn, *src.schema_table, src.vector_column)
    if facts is None:
        return  # no such table: the column checks say so
    user, _, _ = privileges.role(conn)
    for problem in (catalog.hidden_rows(facts, user), *catalog.unswappable(facts, src.vector_column or "")):
        if problem:
            problem.refuse(step)
    privileges.require(privileges.table_owner(conn, src.table, privileges.INPLACE_STEPS), step)


def needs_store(conn: psycopg.Connection, t: Target) -> None:
    if not t.has_store_table(conn):
        raise EmbedError(f"no store table for source {t.source.name} in space {t.space.name}: run `embed init`")
