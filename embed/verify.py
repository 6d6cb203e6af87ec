"""Proof of space: what a vector column really holds, measured against the space's own vectors.

A column that claims space S (Honcho's live `embedding` after a cutover, a tagged column, a
store table, or the HTTP endpoint Honcho will call) is checked row by row: its vector for a
row is compared with S's vector for the row's current content, which is the store's vector for
the same content hash where one exists (no model call) and else a fresh embedding by S's own
embedder. A row is an offender when the cosine falls below the space's declared tolerance
(`verify_tolerance`, an operational field: it never changes the fingerprint; 0.999 by default,
for the same code path; an fp16 or quantized server declares its own). The result carries
ids, counts and cosines only, never text.

The watch (`since_last=True`: `embed verify --watch`, and every `embed sync` pass of a space that
is live in a source column) checks only rows written since they were last checked: a row version
(its xmin) recorded by the in-place swap (embed_store.inplace_staged) or by an earlier passing
check (embed_store.verified) is not read again; offenders are never recorded, so they stay red
until repaired. For a source that declares `written_at` columns (Honcho: created_at, last_sync_at)
and while no offender is outstanding, a pass reads only rows where one of them moved since shortly
before its mark, through their indexes (`column_query`): a pass with nothing new reads no row. A violation is an event ('verify', failed), which `embed status` and `embed gate`
read (`failures`).

Repair (`repair=True`) writes the space's own vector (the store's, or a fresh one, which the
store also receives) over each offender's vector, in short batches, and records a 'verify_repair'
event.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from embed import store
from embed.config import Config, Source
from embed.db.connection import connect
from embed.db.idents import column
from embed.embedders.endpoint import IN_PROCESS
from embed.errors import EmbedError, NotInitialized
from embed.result import Result
from embed.spaces import Space
from embed.store import SCHEMA
from embed.store.location import COLUMNS, LIVE, STORE, columns, live_column, locate, recorded
from embed.store.target import Target, content_hash

TOLERANCE = 0.999  # same model, same code path: float noise only
EMBED_BATCH = 256  # texts per fresh-embedding call
REPAIR_BATCH = 200  # rows per repair transaction (short locks on the source table)
EVENT_IDS = 100  # offender ids kept in an event's details (the result has them all)
WHERE_KINDS = ("store", "live", "column", "endpoint")
# the watch re-reads rows written this long before its mark: longer than any writer's transaction
# (a row's timestamp is its transaction's start; it may commit after a pass that could not see it)
WATCH_MARGIN = "15 minutes"
VERIFIED = sql.Identifier(SCHEMA, "verified")
STAGED = sql.Identifier(SCHEMA, "inplace_staged")


def tolerance(space: Space) -> float:
    """The space's declared `verify_tolerance` (cosine floor), validated."""
    raw = space.option("verify_tolerance", TOLERANCE)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < float(raw) <= 1:
        raise EmbedError(f"space {space.name}: verify_tolerance must be a number in (0, 1], got {raw!r}")
    return float(raw)


def upper_95(k: int, n: int) -> float:
    """One-sided 95 % Clopper-Pearson upper bound on a share seen k times in n draws:
    the p at which P(X <= k | n, p) = 0.05 (0 of 400 gives 0.0075)."""
    if n <= 0:
        return 1.0
    if k >= n:
        return 1.0

    def cdf(p: float) -> float:
        lp, lq = math.log(p), math.log1p(-p)
        return sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq)
                   for i in range(k + 1))

    lo, hi = k / n, 1.0
    for _ in range(60):  # cdf falls as p grows
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > 0.05 else (lo, mid)
    return hi


@dataclass(frozen=True)
class Where:
    """Which location to check: the store table, the source's live column, a named column of the
    source table, or an HTTP endpoint (default: the one Honcho will call, `serve_endpoint`);
    None: where the space lives (embed.store.location)."""

    kind: str
    arg: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> Where | None:
        if text is None:
            return None
        m = re.fullmatch(r"\s*(store|live|column|endpoint)(?:\s*[=\s]\s*(\S+))?\s*", text)
        if not m or (m[1] == "column" and not m[2]) or (m[1] in ("store", "live") and m[2]):
            raise EmbedError(f"--where {text!r}: one of store, live, column=NAME, endpoint[=URL]")
        if m[1] == "column":
            column(m[2])
        return cls(m[1], m[2])


@dataclass(frozen=True)
class Checked(Result):
    """One location of one source, checked against the space."""

    source: str
    location: str  # schema.table.column, or the endpoint URL
    kind: str  # live, column, store or endpoint
    checked: int  # rows compared
    from_store: int  # of them, compared with the store's vector (no model call)
    embedded: int  # of them, compared with a fresh embedding by the space's embedder
    without_vector: int  # rows sampled with no vector there (NULL: not checked)
    blank: int  # rows whose text is blank (no reference vector exists)
    min_cosine: float | None
    p1_cosine: float | None
    median_cosine: float | None
    tolerance: float
    offenders: int  # rows below the tolerance
    contaminated_upper_95: float  # one-sided 95 % upper bound on the share of offenders
    offender_ids: tuple[str, ...]
    repaired: int = 0

    @property
    def passed(self) -> bool:
        return self.offenders == 0


@dataclass(frozen=True)
class Verified(Result):
    space: str
    fingerprint: str
    tolerance: float
    passed: bool
    locations: tuple[Checked, ...]
    rollback: str | None  # the command to run when a live column holds offenders

    @property
    def offenders(self) -> int:
        return sum(c.offenders for c in self.locations)


def verify(
    cfg: Config, url: str, space_name: str, *, source: str | None = None, where: str | Where | None = None,
    sample: int | None = None, since_last: bool = False, repair: bool = False, embedder: Any = None,
) -> Verified:
    """Check the vectors of `space_name` at `where` (default: where the space lives) for each
    source (or `source`) against the space's own vectors; record the outcome as an event.
    `sample`: at most this many random rows per source (default: every row). `since_last`: only
    rows written since they were last checked (the watch). `repair`: replace offenders' vectors."""
    space = cfg.space(space_name)
    tol = tolerance(space)
    loc = where if isinstance(where, Where) or where is None else Where.parse(where)
    if sample is not None and sample < 1:
        raise EmbedError("--sample must be a positive number of rows")
    if loc is not None and loc.kind in ("store", "endpoint") and (since_last or repair):
        raise EmbedError(f"--where {loc.kind}: the watch and repair apply to a column of the source table")
    sources = [cfg.source(source)] if source else list(cfg.sources.values())
    with _embedder(space, embedder) as get, connect(url) as conn, ExitStack() as hold:
        if not store.is_initialized(conn):
            raise NotInitialized()
        out = []
        if loc is not None and loc.kind == "endpoint":
            from embed.embedders import get_embedder

            url_ = loc.arg or served_at(space)
            if url_ is None:  # in-process, no server: consumers embed with this embedder (documents only)
                loc, endpoint, sentinels = Where("endpoint", IN_PROCESS), None, ([], np.zeros(0))
            else:
                loc = Where("endpoint", url_)
                served_by = _declared_at(cfg, space, url_)
                if served_by is not None:  # another declared space's server answers for this one
                    compatibility(conn, cfg, space, served_by)
                endpoint = hold.enter_context(get_embedder(endpoint_space(space, url_)))
                sentinels = _sentinels(get, endpoint)
        for src in sources:
            t = Target(src, space)
            if not t.has_store_table(conn):
                raise EmbedError(f"no store table {t.table}: run `embed init`")
            kind, col = _resolve(conn, cfg, src, space, loc, since_last)
            if kind is None:
                continue  # the watch, and the space is in no column of this source
            if repair and kind in (STORE, "endpoint"):
                raise EmbedError(f"space {space.name} lives in its store table for {src.name}: --repair applies to a "
                                 "column of the source table (--where live or column=NAME)")
            if kind == "endpoint":
                out.append(_check_endpoint(conn, t, str(col), endpoint, get, tol, sample, sentinels))
            elif kind == STORE:
                out.append(_check_store(conn, t, get, tol, sample))
            else:
                out.append(_check_column(conn, t, kind, str(col), get, tol, sample, since_last, repair))
        rollback = _rollback_hint(conn, cfg, space, out)
        for c in out:
            if not since_last or c.offenders or c.repaired or _last_failed(conn, space, c.source):
                _record(conn, space, c, since_last)
        conn.commit()
    return Verified(space.name, space.fingerprint, tol, all(c.passed for c in out), tuple(out), rollback)


def verify_watch(
    cfg: Config, url: str, space_name: str, seconds: float, *, source: str | None = None,
    stop: threading.Event | None = None, on_pass: Callable[[Verified, int], None] | None = None,
) -> tuple[Verified, int]:
    """`verify(since_last=True)` every `seconds` until `stop` is set; returns the last pass and
    the number of passes. One embedder serves every pass (loaded when a pass first needs it)."""
    if seconds <= 0:
        raise EmbedError("--watch needs a positive number of seconds")
    space = cfg.space(space_name)
    stop = stop or threading.Event()
    passes = 0
    with _embedder(space, None) as get:
        while True:
            t0 = time.monotonic()
            out = verify(cfg, url, space_name, source=source, since_last=True, embedder=_Lazy(get))
            passes += 1
            if on_pass is not None:
                on_pass(out, passes)
            if stop.wait(max(0.0, seconds - (time.monotonic() - t0))) or stop.is_set():
                return out, passes


def failures(conn: psycopg.Connection, space: Space) -> dict[str, dict[str, Any]]:
    """source -> details of the last verify event of `space` for it, where that one failed:
    what keeps `embed status` and `embed gate` red until a pass or a repair comes out clean."""
    rows = conn.execute(
        sql.SQL("""SELECT DISTINCT ON (source) source, outcome, details FROM {}.events
                   WHERE kind IN ('verify', 'verify_repair') AND space_fp = %s AND source IS NOT NULL
                   ORDER BY source, id DESC""").format(sql.Identifier(SCHEMA)), (space.fingerprint,)).fetchall()
    return {s: d for s, outcome, d in rows if outcome == "failed"}


# ----------------------------------------------------------------------------------- compare
@dataclass(frozen=True)
class Compared(Result):
    """Two declared spaces (e.g. one model in-process and behind a server) on the same texts."""

    space: str
    fingerprint: str
    other: str
    other_fingerprint: str
    checked: int  # texts x kinds (passage, query)
    min_cosine: float | None
    p1_cosine: float | None
    median_cosine: float | None
    tolerance: float  # the first space's
    offenders: int
    offender_ids: tuple[str, ...]  # sentinel:<id>:<kind> or <source>:<id>:<kind>
    passed: bool
    declared: bool  # the first space declares compatible_with: [other]
    event: int


def verify_compare(cfg: Config, url: str, space_name: str, other_name: str, *, sample: int = 64) -> Compared:
    """Per-text cosine between two declared spaces' own vectors, documents and queries, on the
    PL/EN sentinels and `sample` live rows per source; recorded as a 'compare' event (numbers
    only), the evidence a declared `compatible_with` rests on (`compatibility`)."""
    from embed.embedders import get_embedder
    from embed.smoke import SENTINELS

    a, b = cfg.space(space_name), cfg.space(other_name)
    if a.fingerprint == b.fingerprint:
        raise EmbedError(f"{a.name} and {b.name} are one space (same fingerprint): nothing to compare")
    if a.dims != b.dims:
        raise EmbedError(f"{a.name} ({a.dims} dims) and {b.name} ({b.dims} dims) cannot be compatible")
    tol = tolerance(a)
    ids = [f"sentinel:{sid}.{lang}" for sid, _, _ in SENTINELS for lang in ("pl", "en")]
    texts = [t for _, pl, en in SENTINELS for t in (pl, en)]
    with connect(url) as conn:
        if not store.is_initialized(conn):
            raise NotInitialized()
        for src in cfg.sources.values():
            t = Target(src, a)
            for i, text in conn.execute(sql.SQL("SELECT s.id::text, s.text FROM ({}) AS s WHERE btrim(s.text) <> ''"
                                                " ORDER BY md5(s.id::text) LIMIT %s").format(t.live_rows()),
                                        (sample,)).fetchall():
                ids.append(f"{src.name}:{i}")
                texts.append(text)
        with get_embedder(a) as ea, get_embedder(b) as eb:
            cos = np.concatenate([_rowcos(_fresh(lambda: ea, texts, k), _fresh(lambda: eb, texts, k))
                                  for k in ("passage", "query")])
        labels = [f"{i}:{k}" for k in ("passage", "query") for i in ids]
        stats, bad = _stats(labels, cos, tol)
        declared = b.name in (a.option("compatible_with") or ())
        with conn.transaction():
            event = store.record_event(
                conn, "compare", "ok" if not bad else "failed", space=a,
                reason=None if not bad else f"{len(bad)} of {len(labels)} below {tol} against {b.name}",
                details={"other": b.name, "other_fp": b.fingerprint, "checked": len(labels), **stats,
                         "tolerance": tol, "offenders": len(bad), "declared_compatible": declared})
    return Compared(a.name, a.fingerprint, b.name, b.fingerprint, len(labels), **stats, tolerance=tol,
                    offenders=len(bad), offender_ids=tuple(bad), passed=not bad, declared=declared, event=event)


def compatibility(conn: psycopg.Connection, cfg: Config, space: Space, other: Space) -> None:
    """Allow `other`'s vectors (queries) against `space` only when `space` declares
    `compatible_with: [other]` and the newest `embed verify --compare` of the two passed; else
    raise Blocked with the measured numbers. Compatibility is a verified, recorded relation: the
    fingerprints never change."""
    from embed.errors import Blocked

    if other.fingerprint == space.fingerprint:
        return
    declared = other.name in (space.option("compatible_with") or ())
    row = conn.execute(sql.SQL(
        "SELECT id, outcome, details FROM {}.events WHERE kind = 'compare' AND space_fp = %s"
        " AND details ->> 'other_fp' = %s ORDER BY id DESC LIMIT 1").format(sql.Identifier(SCHEMA)),
        (space.fingerprint, other.fingerprint)).fetchone() if store.is_initialized(conn) else None
    if declared and row is not None and row[1] == "ok":
        return
    d = row[2] if row is not None else {}
    measured = (f"compare #{row[0]} measured min cosine {d.get('min_cosine')}, median {d.get('median_cosine')} "
                f"({d.get('offenders')} of {d.get('checked')} below {d.get('tolerance')})" if row is not None
                else f"none measured (`embed verify --space {space.name} --compare {other.name}`)")
    why = (f"{space.name} does not declare compatible_with: [{other.name}]" if not declared
           else f"{space.name} declares compatible_with {other.name}, not verified")
    raise Blocked(f"queries from space {other.name} against {space.name} refused: {why}; {measured}")


# ---------------------------------------------------------------------------------- adoption
ADOPTION_SAMPLE = 64  # rows of the legacy column `embed init` checks before anything depends on it


@dataclass(frozen=True)
class Adoption(Result):
    """`embed init`'s check that the declared legacy space is what wrote the legacy column."""

    space: str
    checked: int
    median_cosine: float | None
    min_cosine: float | None
    tolerance: float
    outcome: str  # adopted, already (an earlier init adopted it), empty (no vectors), not checked: <why>


def adoption(conn: psycopg.Connection, cfg: Config, sample: int = ADOPTION_SAMPLE, *, embedder: Any = None) -> Adoption:
    """Compare a sample of the legacy column with fresh embeddings by the declared legacy space;
    raise Blocked, naming the measured cosine and the likely cause, when they are not one space.
    The legacy space must describe exactly what wrote the column: a rollback's catch-up writes
    its vectors there. An embedder that cannot run here (a cloud endpoint not allowed, a model
    not installed, a server down) leaves it unchecked, and says so."""
    from embed.embedders import get_embedder
    from embed.errors import Blocked

    legacy = cfg.legacy_space
    tol = tolerance(legacy)
    if store.is_initialized(conn) and conn.execute(sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM {}.events WHERE kind = 'adopt' AND space_fp = %s AND outcome = 'ok')").format(
            sql.Identifier(SCHEMA)), (legacy.fingerprint,)).fetchone()[0]:
        return Adoption(legacy.name, 0, None, None, tol, "already")
    texts: list[str] = []
    vecs: list[np.ndarray] = []
    per = max(1, sample // max(1, len(cfg.sources)))
    for src in cfg.sources.values():
        if not src.vector_column or not columns(conn, src):
            continue
        loc = locate(conn, cfg, src, legacy)
        if not loc.in_source:
            continue
        t = Target(src, legacy)
        for _, text, vec in conn.execute(sql.SQL(
                "SELECT r.id, r.text, x.{c} FROM ({rows}) AS r JOIN {src} AS x ON x.{id} = r.id"
                " WHERE x.{c} IS NOT NULL AND btrim(r.text) <> '' ORDER BY md5(r.id::text) LIMIT %s").format(
                c=column(loc.column), rows=t.live_rows(), src=t.src, id=t.id), (per,)).fetchall():
            texts.append(text)
            vecs.append(np.asarray(vec.to_numpy(), dtype=np.float64))
    if not texts:
        return Adoption(legacy.name, 0, None, None, tol, "empty")
    try:
        emb = embedder or get_embedder(legacy)
        try:
            ref = _fresh(lambda: emb, texts)
            cos = _rowcos(np.vstack(vecs), ref)
            med = float(np.median(cos))
            cause = _likely_cause(legacy, emb, texts, np.vstack(vecs), med, tol) if med < tol else ""
        finally:
            if embedder is None:
                emb.close()
    except EmbedError as e:
        return Adoption(legacy.name, 0, None, None, tol, f"not checked: {e}")
    med, low = round(med, 4), round(float(np.nanmin(cos)), 4)
    if med < tol:
        raise Blocked(f"the legacy column does not hold space {legacy.name}: median cosine {med} (min {low}) over "
                      f"{len(texts)} rows against the space's own vectors, tolerance {tol}; likely cause: {cause}; "
                      f"fix embed_legacy_space (or that space's spec) in config.yaml; nothing changed")
    return Adoption(legacy.name, len(texts), med, low, tol, "adopted")


def _likely_cause(space: Space, emb: Any, texts: list[str], have: np.ndarray, med: float, tol: float) -> str:
    """Prefix, normalization or model: what explains a legacy column the declared space does not reproduce."""
    norms = np.linalg.norm(have, axis=1)
    if space.normalize and float(np.median(np.abs(norms - 1))) > 1e-3:
        return f"normalization (the column's vectors have norm ~{float(np.median(norms)):.3f}; the space normalizes)"
    if space.query_prefix != space.passage_prefix:
        q = float(np.median(_rowcos(have, _fresh(lambda: emb, texts, "query"))))
        if q >= tol:
            return (f"prefix (the column matches this model with the query prefix {space.query_prefix!r} on documents, "
                    f"cosine {q:.4f}: its writer sent no input type; declare passage_prefix {space.query_prefix!r})")
    if med > 0.85:
        return "a prefix or instruction the writer added or left out, or another revision or quantization of the model"
    return "another model wrote the column"


# ------------------------------------------------------------------------------------ internals
class _Lazy:
    """An embedder handed in by a caller that owns it (watch, sync): not closed here."""

    def __init__(self, get: Callable[[], Any]) -> None:
        self.get = get


@contextmanager
def _embedder(space: Space, given: Any) -> Iterator[Callable[[], Any]]:
    """A getter of the space's embedder, made on first use (a check the store answers loads no
    model) and closed at the end unless the caller gave one."""
    if isinstance(given, _Lazy):
        yield given.get
        return
    held: list[Any] = [given] if given is not None else []

    def get() -> Any:
        if not held:
            from embed.embedders import get_embedder

            held.append(get_embedder(space))
        return held[0]

    try:
        yield get
    finally:
        if held and given is None:
            held[0].close()


def _resolve(conn: psycopg.Connection, cfg: Config, src: Source, space: Space, loc: Where | None,
             since_last: bool) -> tuple[str | None, str | None]:
    """(kind, column or URL) of the location to check for this source."""
    if loc is None:
        try:
            found = locate(conn, cfg, src, space)
        except EmbedError:
            found = None
        if since_last:  # the watch: only a live column a swap put the space in (rows written since the cutover)
            swapped = recorded(conn).get((src.name, src.vector_column or ""), (None,))[0] == space.fingerprint
            return (LIVE, found.column) if found and found.kind == LIVE and swapped else (None, None)
        if found is None:
            return STORE, None
        return found.kind, found.column if found.in_source else None
    if loc.kind == "live":
        return LIVE, live_column(src)
    if loc.kind == "column":
        return "column", loc.arg
    return loc.kind, loc.arg


def _stats(ids: list[str], cos: np.ndarray, tol: float) -> tuple[dict[str, Any], list[str]]:
    cos = np.nan_to_num(np.asarray(cos, dtype=np.float64), nan=-1.0)  # a zero vector matches nothing
    bad = [i for i, c in zip(ids, cos, strict=True) if c < tol]
    if not len(cos):
        return {"min_cosine": None, "p1_cosine": None, "median_cosine": None}, bad
    return {"min_cosine": round(float(cos.min()), 6), "p1_cosine": round(float(np.percentile(cos, 1)), 6),
            "median_cosine": round(float(np.median(cos)), 6)}, bad


def _rowcos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=1) / den


def _fresh(get: Callable[[], Any], texts: list[str], kind: str = "passage") -> np.ndarray:
    out = [get().embed(texts[i:i + EMBED_BATCH], kind).vectors for i in range(0, len(texts), EMBED_BATCH)]
    return np.vstack(out) if out else np.zeros((0, 0))


def _sample(n: int | None) -> sql.Composable:
    return sql.SQL(" ORDER BY random() LIMIT {}").format(sql.Literal(n)) if n else sql.SQL("")


def _not_checked_since(t: Target, fp: sql.Composable) -> sql.Composed:
    """Rows whose current version was neither staged by a swap nor passed by an earlier check."""
    return sql.SQL(
        " AND NOT EXISTS (SELECT 1 FROM {staged} AS k WHERE k.source = {src} AND k.space_fp = {fp}"
        " AND k.source_id = r.id::text AND k.row_xmin = r.xmin)"
        " AND NOT EXISTS (SELECT 1 FROM {verified} AS k WHERE k.source = {src} AND k.space_fp = {fp}"
        " AND k.source_id = r.id::text AND k.row_xmin = r.xmin)"
    ).format(staged=STAGED, verified=VERIFIED, src=sql.Literal(t.source.name), fp=fp)


def watch_mark(conn: psycopg.Connection, t: Target, col: str) -> dt.datetime | None:
    """WATCH_MARGIN before the later of the swap that put the space in `col` and its newest passing
    check of the source (index reads); None: neither exists (the watch then scans)."""
    return conn.execute(sql.SQL(
        "SELECT greatest((SELECT max(k.at) FROM {verified} AS k WHERE k.source = %(src)s AND k.space_fp = %(fp)s),"
        " (SELECT c.at FROM {columns} AS c WHERE c.source = %(src)s AND c.column_name = %(col)s))"
        " - %(margin)s::interval").format(verified=VERIFIED, columns=COLUMNS),
        {"src": t.source.name, "fp": t.space.fingerprint, "col": col, "margin": WATCH_MARGIN}).fetchone()[0]


def column_query(t: Target, col: str, *, since_last: bool = False, written_since: dt.datetime | None = None,
                 sample: int | None = None) -> sql.Composed:
    """The statement that reads a column's rows for a check: (id, cosine to the store's vector for
    the same content or NULL, no vector, blank text, xmin, already recorded). `since_last`: only
    row versions neither staged by a swap nor passed before. `written_since` (the watch, for a
    source with written_at columns, while no offender is outstanding: `watch_mark`): only rows
    where one of those columns is at least that, read through their indexes, so a pass with
    nothing new reads no row (an offender keeps the full scan: it stays red until repaired). A
    literal, not a subquery: the planner then sees how few rows it selects."""
    fp = sql.Literal(t.space.fingerprint)
    recent = sql.SQL(" AND ({})").format(sql.SQL(" OR ").join(
        sql.SQL("{} >= {}").format(column(w), sql.Literal(written_since)) for w in t.source.written_at)) \
        if written_since is not None and t.source.written_at else sql.SQL("")
    return sql.SQL(
        """SELECT r.id::text, CASE WHEN v.source_id IS NOT NULL THEN (1 - (r.vec <=> v.embedding))::float8 END,
                  r.vec IS NULL, btrim(r.text) = '', r.xmin::text,
                  EXISTS (SELECT 1 FROM {verified} AS k WHERE k.source = {srcname} AND k.space_fp = {fp}
                          AND k.source_id = r.id::text AND k.row_xmin = r.xmin) AS marked
           FROM (SELECT {id} AS id, {text}::text AS text, {c} AS vec, xmin AS xmin FROM {src}
                 WHERE ({live}){recent}) AS r
           LEFT JOIN {store} AS v ON v.source_id = r.id AND v.content_sha256 = {sha}
           WHERE TRUE{since}{sample}""").format(
        id=t.id, text=t.text, c=column(col), src=t.src, live=t.live, recent=recent, store=t.store,
        sha=t.sha(sql.SQL("r.text")), since=_not_checked_since(t, fp) if since_last else sql.SQL(""),
        sample=_sample(sample), verified=VERIFIED, srcname=sql.Literal(t.source.name), fp=fp)


def _check_column(conn: psycopg.Connection, t: Target, kind: str, col: str, get: Callable[[], Any], tol: float,
                  sample: int | None, since_last: bool, repair: bool) -> Checked:
    """A column of the source table: store vector for the same content where there is one
    (cosine computed in the database, no vector leaves it), else a fresh embedding."""
    schema, table = t.source.schema_table
    info = columns(conn, t.source).get(col)
    if info is None and col not in _all_columns(conn, t.source):
        raise EmbedError(f"{schema}.{table} has no column {col}")
    if info is not None and info.dims not in (None, t.space.dims):
        raise EmbedError(f"{schema}.{table}.{col} is vector({info.dims}): it cannot hold space {t.space.name} "
                         f"({t.space.dims} dims)")
    written = since_last and bool(t.source.written_at) and not _last_failed(conn, t.space, t.source.name)
    if written and not set(t.source.written_at) <= _all_columns(conn, t.source):
        raise EmbedError(f"{schema}.{table} lacks a written_at column of source {t.source.name} "
                         f"({', '.join(t.source.written_at)})")
    since = watch_mark(conn, t, col) if written else None
    rows = conn.execute(column_query(t, col, since_last=since_last, written_since=since, sample=sample)).fetchall()
    have = [r for r in rows if not r[2]]
    without = len(rows) - len(have)
    stored = [r for r in have if r[1] is not None]
    need = [r[0] for r in have if r[1] is None and not r[3]]
    blank = sum(1 for r in have if r[1] is None and r[3])
    ids, cos = [r[0] for r in stored], [r[1] for r in stored]
    fresh: dict[str, np.ndarray] = {}
    if need:
        got = conn.execute(sql.SQL("SELECT {id}::text, {text}::text, {c} FROM {src} WHERE {id} = ANY(%s::{idt}[])")
                           .format(id=t.id, text=t.text, c=column(col), src=t.src, idt=t.id_type), (need,)).fetchall()
        got = [g for g in got if g[2] is not None and (g[1] or "").strip()]
        ref = _fresh(get, [g[1] for g in got])
        if got:
            cos += list(_rowcos(np.vstack([np.asarray(g[2].to_numpy() if hasattr(g[2], "to_numpy") else g[2])
                                           for g in got]), ref))
            ids += [g[0] for g in got]
            fresh = {g[0]: (g[1], v) for g, v in zip(got, ref, strict=True)}
    stats, bad = _stats(ids, np.array(cos), tol)
    fresh_versions = {r[0]: r[4] for r in rows if not r[5]}  # passing row versions not yet recorded
    offending = set(bad)
    _mark_verified(conn, t, [(i, fresh_versions[i]) for i in ids if i in fresh_versions and i not in offending])
    repaired = _repair(conn, t, col, bad, fresh) if repair and bad else 0
    where = f"{schema}.{table}.{col}"
    return Checked(t.source.name, where, LIVE if kind == LIVE else "column", len(ids), len(stored),
                   len(ids) - len(stored), without, blank, **stats, tolerance=tol, offenders=len(bad),
                   contaminated_upper_95=round(upper_95(len(bad), len(ids)), 6), offender_ids=tuple(bad),
                   repaired=repaired)


def _all_columns(conn: psycopg.Connection, src: Source) -> set[str]:
    schema, table = src.schema_table
    return {r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text))"
        " AND attnum > 0 AND NOT attisdropped", (schema, table)).fetchall()}


def _store_rows(conn: psycopg.Connection, t: Target, sample: int | None) -> list[tuple[str, str, Any]]:
    """(id, text, vector) of stored vectors whose content is the live row's now."""
    return conn.execute(sql.SQL(
        "SELECT s.id::text, s.text, v.embedding FROM {store} AS v JOIN ({rows}) AS s"
        " ON s.id = v.source_id AND v.content_sha256 = {sha}{sample}").format(
        store=t.store, rows=t.live_rows(), sha=t.sha(), sample=_sample(sample))).fetchall()


def _checked(t: Target, where: str, kind: str, ids: list[str], cos: np.ndarray, tol: float, *,
             from_store: int, embedded: int) -> Checked:
    stats, bad = _stats(ids, cos, tol)
    return Checked(t.source.name, where, kind, len(ids), from_store, embedded, 0, 0, **stats, tolerance=tol,
                   offenders=len(bad), contaminated_upper_95=round(upper_95(len(bad), len(ids)), 6),
                   offender_ids=tuple(bad))


def _check_store(conn: psycopg.Connection, t: Target, get: Callable[[], Any], tol: float,
                 sample: int | None) -> Checked:
    """The store table itself, against fresh embeddings of the same texts (a model call per row)."""
    rows = _store_rows(conn, t, sample)
    vecs = np.vstack([np.asarray(r[2].to_numpy()) for r in rows]) if rows else np.zeros((0, t.space.dims))
    cos = _rowcos(vecs, _fresh(get, [r[1] for r in rows])) if rows else np.zeros(0)
    return _checked(t, f"{SCHEMA}.{t.table}.embedding", STORE, [r[0] for r in rows], cos, tol, from_store=0,
                    embedded=len(rows))


def endpoint_space(space: Space, url: str) -> Space:
    """How Honcho calls `url`: an OpenAI-compatible /v1/embeddings that gets the raw text (no
    prefix) and the served model name. The result only configures a client: it is not a space
    anyone stores vectors of."""
    opts = {k: v for k, v in space.options.items() if k in ("api_key_env", "allow_cloud", "timeout_s", "truncate")}
    return replace(space, provider="openai", model=str(space.option("served_model") or space.model),
                   query_prefix="", passage_prefix="", options={**opts, "endpoint": url})


def served_at(space: Space) -> str | None:
    """The endpoint Honcho and other consumers call for `space` after a switch: its serve_endpoint,
    else its own; None: an in-process space with no server (consumers embed with embed's embedder)."""
    url = space.option("serve_endpoint")
    if not (isinstance(url, str) and url.strip()) and space.provider in ("openai", "ollama"):
        url = str(space.option("endpoint") or "").rstrip("/")
        if space.provider == "ollama" and url and not url.endswith("/v1"):
            url += "/v1"  # Honcho speaks OpenAI: Ollama's /v1
    return url if isinstance(url, str) and url.strip() else None


def endpoint_location(space: Space) -> str:
    """How `verify --where endpoint` records the endpoint consumers call for `space` (what the
    cutover gate `verify` looks for): the URL without userinfo, or 'in-process'."""
    from embed.embedders.endpoint import safe_url

    url = served_at(space)
    return safe_url(url) if url else IN_PROCESS


def _base(url: str) -> str:
    """An endpoint URL compared with another: no trailing slash, no /v1 (Honcho reaches Ollama at /v1)."""
    norm = url.strip().rstrip("/")
    return norm[:-3] if norm.endswith("/v1") else norm


def _declared_at(cfg: Config, space: Space, url: str) -> Space | None:
    """The other declared space whose own endpoint is `url`, if any (none when `url` is the space's
    own endpoint too: one server may serve two spaces, told apart by prefix or input type)."""
    from embed.embedders import HTTP_PROVIDERS

    norm = _base(url)
    if space.provider in HTTP_PROVIDERS and _base(str(space.option("endpoint") or "")) == norm:
        return None
    return next((sp for sp in cfg.spaces.values() if sp.fingerprint != space.fingerprint
                 and sp.provider in HTTP_PROVIDERS and _base(str(sp.option("endpoint") or "")) == norm), None)


def check_served_by(conn: psycopg.Connection, cfg: Config, space: Space) -> None:
    """Refuse (Blocked) a space whose consumers would get query vectors from another declared
    space's server (its serve_endpoint is that space's endpoint) unless the pairing is a verified,
    recorded compatible_with relation (`compatibility`)."""
    url = served_at(space)
    other = _declared_at(cfg, space, url) if url else None
    if other is not None:
        compatibility(conn, cfg, space, other)


def _sentinels(get: Callable[[], Any], endpoint: Any) -> tuple[list[str], np.ndarray]:
    """The PL/EN sentinels (embed.smoke) through the endpoint, raw as Honcho sends them, against
    the space's own document and query vectors: Honcho embeds both through that one call."""
    from embed.smoke import SENTINELS

    ids = [f"sentinel:{sid}.{lang}" for sid, _, _ in SENTINELS for lang in ("pl", "en")]
    texts = [t for _, pl, en in SENTINELS for t in (pl, en)]
    got = _fresh(lambda: endpoint, texts)
    cos = [_rowcos(got, _fresh(get, texts, kind)) for kind in ("passage", "query")]
    return [f"{i}:{kind}" for kind in ("passage", "query") for i in ids], np.concatenate(cos)


def _check_endpoint(conn: psycopg.Connection, t: Target, url: str, endpoint: Any, get: Callable[[], Any], tol: float,
                    sample: int | None, sentinels: tuple[list[str], np.ndarray]) -> Checked:
    """What an endpoint makes of the stored rows' raw texts, against the store's vectors, and of
    the sentinels, against the space's own document and query vectors. No endpoint (None: an
    in-process space without a server): what the embedder on this machine makes of the stored
    rows' texts (its weights, device and dtype here against the backfill's)."""
    from embed.embedders.endpoint import safe_url

    rows = _store_rows(conn, t, sample)
    cos = np.zeros(0)
    if rows:
        got = _fresh((lambda: endpoint) if endpoint is not None else get, [r[1] for r in rows])
        cos = _rowcos(np.vstack([np.asarray(r[2].to_numpy()) for r in rows]), got)
    ids, sent = sentinels
    where = safe_url(url) if endpoint is not None else IN_PROCESS
    return _checked(t, where, "endpoint", [r[0] for r in rows] + ids, np.concatenate([cos, sent]), tol,
                    from_store=len(rows), embedded=len(ids))


def _mark_verified(conn: psycopg.Connection, t: Target, rows: list[tuple[str, str]]) -> None:
    if not rows:
        return
    conn.execute(sql.SQL(
        "INSERT INTO {} (source, space_fp, source_id, row_xmin) SELECT %s, %s, u.id, u.x::xid"
        " FROM unnest(%s::text[], %s::text[]) AS u(id, x) ON CONFLICT (source, space_fp, source_id)"
        " DO UPDATE SET row_xmin = EXCLUDED.row_xmin, at = now()").format(VERIFIED),  # a row rewritten since
        (t.source.name, t.space.fingerprint, [i for i, _ in rows], [x for _, x in rows]))


def _repair(conn: psycopg.Connection, t: Target, col: str, bad: list[str], fresh: dict[str, tuple[str, Any]]) -> int:
    """Write the space's own vector over each offender's, REPAIR_BATCH rows per transaction; a
    freshly embedded vector also goes into the store (it is the space's vector of that content).
    The content is re-checked on the locked row: a row edited meanwhile is left for the next pass."""
    from embed.store.writer import Rows, StoreWriter

    done = 0
    conn.commit()
    writer = StoreWriter(conn, t)
    for at in range(0, len(bad), REPAIR_BATCH):
        ids = bad[at:at + REPAIR_BATCH]
        with conn.transaction():
            new = [(i, *fresh[i]) for i in ids if i in fresh]
            if new:
                rows = Rows(ids=[int(i) if t.source.id_type == "bigint" else i for i, _, _ in new],
                            hashes=[content_hash(x) for _, x, _ in new],
                            vectors=np.vstack([v for _, _, v in new]).astype(np.float32),
                            truncated=np.zeros(len(new), bool))
                writer.write(rows, np.ones(len(new), bool), [], 0)
            done += conn.execute(sql.SQL(
                "UPDATE {src} AS x SET {c} = v.embedding FROM {store} AS v WHERE x.{id} = ANY(%s::{idt}[])"
                " AND v.source_id = x.{id} AND v.content_sha256 = {sha}").format(
                src=t.src, c=column(col), store=t.store, id=t.id, idt=t.id_type,
                sha=t.sha(sql.SQL("x.{}::text").format(t.text))), (ids,)).rowcount
    return done


def _rollback_hint(conn: psycopg.Connection, cfg: Config, space: Space, out: list[Checked]) -> str | None:
    """`embed rollback` when offenders sit in a live column production reads from."""
    if any(c.kind == LIVE and c.offenders for c in out):
        rec = recorded(conn)
        if any(rec.get((c.source, live_column(cfg.source(c.source))), (None,))[0] == space.fingerprint
               for c in out if c.kind == LIVE):
            return "embed rollback --writers-stopped"
    return None


def _last_failed(conn: psycopg.Connection, space: Space, source: str) -> bool:
    return source in failures(conn, space)


def _record(conn: psycopg.Connection, space: Space, c: Checked, watch: bool) -> None:
    details = {k: v for k, v in c.as_dict().items() if k != "offender_ids"}
    details.update(offender_ids=list(c.offender_ids[:EVENT_IDS]), watch=watch)
    if c.repaired:
        store.record_event(conn, "verify_repair", "ok" if c.repaired >= c.offenders else "failed", space=space, source=c.source,
                           reason=f"{c.repaired} vector(s) replaced by the space's own", details=details)
        return
    store.record_event(conn, "verify", "ok" if c.passed else "failed", space=space, source=c.source,
                       reason=None if c.passed else f"{c.offenders} of {c.checked} below {c.tolerance}",
                       details=details)


__all__ = ["Adoption", "Checked", "Compared", "Verified", "Where", "adoption", "check_served_by", "column_query",
           "compatibility", "endpoint_location", "failures", "served_at", "tolerance", "upper_95", "verify",
           "verify_compare", "verify_watch", "watch_mark"]

