"""`embed doctor`: a read-only diagnosis of the sources and the store before anything runs.

Each finding names the step it would break and the command (or GRANT) that fixes it; a finding
that blocks a step makes `embed doctor` exit 1. What it looks at, per source: rows, live rows,
soft-deleted, NULL and blank texts, the duplicate-content share (identical texts are embedded
once), live rows without a vector; texts over each space's token window, counted by the space's
own tokenizer where one loads offline (embed.embedders.tokens says which, else a stated bound);
the live column's dims against the declared legacy space; HNSW indexes (state, size) of the live
column and of the store tables; views or rules bound to the vector column, partitioned tables and
row-level security hiding rows (embed.db.catalog); then the privileges each step needs
(embed.db.privileges) and free disk against what the next steps add. It writes nothing and
reads texts only to count their tokens: findings carry counts, ids of objects and sizes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from embed import store
from embed.config import Config, Source
from embed.cutover import inplace_sql
from embed.db import catalog, privileges
from embed.db.connection import connect
from embed.errors import EmbedError
from embed.result import Result
from embed.spaces import Space
from embed.store import location
from embed.store.target import Target

if TYPE_CHECKING:
    from embed.embedders.tokens import TokenCounter

BLOCKING, WARNING, INFO = "blocking", "warning", "info"
ROW_OVERHEAD = 60  # bytes per stored row besides its vector: tuple header, id, sha256, flags, run id


@dataclass(frozen=True)
class Finding(Result):
    check: str  # what was looked at: rls, bound_objects, partitioned, privilege, over_window, ...
    severity: str  # blocking (a step would fail or go wrong), warning, info
    source: str | None  # the source it is about (None: the database)
    message: str  # one line: counts, names of objects, never text
    fix: str | None  # the command or GRANT that fixes it
    blocks: tuple[str, ...] = ()  # the steps it would break


@dataclass(frozen=True)
class Window(Result):
    """Live texts of one source over one space's token window."""

    space: str
    max_tokens: int
    over: int  # texts longer than the window: embedded from their first max_tokens tokens
    checked: int  # texts long enough to possibly be over (the others cannot be)
    longest: int  # the most tokens one text has
    method: str  # the tokenizer, or the bound, that counted them
    exact: bool


@dataclass(frozen=True)
class Index(Result):
    relation: str  # the table (or store table) and column it indexes
    name: str | None  # None: no HNSW index
    valid: bool
    bytes: int


@dataclass(frozen=True)
class SourceReport(Result):
    table: str
    rows: int
    live: int
    soft_deleted: int  # rows outside the source's live_filter
    null_text: int
    blank_text: int
    duplicate_share: float  # share of live non-blank texts identical to another one
    without_vector: int | None  # live rows whose live vector column is NULL (None: no vector column)
    column_dims: int | None
    table_bytes: int
    windows: tuple[Window, ...]
    indexes: tuple[Index, ...]


@dataclass(frozen=True)
class Disk(Result):
    server_free_bytes: int | None  # None: the server's disk is not visible from here
    server_needs_bytes: int  # an estimate: backfill (store table + HNSW) and in-place staging of the space
    needs_for: str
    local_free_bytes: int  # here, where `embed backup` writes
    backup_needs_bytes: int  # the database's size: an upper bound of its pg_dump


@dataclass(frozen=True)
class Diagnosis(Result):
    database: str
    role: str
    superuser: bool
    initialized: bool
    sources: dict[str, SourceReport]
    privileges: tuple[privileges.Privilege, ...]
    disk: Disk
    findings: tuple[Finding, ...]

    @property
    def blocking(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == BLOCKING)


def doctor(cfg: Config, url: str, *, sources: list[str] | None = None, spaces: list[str] | None = None) -> Diagnosis:
    """Diagnose `sources` (default: all) for `spaces` (default: every declared space). Read-only."""
    srcs = [cfg.source(n) for n in sources] if sources else list(cfg.sources.values())
    sps = [cfg.space(n) for n in spaces] if spaces else list(cfg.spaces.values())
    findings: list[Finding] = []
    with connect(url) as conn:
        conn.read_only = True
        user, db, su = privileges.role(conn)
        initialized = store.is_initialized(conn)
        try:
            location.check_legacy(conn, cfg)
        except EmbedError as e:
            findings.append(Finding("legacy_dims", BLOCKING, None, str(e), "edit config.yaml (embed_legacy_space)",
                                    ("init", "status", "plan", "cutover")))
        reports: dict[str, SourceReport] = {}
        counters = _counters(sps, findings)
        for src in srcs:
            facts = catalog.table_facts(conn, *src.schema_table, src.vector_column)
            if facts is None:
                findings.append(Finding("missing_table", BLOCKING, src.name, f"{src.table} does not exist or is not "
                                        f"visible to role {user}", "check source in config.yaml", ("backfill",)))
                continue
            findings += _structure(src, facts, user)
            try:
                reports[src.name] = _source(conn, cfg, src, sps, counters, initialized, findings)
            except psycopg.errors.InsufficientPrivilege:
                conn.rollback()
        privs = _privileges(conn, cfg, srcs)
        findings += [Finding("privilege", BLOCKING if p.required else INFO, None, f"role {user} lacks {p.privilege}",
                             p.fix, p.steps if p.required else ()) for p in privs if not p.held]
        disk = _disk(conn, url, sps, cfg, reports)
        conn.rollback()
    findings += _disk_findings(disk)
    return Diagnosis(db, user, su, initialized, reports, tuple(privs), disk, tuple(findings))


def _structure(src: Source, facts: catalog.TableFacts, user: str) -> list[Finding]:
    swap = catalog.unswappable(facts, src.vector_column) if src.vector_column else []
    problems = [catalog.hidden_rows(facts, user), *swap]
    return [Finding(p.check, BLOCKING, src.name, p.message, p.fix, p.steps) for p in problems if p]


def _counters(spaces: list[Space], findings: list[Finding]) -> dict[str, TokenCounter]:
    from embed.embedders.tokens import byte_bound, token_counter

    out: dict[str, TokenCounter] = {}
    for sp in spaces:
        try:
            out[sp.name] = token_counter(sp)
        except EmbedError as e:
            out[sp.name] = byte_bound(sp)
            findings.append(Finding("tokenizer", INFO, None, f"space {sp.name}: its tokenizer is not available "
                                    f"({e}); counted with the byte bound", None))
    return out


def _source(conn: psycopg.Connection, cfg: Config, src: Source, spaces: list[Space], counters: dict[str, TokenCounter],
            initialized: bool, findings: list[Finding]) -> SourceReport:
    t = Target(src, spaces[0])
    vec = sql.Identifier(location.live_column(src)) if src.vector_column else None
    rows, live, null_text, blank, distinct, no_vec = conn.execute(sql.SQL(
        """SELECT count(*), count(*) FILTER (WHERE s.live), count(*) FILTER (WHERE s.live AND s.text IS NULL),
                  count(*) FILTER (WHERE s.live AND s.text ~ '^\\s*$'),
                  count(DISTINCT s.sha) FILTER (WHERE s.live AND s.text !~ '^\\s*$'),
                  count(*) FILTER (WHERE s.live AND s.novec AND s.text !~ '^\\s*$')
           FROM (SELECT ({live}) AS live, {text}::text AS text, sha256(convert_to({text}::text, 'UTF8')) AS sha,
                        {novec} AS novec FROM {src}) AS s""").format(
        live=t.live, text=t.text, src=t.src, novec=sql.SQL("{} IS NULL").format(vec) if vec else sql.SQL("false")),
    ).fetchone()
    texts = live - null_text - blank
    dup = round(1 - distinct / texts, 4) if texts else 0.0
    table_bytes = conn.execute("SELECT pg_total_relation_size(to_regclass(%s))", (src.table,)).fetchone()[0]
    dims = location.columns(conn, src).get(src.vector_column or "")
    if null_text or blank:
        findings.append(Finding("blank_text", INFO, src.name, f"{null_text} NULL and {blank} blank live texts: "
                                "skipped and recorded (embed_store.skipped), never embedded", None))
    if dup >= 0.01:
        findings.append(Finding("duplicates", INFO, src.name, f"{dup:.1%} of live texts repeat another one: "
                                "identical content is embedded once", None))
    if vec is not None and no_vec:
        holds = cfg.label(location.live_fp(conn, cfg, src))
        findings.append(Finding("null_vectors", WARNING, src.name, f"{no_vec} of {texts} live texts have no vector in "
                                f"{src.table}.{src.vector_column}: searches in {holds} cannot find them",
                                f"let Honcho's reconciler embed them, or `embed fill-column --space {holds}`"))
    windows = tuple(_window(conn, t, sp, counters[sp.name]) for sp in spaces)
    for w in windows:
        if w.over:
            findings.append(Finding("over_window", WARNING, src.name,
                                    f"{'' if w.exact else 'up to '}{w.over} of {texts} live texts exceed {w.space}'s "
                                    f"{w.max_tokens}-token window (longest {w.longest}; {w.method}): only their "
                                    f"first {w.max_tokens} tokens are embedded",
                                    "accept the cut (recorded per row as `truncated`) or declare a space with a "
                                    "longer max_tokens"))
    return SourceReport(src.table, rows, live, rows - live, null_text, blank, dup, no_vec if vec else None,
                        dims.dims if dims else None, table_bytes, windows,
                        _indexes(conn, cfg, src, spaces, initialized, findings))


def _window(conn: psycopg.Connection, t: Target, space: Space, counter: TokenCounter) -> Window:
    """Count tokens only of texts long enough to be over: a token covers at least one UTF-8 byte,
    so prefix + text of at most max_tokens - 8 bytes (8: the specials' reserve) cannot be."""
    from embed.embedders.http import TOKEN_RESERVE

    floor = space.max_tokens - TOKEN_RESERVE - len(space.passage_prefix.encode())
    over = checked = longest = 0
    with conn.cursor(name=f"doctor_{t.source.name}_{space.ident}") as cur:
        cur.itersize = 512
        cur.execute(sql.SQL("SELECT s.text FROM ({}) AS s WHERE octet_length(s.text) > %s").format(t.live_rows()),
                    (floor,))
        while batch := cur.fetchmany(512):
            n = counter.count([r[0] for r in batch], "passage")
            over += int((n > space.max_tokens).sum())
            checked += len(batch)
            longest = max(longest, int(n.max()))
    return Window(space.name, space.max_tokens, over, checked, longest, counter.method, counter.exact)


def _indexes(conn: psycopg.Connection, cfg: Config, src: Source, spaces: list[Space], initialized: bool,
             findings: list[Finding]) -> tuple[Index, ...]:
    from embed.store.indexes import column_indexes

    out: list[Index] = []
    size = "SELECT coalesce(pg_relation_size(to_regclass(%s)), 0)"
    if src.vector_column:
        schema, table = src.schema_table
        live = location.live_column(src)
        ix = inplace_sql.hnsw_on(inplace_sql.indexes(conn, src), live, inplace_sql.index_name(table, live))
        name = f"{schema}.{ix.name}" if ix else None
        out.append(Index(f"{src.table}.{live}", ix.name if ix else None, bool(ix and ix.valid),
                         conn.execute(size, (name,)).fetchone()[0] if name else 0))
        if ix is None:
            findings.append(Finding("hnsw", WARNING, src.name, f"{src.table}.{live} has no HNSW index: every "
                                    "search scans the table", None))
        elif not ix.valid:
            findings.append(Finding("hnsw", WARNING, src.name, f"index {name} is invalid (an interrupted build)",
                                    f"REINDEX INDEX CONCURRENTLY {name};"))
    for sp in spaces if initialized else ():
        t = Target(src, sp)
        if sp.fingerprint == cfg.legacy_space.fingerprint or not t.has_store_table(conn):
            continue
        found = column_indexes(conn, t, "embedding", "hnsw")
        rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(t.store)).fetchone()[0]
        for name, valid in found or [(None, False)]:
            out.append(Index(f"{store.SCHEMA}.{t.table}.embedding", name, valid,
                             conn.execute(size, (f"{store.SCHEMA}.{name}",)).fetchone()[0] if name else 0))
            if rows and (name is None or not valid):
                findings.append(Finding("hnsw", WARNING, src.name, f"store table {t.table} ({rows} rows) has no valid "
                                        "HNSW index", f"embed backfill --space {sp.name} (builds it)"))
    return tuple(out)


def _privileges(conn: psycopg.Connection, cfg: Config, srcs: list[Source]) -> list[privileges.Privilege]:
    db = privileges.create_needed(conn)
    out = [db or privileges.Privilege("CREATE on the database", (), True, "not needed: the schemas exist",
                                      privileges.role(conn)[0])]
    out += [p for p in [privileges.store_owner(conn)] if p]
    for src in srcs:
        out += [p for p in [privileges.table_select(conn, src.table, ("backfill", "sync", "shadow", "backup"))] if p]
        if src.vector_column:
            out += [p for p in [privileges.table_owner(conn, src.table, privileges.INPLACE_STEPS)] if p]
    out += [privileges.dump_readable(conn), privileges.session_stats(conn)]
    return out


def _disk(conn: psycopg.Connection, url: str, spaces: list[Space], cfg: Config,
          reports: dict[str, SourceReport]) -> Disk:
    """Bytes the next steps add on the server for the widest candidate space: its store table and
    HNSW index (~ twice the vectors), and in place a staged copy, its index and a new version of
    every source row (staging updates each one); free bytes where the data directory is visible."""
    candidates = [sp for sp in spaces if sp.fingerprint != cfg.legacy_space.fingerprint] or spaces
    widest = max(candidates, key=lambda sp: sp.dims)
    vec = widest.dims * 4 + 8
    need = sum(2 * r.live * (vec + ROW_OVERHEAD) + (2 * r.live * vec + r.table_bytes if r.column_dims else 0)
               for r in reports.values())
    free = None
    host = urlsplit(url).hostname or "localhost"
    if host in ("localhost", "127.0.0.1", "::1") or host.startswith("/"):
        visible = conn.execute("SELECT rolsuper OR pg_has_role('pg_read_all_settings', 'USAGE') FROM pg_roles"
                               " WHERE rolname = current_user").fetchone()[0]
        path = conn.execute("SELECT current_setting('data_directory')").fetchone()[0] if visible else None
        if path and Path(path).exists():
            free = shutil.disk_usage(path).free
    size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return Disk(free, int(need), f"backfill and in-place staging of {widest.name}",
                shutil.disk_usage(Path.cwd()).free, int(size))


def _disk_findings(d: Disk) -> list[Finding]:
    from embed.safety.backup import human_bytes as hb

    out = []
    if d.server_free_bytes is None:
        out.append(Finding("disk", INFO, None, f"the server's free disk is not visible from here; {d.needs_for} "
                           f"adds about {hb(d.server_needs_bytes)}", "check the server's storage"))
    elif d.server_free_bytes < 1.2 * d.server_needs_bytes:
        out.append(Finding("disk", BLOCKING, None, f"the server has {hb(d.server_free_bytes)} free; {d.needs_for} "
                           f"adds about {hb(d.server_needs_bytes)}", "grow the volume first",
                           ("backfill", *catalog.SWAP_STEPS)))
    if d.local_free_bytes < d.backup_needs_bytes:
        out.append(Finding("disk", WARNING, None, f"{hb(d.local_free_bytes)} free here, the database is "
                           f"{hb(d.backup_needs_bytes)}: `embed backup` may not fit", "embed backup --out "
                           "<a larger disk>", ("backup",)))
    return out
