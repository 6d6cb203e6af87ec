"""Staging Honcho's tables for an in-place cutover: the ways to fill the tagged column, side by side
(not a test).

    .venv/bin/python bench/staging.py [--rows 10000,40000] [--variants a,b,c,d,f] [--gateway local|honcho]
                                      [--build-memory 2GB] [--db ADMIN_URL] [--json]

Per size (rows over both tables, Honcho's 26k documents : 13.5k message chunks), one seeded database
(Honcho's schema and indexes, its HNSW on the legacy column: 384-d minilm_l6 vectors with the
local gateway, stored in the row; 1536-d openai_3_small ones with --gateway honcho, Honcho's
production shape, stored out of line in TOAST like the staged 1024-d ones; a complete 1024-d
bge_m3 store as bench/scale.py writes them) is the template of one database per variant, so every variant
starts from the same bytes; a writer inserts like Honcho's API throughout each one:
  a  the old stage: the tagged column filled by UPDATEs in id-range batches, then its HNSW
     built CONCURRENTLY, then stage's VACUUM (ANALYZE);
  b  the same with the tagged column's HNSW index built before the fill (the order matters);
  c  copy-table: a new table LIKE the old (no indexes yet) plus the tagged column, filled by one
     INSERT ... SELECT joined to the store, every index built after, the rows written meanwhile
     caught up, then both names swapped under an exclusive lock (its lock measured); what it
     would break for Honcho is listed from the catalog;
  d  stage as it is now: one row a heap page per transaction first, so that every update after a
     page's first finds the room its predecessor freed and is HOT (no entry in any index,
     Honcho's HNSW included), then the id-range check, the index, the VACUUM;
  f  d with the table's fillfactor lowered while it stages (a page prunes before it is full
     enough to refuse a row as wide as Honcho's), then reset.
Per variant: seconds in all, of which fill / index build / VACUUM; rows/s; updates and HOT
updates (pg_stat_user_tables); heap, TOAST and each index's bytes before, after the fill and
after the plain VACUUM; dead tuples; rows whose staged vector is not the store's for their content
now (must be 0); the writer's inserts and longest insert. Each variant is reported as soon as it
ends (a run cut short keeps what it printed); ratios are against variant a of the same size, once
it has run. --build-memory sets embed_index.maintenance_work_mem for the run's HNSW builds, as an
operator would in config.yaml (the seed's own build of Honcho's index keeps its 512MB). With --json
the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.backfill import database, say  # noqa: E402
from bench.scale import DOC_SHARE, NEW, Clustered, skew, write_store  # noqa: E402
from embed import store  # noqa: E402
from embed.config import Config  # noqa: E402
from embed.cutover import inplace, inplace_run, inplace_sql  # noqa: E402
from embed.db.connection import connect, ensure_pgvector  # noqa: E402
from embed.honcho.synthetic.corpus import generate  # noqa: E402
from embed.honcho.synthetic.seed import seed  # noqa: E402
from embed.store.indexes import build_memory  # noqa: E402
from embed.store.target import Target  # noqa: E402
from tests.support.inplace import Writer  # noqa: E402

TABLES = ("documents", "message_embeddings")
VARIANTS = {"a": "UPDATE by id range (before)", "b": "index before the fill", "c": "copy table + swap",
            "d": "UPDATE one row a page (HOT)", "f": "d + fillfactor while staging"}


@dataclass
class Sizes:
    heap: int
    toast: int
    indexes: dict[str, int]
    dead: int

    @property
    def mb(self) -> float:
        return round((self.heap + self.toast + sum(self.indexes.values())) / 2**20, 1)


@dataclass
class Variant:
    key: str
    name: str
    rows: int = 0
    seconds: float = 0.0
    fill_s: float = 0.0
    index_s: float = 0.0
    vacuum_s: float = 0.0
    lock_ms: float | None = None
    updates: int = 0
    hot_updates: int = 0
    wrong_vectors: int = 0
    rows_staged: int = 0
    writer_inserts: int = 0
    writer_longest_ms: float = 0.0
    before: dict[str, Sizes] = field(default_factory=dict)
    filled: dict[str, Sizes] = field(default_factory=dict)
    vacuumed: dict[str, Sizes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return round(self.rows / self.fill_s, 1) if self.fill_s else 0.0


def sizes(conn: psycopg.Connection, table: str) -> Sizes:
    conn.execute("SELECT pg_stat_force_next_flush()")
    heap, toast, dead = conn.execute(
        "SELECT pg_relation_size(c.oid), coalesce(pg_relation_size(nullif(c.reltoastrelid, 0)), 0),"
        " coalesce(s.n_dead_tup, 0) FROM pg_class c LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid"
        " WHERE c.oid = %s::regclass", (table,)).fetchone()
    idx = dict(conn.execute("SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index"
                            " WHERE indrelid = %s::regclass ORDER BY 1", (table,)).fetchall())
    return Sizes(heap, toast, idx, dead)


def all_sizes(url: str) -> dict[str, Sizes]:
    with connect(url, autocommit=True) as conn:
        return {t: sizes(conn, t) for t in TABLES}


def updates(url: str) -> tuple[int, int]:
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        return conn.execute("SELECT sum(n_tup_upd), sum(n_tup_hot_upd) FROM pg_stat_user_tables"
                            " WHERE relname = ANY(%s)", (list(TABLES),)).fetchone()


def wrong_vectors(cfg: Config, url: str, column: dict[str, str]) -> int:
    """Live rows whose column holds a vector that is not the store's vector for their content now."""
    n = 0
    with connect(url) as conn:
        for src in TABLES:
            t = Target(cfg.source(src), cfg.space(NEW))
            n += conn.execute(sql.SQL(
                "SELECT count(*) FROM {src} AS x LEFT JOIN {store} AS v ON v.source_id = x.{id}"
                " AND v.content_sha256 = {sha} WHERE x.{col} IS NOT NULL AND (v.embedding IS NULL"
                " OR v.embedding <> x.{col})").format(src=t.src, store=t.store, id=t.id, col=sql.Identifier(column[src]),
                                                     sha=t.sha(sql.SQL("x.{}::text").format(t.text)))).fetchone()[0]
    return n


# ------------------------------------------------------------------------------------ databases
def seeded(cfg: Config, url: str, rows: int) -> None:
    """Honcho's tables at `rows` with legacy vectors and Honcho's HNSW, and a complete bge_m3 store."""
    docs = round(rows * DOC_SHARE)
    corpus = generate(seed=7, documents=docs, messages=rows - docs, queries=24)
    skew(corpus)
    legacy = Clustered(cfg.legacy_space.dims, 3)
    ensure_pgvector(url)
    with connect(url) as conn:
        seed(conn, corpus, dims=cfg.legacy_space.dims, vectors=lambda texts: legacy(len(texts)))
        store.init(conn, cfg)
    gen = Clustered(cfg.space(NEW).dims, 1)
    for src in TABLES:
        write_store(url, Target(cfg.source(src), cfg.space(NEW)), gen, keep=False)
    with connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")  # as a restored database that autovacuum has seen


@contextmanager
def copy_of(admin: str, template: str) -> Iterator[str]:
    """A database cloned from `template` (CREATE DATABASE ... TEMPLATE: the same bytes), dropped after."""
    name = f"{template}_v{time.monotonic_ns() % 10**8}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# ------------------------------------------------------------------------------------- variants
def stage_variant(cfg: Config, url: str, v: Variant, *, by_page: bool, index_first: bool = False,
                  fillfactor: bool = False) -> None:
    """`inplace.stage` as it is (by_page) or as it was (no page-ordered passes), optionally with the
    tagged HNSW index built first or the tables' fillfactor lowered while it runs."""
    if index_first:
        with inplace_run.session(url) as conn:
            for src in TABLES:
                t = Target(cfg.source(src), cfg.space(NEW))
                col = inplace._ensure_column(conn, t)
                v.index_s += inplace._ensure_index(conn, t, col, cfg.index_params).seconds
    if fillfactor:
        with connect(url, autocommit=True) as conn:
            for src in TABLES:  # a page prunes once its free space is under its fillfactor's reserve
                heap, live = conn.execute("SELECT pg_relation_size(%s::regclass), greatest(reltuples, 1) FROM pg_class"
                                          " WHERE oid = %s::regclass", (src, src)).fetchone()
                ff = max(10, min(100, 100 - math.ceil(150 * heap / live / 8192)))
                conn.execute(sql.SQL("ALTER TABLE {} SET (fillfactor = {})").format(sql.Identifier(src), sql.Literal(ff)))
                v.notes.append(f"{src} fillfactor {ff} while staging")
    saved = inplace_run.by_page
    if not by_page:  # the stage before this change: the id-range pass alone
        inplace_run.by_page = lambda *a, **k: 0  # type: ignore[assignment]
    try:
        t0 = time.monotonic()
        staged = inplace.stage(cfg, url, NEW)
        v.seconds += time.monotonic() - t0
    finally:
        inplace_run.by_page = saved
    if fillfactor:
        with connect(url, autocommit=True) as conn:
            for src in TABLES:
                conn.execute(sql.SQL("ALTER TABLE {} RESET (fillfactor)").format(sql.Identifier(src)))
    for s in staged.sources.values():
        v.vacuum_s += s.vacuum.seconds
        if s.index.built:
            v.index_s += s.index.seconds
        if s.vacuum.skipped:
            v.notes.append(f"{s.table}: VACUUM {s.vacuum.skipped}")
    v.fill_s = v.seconds - v.index_s - v.vacuum_s
    v.rows_staged = staged.rows_staged
    v.filled = {src: Sizes(s.vacuum.heap_before, s.vacuum.toast_before, {"(all)": s.vacuum.indexes_before},
                           s.vacuum.dead_before) for src, s in zip(TABLES, staged.sources.values(), strict=True)}


def copy_variant(cfg: Config, url: str, v: Variant) -> None:
    """New table, filled by one INSERT ... SELECT, indexed after, caught up, swapped in by renames."""
    breaks: Counter = Counter()
    t_all = time.monotonic()
    with connect(url, autocommit=True) as conn:
        for src in TABLES:
            t = Target(cfg.source(src), cfg.space(NEW))
            col = inplace_sql.tagged_column(t.source, t.space)
            new, old = sql.Identifier(f"{src}__new"), sql.Identifier(src)
            breaks.update(_what_breaks(conn, src))
            defs = [d for (d,) in conn.execute("SELECT pg_get_indexdef(indexrelid) FROM pg_index i"
                                               " WHERE indrelid = %s::regclass AND NOT indisprimary", (src,))]
            t0 = time.monotonic()
            conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL EXCLUDING INDEXES)").format(new, old))
            conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} vector({})").format(new, sql.Identifier(col),
                                                                                    sql.Literal(t.space.dims)))
            snap = conn.execute("SELECT pg_current_snapshot()::text").fetchone()[0]
            cols = [c for (c,) in conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass"
                                               " AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (src,))]
            names = sql.SQL(", ").join(map(sql.Identifier, cols))
            fill = sql.SQL("INSERT INTO {new} ({names}, {col}) SELECT {xnames}, v.embedding FROM {old} AS x"
                           " LEFT JOIN {store} AS v ON v.source_id = x.{id} AND v.content_sha256 = {sha}").format(
                new=new, names=names, col=sql.Identifier(col), old=old, store=t.store, id=t.id,
                xnames=sql.SQL(", ").join(sql.SQL("x.{}").format(sql.Identifier(c)) for c in cols),
                sha=t.sha(sql.SQL("x.{}::text").format(t.text)))
            conn.execute(fill)
            v.fill_s += time.monotonic() - t0
            t0 = time.monotonic()
            conn.execute(build_memory(cfg.index_params))
            conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(new, t.id))
            for d in defs:
                conn.execute(d.replace(f" ON public.{src} ", f" ON public.{src}__new ", 1).replace(
                    "CREATE INDEX ", "CREATE INDEX new_", 1).replace("CREATE UNIQUE INDEX ", "CREATE UNIQUE INDEX new_", 1))
            conn.execute(inplace_sql.create_index(t, col, f"new_{inplace_sql.index_name(src, col)}", cfg.index_params)
                         .as_string(conn).replace(" CONCURRENTLY", "").replace(f'ON "public"."{src}"', f'ON "public"."{src}__new"'))
            v.index_s += time.monotonic() - t0
            later = sql.SQL("INSERT INTO {new} ({names}, {col}) SELECT {xnames}, NULL FROM {old} AS x"
                            " WHERE NOT pg_visible_in_snapshot(x.xmin::text::xid8, {snap}::pg_snapshot)"
                            " ON CONFLICT ({id}) DO NOTHING").format(
                new=new, names=names, col=sql.Identifier(col), old=old, id=t.id, snap=sql.Literal(snap),
                xnames=sql.SQL(", ").join(sql.SQL("x.{}").format(sql.Identifier(c)) for c in cols))
            conn.execute(later)  # caught up outside the lock (writer inserts only: updates would need more)
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '5s'")
                t0 = time.monotonic()
                conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(old))
                conn.execute(later)
                conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(old, sql.Identifier(f"{src}__old")))
                conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(new, old))
                v.lock_ms = (v.lock_ms or 0.0) + (time.monotonic() - t0) * 1000
    v.seconds = time.monotonic() - t_all
    v.lock_ms = round(v.lock_ms or 0.0, 1)
    v.notes += [f"{k}: {n}" for k, n in sorted(breaks.items())]
    v.filled = all_sizes(url)
    t0 = time.monotonic()
    with connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) public.documents, public.message_embeddings")
    v.vacuum_s = time.monotonic() - t0
    v.seconds += v.vacuum_s
    with connect(url) as conn:
        v.rows_staged = sum(conn.execute(sql.SQL("SELECT count({}) FROM {}").format(
            sql.Identifier(inplace_sql.tagged_column(cfg.source(s), cfg.space(NEW))), sql.Identifier(s))).fetchone()[0]
            for s in TABLES)


def _what_breaks(conn: psycopg.Connection, table: str) -> Counter:
    """What a swap of tables leaves behind on the old one (found in the catalog, per kind)."""
    q = {
        "foreign keys from other tables (point at the old table)":
            "SELECT count(*) FROM pg_constraint WHERE confrelid = %(t)s::regclass AND contype = 'f'",
        "sequences/identities owned by the old table (dropped with it)":
            "SELECT count(*) FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'"
            " WHERE d.refobjid = %(t)s::regclass AND d.deptype IN ('a', 'i')",
        "grants (not copied by LIKE)": "SELECT coalesce(array_length(relacl, 1), 0) FROM pg_class WHERE oid = %(t)s::regclass",
        "triggers (not copied: embed's change queue, Honcho's own)":
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = %(t)s::regclass AND NOT tgisinternal",
        "views and rules reading it (follow the old table's OID)":
            "SELECT count(DISTINCT r.ev_class) FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid"
            " WHERE d.refobjid = %(t)s::regclass AND r.ev_class <> %(t)s::regclass",
        "index and constraint names (Honcho's migrations name them; the new ones differ)":
            "SELECT count(*) FROM pg_constraint WHERE conrelid = %(t)s::regclass",
        "statistics and publications (start empty / name the old table)":
            "SELECT count(*) FROM pg_publication_rel WHERE prrelid = %(t)s::regclass",
    }
    return Counter({k: conn.execute(s, {"t": f"public.{table}"}).fetchone()[0] for k, s in q.items()})


def run_variant(cfg: Config, url: str, key: str, rows: int) -> Variant:
    v = Variant(key, VARIANTS[key], rows)
    v.before = all_sizes(url)
    u0, h0 = updates(url)
    writer = Writer(url)
    writer.start()
    try:
        if key == "c":
            copy_variant(cfg, url, v)
        else:
            stage_variant(cfg, url, v, by_page=key in ("d", "f"), index_first=key == "b", fillfactor=key == "f")
    finally:
        writer.stop.set()
        writer.join(30)
    u1, h1 = updates(url)
    v.updates, v.hot_updates = int(u1 - u0), int(h1 - h0)
    v.vacuumed = all_sizes(url)
    v.writer_inserts, v.writer_longest_ms = len(writer.docs) + len(writer.msgs), round(writer.max_wait * 1000, 1)
    v.wrong_vectors = wrong_vectors(cfg, url, {s: inplace_sql.tagged_column(cfg.source(s), cfg.space(NEW))
                                              for s in TABLES})
    for k in ("seconds", "fill_s", "index_s", "vacuum_s"):
        setattr(v, k, round(getattr(v, k), 1))
    return v


def report(size: int, r: Variant, base: Variant | None) -> None:
    """One variant's lines, printed as it ends; `base` is variant a of the same size if it has run."""
    ratio = f" ({base.seconds / r.seconds:.2f}x a)" if base and r.seconds else ""
    hot = f"{r.hot_updates}/{r.updates} HOT" if r.updates else "no UPDATEs"
    lock = f", swap lock {r.lock_ms} ms" if r.lock_ms is not None else ""
    say(f"[{size}] {r.key} {r.name}: {r.seconds} s{ratio} = fill {r.fill_s} s ({r.rows_per_s} rows/s) + index "
        f"{r.index_s} s + VACUUM {r.vacuum_s} s{lock}; {hot}; staged {r.rows_staged}, wrong {r.wrong_vectors}; "
        f"writer {r.writer_inserts} inserts, longest {r.writer_longest_ms} ms")
    for t in TABLES:
        b, f, a = r.before[t], r.filled.get(t), r.vacuumed[t]
        say(f"      {t}: heap+TOAST+indexes {b.mb} MB -> {f.mb if f else '?'} MB after the fill "
            f"(dead {f.dead if f else '?'}) -> {a.mb} MB after VACUUM (dead {a.dead}); heap {b.heap >> 20} -> "
            f"{a.heap >> 20} MB, TOAST {b.toast >> 20} -> {a.toast >> 20} MB; indexes after: "
            + ", ".join(f"{n.split('.')[-1]} {s >> 20} MB" for n, s in a.indexes.items()))
    for n in r.notes:
        say(f"      note: {n}")


def base_of(runs: list[Variant]) -> Variant | None:
    """Variant a of one size (what the others' ratios are against), None until it has run."""
    return next((r for r in runs if r.key == "a"), None)


def set_build_memory(cfg: Config, memory: str) -> None:
    """embed_index.maintenance_work_mem for every HNSW build the variants make (through
    cfg.index_params, which also refuses a size PostgreSQL would not take)."""
    gw = cfg.raw["gateways"][cfg.gateway] = cfg.raw["gateways"][cfg.gateway] or {}
    variables = gw["variables"] = gw.get("variables") or {}
    variables["embed_index"] = {**(cfg.variables.get("embed_index") or {}), "maintenance_work_mem": memory}
    cfg.index_params  # noqa: B018


def growth(results: dict[int, list[Variant]]) -> dict[str, float]:
    """Seconds per variant: the factor per x10 rows from the smallest to the largest size."""
    sizes_ = sorted(results)
    if len(sizes_) < 2:
        return {}
    lo, hi = sizes_[0], sizes_[-1]
    out = {}
    for r in results[hi]:
        first = next((x for x in results[lo] if x.key == r.key), None)
        if first and first.seconds:
            out[r.key] = round((r.seconds / first.seconds) ** (1 / math.log10(hi / lo)), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="10000,40000", help="sizes, rows over both tables")
    ap.add_argument("--variants", default="a,b,c,d,f", help=f"of {','.join(VARIANTS)}")
    ap.add_argument("--gateway", default="local", choices=("local", "honcho"),
                    help="whose legacy space Honcho's column holds: local minilm_l6 (384-d), honcho openai_3_small (1536-d)")
    ap.add_argument("--db", default=None, help="admin URL of a PostgreSQL with pgvector (default: a private embedded server)")
    ap.add_argument("--build-memory", default=None,
                    help="maintenance_work_mem of the HNSW builds, e.g. 2GB (default: config.yaml's embed_index)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    keys = [k for k in args.variants.split(",") if k]
    unknown = [k for k in keys if k not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}: choose from {', '.join(VARIANTS)}")
    cfg = Config.load(ROOT, args.gateway)
    if args.build_memory:
        set_build_memory(cfg, args.build_memory)
    say(f"Honcho's column holds {cfg.legacy_space.name} ({cfg.legacy_space.dims}-d); staging {NEW}; HNSW builds "
        f"with maintenance_work_mem {cfg.index_params['maintenance_work_mem_kb'] // 1024} MB")
    url, cleanup = database(args)
    admin = url.rsplit("/", 1)[0] + "/postgres"
    results: dict[int, list[Variant]] = {}
    try:
        for n in (int(x) for x in args.rows.split(",")):
            template = f"staging_{n}"
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
            t0 = time.monotonic()
            seeded(cfg, admin.rsplit("/", 1)[0] + "/" + template, n)
            say(f"[{n}] seeded in {time.monotonic() - t0:.0f} s")
            results[n] = []
            for k in keys:
                with copy_of(admin, template) as db:
                    results[n].append(run_variant(cfg, db, k, n))
                    report(n, results[n][-1], base_of(results[n]))
            base = base_of(results[n])
            if base:
                say(f"[{n}] vs a: " + ", ".join(f"{r.key} {base.seconds / r.seconds:.2f}x" for r in results[n] if r.key != "a" and r.seconds))
    except KeyboardInterrupt:
        say("interrupted: every variant that ended is reported above")
    finally:
        cleanup()
    g = growth(results)
    if g:
        say("seconds, growth per x10 rows: " + ", ".join(f"{k} {x}x" for k, x in g.items()))
    if args.json:
        print(json.dumps({"sizes": {n: [asdict(r) | {"rows_per_s": r.rows_per_s} for r in rs]
                                    for n, rs in results.items()}, "growth": g}))


if __name__ == "__main__":
    main()
