"""`embed sync`: keep a new space in step with the source while the old space serves production.

One pass: delete store rows whose source row is gone or no longer live (soft delete), drop
skip records that no longer describe a live row's content, then run the backfill pipeline
(kind 'sync') over the rows added or edited since (a stored vector is current only while its
content hash matches the source row), and report the lag: rows still pending and the oldest
of them. `watch` repeats passes until stopped (SIGINT/SIGTERM set `stop`).

Safe next to a running backfill and next to Honcho writing: every write is the same
idempotent, source-checked upsert, and deletes only remove rows whose source row is not live.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from embed.config import Config
from embed.db.connection import connect
from embed.errors import EmbedError
from embed.fill.backfill import Options, PassResult, check_ready, run_pass
from embed.spaces import Space
from embed.store.target import Target

KIND = "sync"


def remove_dead(conn: psycopg.Connection, t: Target) -> dict[str, int]:
    """Delete vectors and skip records of rows that are deleted, soft-deleted or re-edited."""
    with conn.transaction():
        gone = conn.execute(
            sql.SQL(
                "DELETE FROM {store} AS t WHERE NOT EXISTS (SELECT 1 FROM ({rows}) AS s WHERE s.id = t.source_id)"
            ).format(store=t.store, rows=t.live_rows())
        ).rowcount
        stale_skips = conn.execute(
            sql.SQL(
                "DELETE FROM {skipped} AS k WHERE k.source = %s AND k.space_fp = %s AND NOT EXISTS ("
                "SELECT 1 FROM ({rows}) AS s WHERE s.id::text = k.source_id AND {sha} = k.content_sha256)"
            ).format(skipped=t.skipped, rows=t.live_rows(), sha=t.sha()),
            (t.source.name, t.space.fingerprint),
        ).rowcount
    return {"store_rows_deleted": gone, "skips_deleted": stale_skips}


def lag(conn: psycopg.Connection, t: Target) -> dict[str, Any]:
    """Rows pending in this space, and the creation time of the oldest (if the source has
    a created_at column)."""
    if t.has_column(conn, "created_at"):
        n, oldest = conn.execute(
            sql.SQL("SELECT count(*), min(x.created_at) FROM ({p}) AS p JOIN {src} AS x ON x.{id} = p.id").format(
                p=t.pending_query(), src=t.src, id=t.id
            )
        ).fetchone()
    else:
        n, oldest = conn.execute(t.pending_query(count=True)).fetchone()[0], None
    age = None
    if isinstance(oldest, datetime):
        now = datetime.now(UTC) if oldest.tzinfo else datetime.now()
        age = round((now - oldest).total_seconds(), 1)
    return {
        "rows_pending": int(n),
        "oldest_pending_created_at": oldest.isoformat() if isinstance(oldest, datetime) else None,
        "oldest_pending_age_s": age,
    }


def sync_once(
    cfg: Config, url: str, space: str | Space, *, sources: list[str] | None = None, opts: Options | None = None,
    embedder: Any = None,
) -> PassResult:
    """One sync pass over the sources for one space; returns the pass summary with the lag and,
    where a swap made the space live in the source's column, the watch of `embed verify` over the
    rows written there since (per source "verify": its Checked; none: nothing to watch)."""
    from embed.verify import verify

    sp = space if isinstance(space, Space) else cfg.space(space)
    out = run_pass(cfg, url, sp, sources=sources, kind=KIND, opts=opts, embedder=embedder, before=remove_dead)
    with connect(url) as conn:
        for name, per in out.sources.items():
            per["lag"] = lag(conn, Target(cfg.source(name), sp))
    for name, per in out.sources.items():
        watched = verify(cfg, url, sp.name, source=name, since_last=True, embedder=embedder)
        if watched.locations:
            per["verify"] = watched.locations[0].as_dict()
    return replace(out, rows_pending=sum(p["lag"]["rows_pending"] for p in out.sources.values()),
                   store_rows_deleted=sum(p.get("store_rows_deleted", 0) for p in out.sources.values()))  # absent: not reached


def sync(
    cfg: Config, url: str, space: str, *, sources: list[str] | None = None, watch: float | None = None,
    stop: threading.Event | None = None, on_pass: Callable[[PassResult, int], None] | None = None,
    **options: Any,
) -> tuple[PassResult, int]:
    """Sync once, or every `watch` seconds until `stop` is set; returns the last pass's summary
    and the number of passes run. `on_pass(summary, passes)` is called after each pass."""
    if watch is not None and watch <= 0:
        raise EmbedError("--watch needs a positive number of seconds")
    sp = cfg.space(space)
    check_ready(url)
    stop = stop or threading.Event()
    opts = Options(stop=stop, **options)
    from embed.embedders import Deferred

    embedder = Deferred(sp)  # loaded once for all passes, on the first row to embed
    passes = 0
    try:
        while True:
            t0 = time.monotonic()
            out = sync_once(cfg, url, sp, sources=sources, opts=opts, embedder=embedder)
            passes += 1
            if on_pass is not None:
                on_pass(out, passes)
            if watch is None or stop.is_set():
                return out, passes
            if stop.wait(max(0.0, watch - (time.monotonic() - t0))):
                return out, passes
    finally:
        embedder.close()
