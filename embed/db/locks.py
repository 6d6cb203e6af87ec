"""Every advisory lock embed takes, by name, and the three ways it takes one.

Named locks are keyed by `hashtext(name)`, so two processes agree on a key without a table; the
names never change (an older embed on the same database must take the same key).
The fill pipeline's per-chunk and per-run locks (embed.fill.leases) are two-integer keys and
live there: they are many, not one per database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from embed.errors import Busy

CUTOVER = "embed.cutover.switch"  # one cutover or rollback per database
INPLACE = "embed.cutover.inplace"  # one stage, swap or fill of Honcho's columns
RETIRE = "embed.safety.retire"  # retire and pin serialize: no pin slips between check and drop
INIT = "embed_store.init"  # two `embed init` agree on what they created
PLAN = "embed-plan:"  # + (source, space, kind): one chunk plan per pass


def xact(conn: psycopg.Connection, name: str) -> None:
    """Take `name` until the current transaction ends (waits for it)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))


@contextmanager
def held(conn: psycopg.Connection, name: str, *, wait_s: float | None = None, busy: str = "") -> Iterator[None]:
    """Hold the session lock `name` for the block. wait_s None: wait for it; else try for
    wait_s seconds (0: once) and raise Busy(busy). Released on exit; a connection that is gone
    (server restart, terminated backend) took its lock with it."""
    if wait_s is None:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (name,))
    else:
        deadline = time.monotonic() + wait_s
        while not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (name,)).fetchone()[0]:
            if time.monotonic() >= deadline:
                raise Busy(busy or f"another embed session holds {name}; nothing changed")
            time.sleep(0.2)
    try:
        yield
    finally:
        try:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (name,))
        except psycopg.OperationalError:
            pass


def still_held(conn: psycopg.Connection, name: str) -> bool:
    """Whether this session still holds `name` (a session lock dies with its connection)."""
    try:
        return bool(conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
            "AND granted AND objsubid = 1 AND objid = (hashtext(%s)::bigint & 4294967295)::oid)", (name,)
        ).fetchone()[0])
    except psycopg.OperationalError:
        return False
