"""Reads through the views vs the same reads on the tables, per size (not a test).

    .venv/bin/python bench/views.py [--sizes 2000,26000] [--dims 1024] [--large-share 0.4]
                                    [--repeat 30] [--db ADMIN_URL] [--json]

For each size (documents), in a fresh database of its own: Honcho-shaped documents
(embed.honcho.synthetic, 384-d legacy vectors) with one large tenant holding --large-share of
them (documents moved into the largest workspace's first collection: the planner then reads
that tenant through the HNSW index) and the rest as generated (small tenants); a complete store
of a declared space with --dims dimensions (seeded vectors round fixed centres, written by the
store's own writer, HNSW built after the load as a backfill does, then ANALYZE); the SQLMesh
views planned and `embed.documents_active` switched to that space by a gated view cutover
(gate inputs planted). Then, warm, the three reads of each case interleaved query by query:
  unfiltered    top-10 through embed.documents__<space> and embed.documents_active  vs  the
                store table alone (which also returns the vectors of deleted documents);
  unfiltered_live
                the same  vs  the join written by hand (store + live source rows, no hash
                check): the same rows the views return, as in the tenant cases;
  tenant_large, tenant_small
                top-10 with Honcho's tenant filter (workspace, observer, observed) through both
                views  vs  the join written by hand (store + live source rows, no hash check),
                for the large tenant and the median-sized one.
Every read is sent unprepared (as Honcho's SQLAlchemy sends them: each one planned), so the
figures are planning + execution. Per read: median wall ms, and from EXPLAIN (ANALYZE, TIMING
OFF) the median planning and execution ms, the plan's access path (HNSW index or not) and
whether it returned the direct read's ids. Where the direct read does not use the HNSW index
and the view does (the store table alone, its 1024-d vectors TOASTed: the planner prices a scan
of the table without the vectors it detoasts), the views are compared with the direct read held
on its index (enable_seqscan off), interleaved as above, and the planner's own direct read is
timed apart over 5 queries (its scan would evict the pages the others read).
Session settings are pgvector's defaults (printed: hnsw.ef_search, hnsw.iterative_scan).
The ratios compare plan + execution as the server measured them (the wall time, which adds
the client and the transfer of a --dims query vector, in brackets). Target (DESIGN.md section
10): through the views within 1.2x of the direct query, the index used where the direct query
uses it. With --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.backfill import database, run_bench, say  # noqa: E402
from bench.scale import Clustered  # noqa: E402
from embed import mesh, store  # noqa: E402
from embed.config import Config  # noqa: E402
from embed.cutover.switch import cutover  # noqa: E402
from embed.db.connection import connect, ensure_pgvector  # noqa: E402
from embed.honcho.synthetic.corpus import Corpus, generate  # noqa: E402
from embed.honcho.synthetic.seed import seed  # noqa: E402
from embed.spaces import Space  # noqa: E402
from embed.store.indexes import ensure_hnsw  # noqa: E402
from embed.store.target import Target, content_hash  # noqa: E402
from embed.store.writer import Rows, Skip, StoreWriter  # noqa: E402
from tests.support.gate import plant_gates  # noqa: E402

LEGACY_DIMS = 384
BATCH = 4096
TOP = "SELECT {id} FROM {rel} {where} ORDER BY {vec} OPERATOR(public.<=>) %(q)s LIMIT 10"
TENANT = "WHERE {p}workspace_name = %(ws)s AND {p}observer = %(observer)s AND {p}observed = %(observed)s"
TIMES = re.compile(r"Planning Time: ([\d.]+) ms.*Execution Time: ([\d.]+) ms", re.S)


@dataclass
class Read:
    """One read's figures (medians over the queries)."""

    wall_ms: float
    plan_ms: float
    exec_ms: float
    hnsw: bool
    same_ids: bool


@dataclass
class Case:
    """One case: the direct read and the same read through each view."""

    rows: int  # rows the read filters to (the whole store when unfiltered)
    direct: Read
    view: Read
    active: Read
    direct_index: Read | None = None  # the direct read held on its index (enable_seqscan off)
    ratio: dict[str, float] = field(default_factory=dict)


def space_of(cfg: Config, dims: int) -> Space:
    """The first declared space with `dims` dimensions that is not the legacy one."""
    for sp in cfg.spaces.values():
        if sp.dims == dims and sp.name != cfg.legacy_space.name:
            return sp
    raise SystemExit(f"config.yaml declares no {dims}-d space besides the legacy one")


def one_large_tenant(corpus: Corpus, share: float, seed_: int = 11) -> None:
    """Move `share` of the documents into the largest workspace's first collection (with a
    session of that workspace, so every foreign key still holds)."""
    sizes: dict[str, int] = {}
    for d in corpus.documents:
        sizes[d["workspace_name"]] = sizes.get(d["workspace_name"], 0) + 1
    ws = max(sizes, key=lambda w: sizes[w])
    home = next(d for d in corpus.documents if d["workspace_name"] == ws and d["session_name"])
    rng = random.Random(seed_)
    for d in corpus.documents:
        if rng.random() < share:
            d.update(workspace_name=ws, observer=home["observer"], observed=home["observed"],
                     session_name=home["session_name"])


def fill_store(cfg: Config, url: str, t: Target, gen: Clustered) -> int:
    """A vector for every live non-blank row, a skip record for each blank one: what a complete
    backfill leaves (the cutover's coverage gate counts both)."""
    with connect(url) as conn:
        live = conn.execute(t.live_rows()).fetchall()
        writer = StoreWriter(conn, t)
        text = [(i, x) for i, x in live if (x or "").strip()]
        blank = [Skip(i, content_hash(x or ""), "empty") for i, x in live if not (x or "").strip()]
        for lo in range(0, max(len(text), 1), BATCH):
            part = text[lo:lo + BATCH]
            rows = Rows([r[0] for r in part], [content_hash(r[1]) for r in part], gen(len(part)),
                        np.zeros(len(part), bool))
            writer.write(rows, np.zeros(len(part), bool), blank if lo == 0 else [], run_id=0)
    with connect(url, autocommit=True) as conn:
        ensure_hnsw(conn, t, cfg.index_params, concurrently=False)
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(t.store))
    return len(text)


def prepare(cfg: Config, url: str, docs: int, space: Space, share: float) -> None:
    """Seed, fill the store, plan the views, switch documents_active to `space` (view mode)."""
    corpus = generate(seed=7, documents=docs, messages=min(1000, docs // 2), queries=24)
    one_large_tenant(corpus, share)
    legacy = Clustered(LEGACY_DIMS, 3)
    ensure_pgvector(url)
    with connect(url) as conn:
        seed(conn, corpus, dims=LEGACY_DIMS, vectors=lambda texts: legacy(len(texts)))
        store.init(conn, cfg)
    fill_store(cfg, url, Target(cfg.source("documents"), space), Clustered(space.dims, 1))
    with connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE public.documents")
    mesh.plan(cfg, url)
    plant_gates(url, cfg, space, sources=["documents"])
    cutover(cfg, url, space.name, sources=["documents"])


def plan_of(conn: psycopg.Connection, query: str, params: dict[str, object]) -> tuple[str, float, float]:
    """(plan text, planning ms, execution ms) of one run of `query` (ANALYZE, no per-node timing)."""
    text = "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, TIMING OFF, SUMMARY) " + query, params))
    m = TIMES.search(text)
    return text, float(m.group(1)), float(m.group(2))


def uses_index(url: str, query: str, params: dict[str, object], index: str) -> bool:
    with connect(url) as conn:
        return index in "\n".join(r[0] for r in conn.execute("EXPLAIN " + query, params))


def measure(url: str, reads: dict[str, str], params: list[dict[str, object]], index: str,
            held: frozenset[str] = frozenset()) -> dict[str, Read]:
    """Each read over every parameter set, interleaved (the order rotates per query), unprepared;
    the reads named in `held` on a session with enable_seqscan off. Every read runs every query
    once first: the vectors and index pages a query visits are then in memory for each read."""
    names = list(reads)
    wall: dict[str, list[float]] = {n: [] for n in names}
    plan: dict[str, list[float]] = {n: [] for n in names}
    exe: dict[str, list[float]] = {n: [] for n in names}
    ids: dict[str, list[list[object]]] = {n: [] for n in names}
    with connect(url, autocommit=True) as free, connect(url, autocommit=True) as pinned:
        pinned.execute("SET enable_seqscan = off")
        conn = {n: pinned if n in held else free for n in names}
        for c in (free, pinned):
            c.prepare_threshold = None  # every read planned, as an unprepared client sends it
        for p in params:
            for n in names:
                conn[n].execute(reads[n], p).fetchall()
        for i, p in enumerate(params):
            for n in names[i % len(names):] + names[:i % len(names)]:
                t0 = time.perf_counter()
                got = conn[n].execute(reads[n], p).fetchall()
                wall[n].append((time.perf_counter() - t0) * 1000)
                ids[n].append([r[0] for r in got])
                _, pl, ex = plan_of(conn[n], reads[n], p)
                plan[n].append(pl)
                exe[n].append(ex)
        hnsw = {n: index in plan_of(conn[n], reads[n], params[0])[0] for n in names}
    ref = ids[names[0]]
    return {n: Read(round(statistics.median(wall[n]), 3), round(statistics.median(plan[n]), 3),
                    round(statistics.median(exe[n]), 3), hnsw[n], ids[n] == ref) for n in names}


def one_size(cfg: Config, url: str, docs: int, space: Space, args: argparse.Namespace) -> dict[str, object]:
    t0 = time.monotonic()
    prepare(cfg, url, docs, space, args.large_share)
    target = Target(cfg.source("documents"), space)
    st = f"{store.SCHEMA}.{target.table}"
    with connect(url) as conn:
        tenants = conn.execute(
            "SELECT workspace_name, observer, observed, count(*) FROM documents WHERE deleted_at IS NULL "
            "GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3").fetchall()
        stored = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target.store)).fetchone()[0]
        index = conn.execute("SELECT indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                             " JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'hnsw' AND i.indrelid = %s::regclass",
                             (st,)).fetchone()[0].split(".")[-1]
    say(f"[{docs}] seeded, store of {space.name} ({space.dims}-d, {stored} rows) complete, views planned, "
        f"documents_active switched to it in {time.monotonic() - t0:.0f} s; {len(tenants)} tenants "
        f"(large {tenants[0][3]} rows, median {tenants[len(tenants) // 2][3]}, smallest {tenants[-1][3]})")
    gen = Clustered(space.dims, 1)  # the store's centres: queries fall among the stored vectors
    queries = gen(args.repeat)
    view, active = f"embed.documents__{space.name}", "embed.documents_active"
    join = f"{st} v JOIN documents s ON s.id = v.source_id AND s.deleted_at IS NULL"
    out: dict[str, object] = {"documents": docs, "store_rows": stored, "tenants": len(tenants)}
    cases = {"unfiltered": (None, stored, False), "unfiltered_live": (None, stored, True),
             "tenant_large": (tenants[0], tenants[0][3], True),
             "tenant_small": (tenants[len(tenants) // 2], tenants[len(tenants) // 2][3], True)}
    for label, (tenant, rows, joined) in cases.items():
        where, by_hand = (TENANT.format(p=""), TENANT.format(p="s.")) if tenant else ("", "")
        reads = {
            "direct": TOP.format(id="v.source_id", rel=join if joined else f"{st} v", where=by_hand, vec="v.embedding"),
            "view": TOP.format(id="source_id", rel=view, where=where, vec="embedding"),
            "active": TOP.format(id="source_id", rel=active, where=where, vec="embedding"),
        }
        ws = dict(zip(("ws", "observer", "observed"), tenant[:3], strict=True)) if tenant else {}
        params = [{"q": q, **ws} for q in queries]
        if uses_index(url, reads["view"], params[0], index) and not uses_index(url, reads["direct"], params[0], index):
            # the direct read scans the whole store (timed apart, a few queries: its scan would evict
            # the pages the others read); the views are compared with it held on its index
            direct = measure(url, {"direct": reads["direct"]}, params[:5], index)["direct"]
            got = measure(url, {"direct_index": reads["direct"], "view": reads["view"], "active": reads["active"]},
                          params, index, held=frozenset({"direct_index"}))
            case = Case(rows, direct, got["view"], got["active"], got["direct_index"])
        else:
            got = measure(url, reads, params, index)
            case = Case(rows, got["direct"], got["view"], got["active"])
        base = case.direct_index or case.direct  # the direct read on its index where the planner left it
        for name in ("view", "active"):
            r: Read = getattr(case, name)
            case.ratio[f"{name} plan+exec"] = round((r.plan_ms + r.exec_ms) / (base.plan_ms + base.exec_ms), 2)
            case.ratio[f"{name} wall"] = round(r.wall_ms / base.wall_ms, 2)
        out[label] = asdict(case)
        say(f"[{docs}] {label} ({rows} rows)")
        for name in ("direct", "direct_index", "view", "active"):
            r = getattr(case, name)
            if r is not None:
                say(f"    {name:12s} {r.wall_ms:8.3f} ms  (plan {r.plan_ms:6.3f} + exec {r.exec_ms:7.3f})  "
                    f"hnsw {r.hnsw!s:5s}  same ids as direct {r.same_ids}")
        say("    " + "  ".join(f"{k} {v:.2f}" for k, v in case.ratio.items()))
    return out


def run(cfg: Config, url: str, args: argparse.Namespace) -> dict[str, object]:
    space = space_of(cfg, args.dims)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    out: dict[str, object] = {"space": space.name, "dims": space.dims, "large_share": args.large_share,
                              "repeat": args.repeat, "sizes": {}}
    with connect(url, autocommit=True) as conn:  # pgvector's session defaults, as every read below runs
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("LOAD 'vector'")
        out["settings"] = {g: conn.execute("SELECT current_setting(%s, true)", (g,)).fetchone()[0]
                           for g in ("hnsw.ef_search", "hnsw.iterative_scan", "server_version")}
    say(f"space {space.name} ({space.dims}-d); session settings {out['settings']}")
    for docs in sizes:
        sub, drop = database(argparse.Namespace(db=url))
        try:
            out["sizes"][str(docs)] = one_size(cfg, sub, docs, space, args)
        finally:
            drop()
    say("\nthrough the view / direct, per size (documents), unprepared reads: server plan+exec (wall):")
    say(f"{'case':17s}{'read':8s}" + "".join(f"{d:>16s}" for d in out["sizes"]))
    for label in ("unfiltered", "unfiltered_live", "tenant_large", "tenant_small"):
        for name in ("view", "active"):
            cells = [f"{c['ratio'][f'{name} plan+exec']:>8.2f} ({c['ratio'][f'{name} wall']:.2f})"
                     + ("*" if c["direct_index"] else " ") for c in (res[label] for res in out["sizes"].values())]
            say(f"{label:17s}{name:8s}" + "".join(f"{x:>16s}" for x in cells))
    say("* the direct read's planner chose no index there (the store table alone, its vectors TOASTed): "
        "against the same read held on its HNSW index")
    return out


def options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--sizes", default="2000,26000", help="documents per size, comma-separated")
    ap.add_argument("--dims", type=int, default=1024, help="dimensions of the store's space (a declared one)")
    ap.add_argument("--large-share", type=float, default=0.4, help="share of the documents in the large tenant")
    ap.add_argument("--repeat", type=int, default=30, help="queries per case (medians kept)")


if __name__ == "__main__":
    run_bench(run, __doc__, "honcho", options)
