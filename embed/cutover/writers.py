"""Who else is connected before an in-place swap, and whether they write to the source tables.

Honcho's API and deriver embed with whatever model they are configured with, so an in-place
swap wants them stopped: a row they write after the swap with the old model would be a vector
of the wrong space in the new column. Before the swap embed looks at `pg_stat_activity` (other
client sessions of this database: application name, address, user, since when; another role's
sessions show to a plain role with their details hidden, and are counted all the same) and at the
source tables: row-level write locks held right now, and the inserts, updates and deletes
counted since the command started (`pg_stat_user_tables`). Query texts are never read.

The look is a window that opens when the command starts (again after staging, whose own updates
would otherwise count) and closes right before the swap: Postgres publishes a session's counts at
most once a second, so a writer needs WINDOW_S to show. The command works meanwhile (SQLMesh
loads and plans), and what is left of the window is waited out only when another session ran
anything since it opened (or hides its state from embed's role): a session idle all along wrote
nothing in it, so with the writers stopped the look costs one catalog read, no wait.

The operator decides, and the command says what it saw:
- no flag: refuse while any other client session is connected;
- `--writers-stopped`: the operator stopped Honcho; refuse if a source table was written to
  since the command started, or a session holds a write lock on one (idle sessions: listed);
- `--allow-live-writers`: swap anyway; rows written meanwhile are caught up inside the lock
  or left NULL and 'pending' for Honcho's reconciler.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import psycopg

from embed.config import Config
from embed.db.connection import connect
from embed.errors import Blocked, EmbedError

CHECK, STOPPED, ALLOW = "check", "writers-stopped", "allow-live-writers"
WINDOW_S = 1.5
POLICIES = (CHECK, STOPPED, ALLOW)


@dataclass(frozen=True)
class Session:
    pid: int
    application: str
    address: str
    user: str
    state: str
    since: datetime | None
    writing: bool  # holds a row-level write lock on a source table now

    def describe(self) -> str:
        app = self.application or "(no application_name)"
        return (f"pid {self.pid} {app} from {self.address} as {self.user}, {self.state}"
                + (", holding a write lock on a source table" if self.writing else ""))


@dataclass(frozen=True)
class Writers:
    """Other client sessions, and rows written to each source table since `counters` was read."""

    sessions: tuple[Session, ...]
    writes: dict[str, int]

    @property
    def wrote(self) -> bool:
        return any(self.writes.values()) or any(s.writing for s in self.sessions)

    def describe(self) -> str:
        who = "; ".join(s.describe() for s in self.sessions) or "no other session"
        rows = ", ".join(f"{t}: {n}" for t, n in self.writes.items() if n)
        return who + (f"; rows written while embed looked: {rows}" if rows else "")


def counters(conn: psycopg.Connection, cfg: Config) -> dict[str, int]:
    """Inserts + updates + deletes counted so far per source table (the statistics collector's)."""
    out = {}
    for src in cfg.sources.values():
        row = conn.execute(
            "SELECT coalesce(n_tup_ins + n_tup_upd + n_tup_del, 0) FROM pg_stat_user_tables"
            " WHERE relid = to_regclass(%s)", (src.table,)).fetchone()
        out[src.table] = int(row[0]) if row else 0
    return out


# Other client sessions of this database: embed's own (application_name embed...) left out; another
# role's sessions show to a plain role with backend_type NULL and are counted all the same.
_OTHERS = """a.datname = current_database() AND a.pid <> pg_backend_pid()
             AND (a.backend_type = 'client backend' OR (a.backend_type IS NULL AND a.usesysid IS NOT NULL))
             AND coalesce(a.application_name, '') NOT LIKE 'embed%%'"""


def stirred(conn: psycopg.Connection, since: datetime) -> bool:
    """Whether another client session ran anything since `since` (the database's clock), is in a
    statement or a transaction now, or hides its state from this role."""
    row = conn.execute(f"""SELECT EXISTS (SELECT 1 FROM pg_stat_activity AS a WHERE {_OTHERS}
                             AND (a.state IS DISTINCT FROM 'idle' OR a.state_change IS NULL OR a.state_change >= %s))""",
                       (since,)).fetchone()
    return bool(row and row[0])


def observe(conn: psycopg.Connection, cfg: Config, window_s: float = WINDOW_S,
            since: dict[str, int] | None = None) -> Writers:
    """Other client sessions of this database (embed's own excluded) and what they wrote to the
    source tables during a window of `window_s` seconds (from `since`, counters read earlier)."""
    since = counters(conn, cfg) if since is None else since
    time.sleep(max(0.0, window_s))
    conn.execute("SELECT pg_stat_clear_snapshot()")  # read the counters afresh, not a cached copy
    now = counters(conn, cfg)
    tables = [src.table for src in cfg.sources.values()]
    rows = conn.execute(
        f"""SELECT a.pid, coalesce(a.application_name, ''),
                  CASE WHEN a.backend_type IS NULL THEN 'an address hidden from this role (GRANT pg_read_all_stats)'
                       ELSE coalesce(host(a.client_addr), 'local socket') END,
                  coalesce(a.usename::text, ''), coalesce(a.state, ''), a.backend_start,
                  EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.granted
                          AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock')
                          AND l.relation = ANY (SELECT to_regclass(t) FROM unnest(%s::text[]) AS t))
           FROM pg_stat_activity AS a
           WHERE {_OTHERS}
           ORDER BY a.pid""", (tables,)).fetchall()
    return Writers(tuple(Session(*r) for r in rows),
                   {t: max(0, now.get(t, 0) - since.get(t, 0)) for t in tables})


class Watch:
    """A look at the writers whose window opens now and closes at `look()`: the window runs while
    the command does its own work (SQLMesh loading and planning), so a look waits only for what is
    left of WINDOW_S, and only when another session stirred since the window opened. Looks again
    later see everything written since the window opened."""

    def __init__(self, url: str, cfg: Config) -> None:
        self.cfg = cfg
        self.conn = connect(url, autocommit=True)
        self.opened: datetime = self.conn.execute("SELECT clock_timestamp()").fetchone()[0]
        self.since = counters(self.conn, cfg)
        self.t0 = time.monotonic()

    def look(self) -> Writers:
        left = WINDOW_S - (time.monotonic() - self.t0)
        if left > 0 and not stirred(self.conn, self.opened):
            left = 0.0
        return observe(self.conn, self.cfg, left, since=self.since)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def require(policy: str, seen: Writers) -> None:
    """Refuse the swap (one line, nothing changed) unless `policy` accepts what was seen."""
    if policy not in POLICIES:
        raise EmbedError(f"unknown writers policy {policy!r}")
    if policy == ALLOW:
        return
    if policy == STOPPED and not seen.wrote:
        return
    if policy == CHECK and not seen.sessions and not seen.wrote:
        return
    what = ("the source tables were written to although --writers-stopped was given" if policy == STOPPED
            else "other sessions are connected to the database")
    raise Blocked(
        f"in-place swap refused, nothing changed: {what} ({seen.describe()}). Stop Honcho's API and deriver "
        "and rerun with --writers-stopped, or pass --allow-live-writers to swap with them running "
        "(what they write meanwhile is caught up in the lock or left pending)")
