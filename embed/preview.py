"""`--dry-run` of the steps that change something (backfill, cutover, rollback, retire): what the
step would do, from the database as it is now, changing nothing.

A Preview lists the rows affected per source, the exact statements in the order they run with
the lock each takes (how long writers or readers would wait on it), the estimated time (rows to
embed over the smoke's measured texts/s, rows to copy over the store's own write rate), the
storage the step adds or frees, and for a space that declares `price_per_mtok` (an operational
option: it does not change the space's fingerprint) the cost of the tokens it would send,
refused above `--budget-usd`. Counts, names and statements only: never row text.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from embed import store
from embed.config import Config
from embed.errors import Blocked, EmbedError
from embed.result import Result
from embed.spaces import Space

# The locks the statements take, in Postgres's words, with what they block.
ROW_EXCLUSIVE = "ROW EXCLUSIVE (writers and readers go on)"
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE (writers and readers go on; no other DDL)"
SHARE = "SHARE (writers wait while it builds; readers go on)"
ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE (readers and writers wait: brief, metadata only)"
VECTOR_ROW_BYTES = 8 + 40  # a vector's header + a store row's own columns (id, hash, tag, ...)
COPY_ROWS_PER_S = 5000.0  # an UPDATE/COPY of stored vectors when no measurement exists (tiny next to embedding)


@dataclass(frozen=True)
class Statement(Result):
    sql: str  # exactly what embed sends (parameters shown as %s, id ranges as batches)
    lock: str  # the lock it takes and on what
    repeats: str = "once"  # or: per batch, how many


@dataclass(frozen=True)
class Preview(Result):
    step: str
    space: str
    rows: dict[str, int]  # per source: rows the step writes (or embeds)
    statements: tuple[Statement, ...]
    seconds: float | None  # estimated wall time; None when nothing measured it
    seconds_basis: str
    bytes_added: int
    bytes_freed: int
    tokens: int | None  # tokens the step would send to the model (at most: reuse is not counted)
    price_per_mtok: float | None  # the space's declared price (USD per million tokens)
    cost_usd: float | None  # tokens x price_per_mtok (None: the space declares no price)
    budget_usd: float | None
    blockers: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.blockers

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "allowed": self.allowed}

    def lines(self) -> list[str]:
        from embed.safety.backup import human_bytes

        rows = ", ".join(f"{s} {n}" for s, n in self.rows.items()) or "none"
        out = [f"dry run of {self.step} {self.space}: nothing changed. Rows: {rows}"]
        out += [f"  {i}. [{st.lock}] {st.repeats}: {st.sql}" for i, st in enumerate(self.statements, 1)]
        est = f"~{self.seconds:.1f} s ({self.seconds_basis})" if self.seconds is not None else self.seconds_basis
        out.append(f"  estimated time: {est}; storage: +{human_bytes(self.bytes_added)}, "
                   f"-{human_bytes(self.bytes_freed)}")
        if self.tokens is not None:
            cost = f"${self.cost_usd:.4f}" if self.cost_usd is not None else "no price_per_mtok declared"
            cap = f" (budget ${self.budget_usd:g})" if self.budget_usd is not None else ""
            out.append(f"  tokens to embed: {self.tokens}; cost: {cost}{cap}")
        out += [f"  blocked: {b}" for b in self.blockers]
        return out


def price(space: Space) -> float | None:
    """USD per million tokens the space's endpoint charges (`price_per_mtok`), or None."""
    v = space.option("price_per_mtok")
    if v is None:
        return None
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
        raise EmbedError(f"space {space.name}: option price_per_mtok must be a number >= 0 (USD per million tokens)")
    return float(v)


def cost(space: Space, tokens: int) -> float | None:
    p = price(space)
    return None if p is None else round(tokens * p / 1e6, 6)


def over_budget(space: Space, tokens: int, budget_usd: float | None, spent_usd: float = 0.0) -> str | None:
    """Why `tokens` more would break the budget (one line), or None."""
    if budget_usd is None:
        return None
    c = cost(space, tokens)
    if c is None:
        return None
    if spent_usd + c > budget_usd:
        return (f"{tokens} token(s) at ${price(space):g}/Mtok would bring the spend to ${spent_usd + c:.4f}, over "
                f"--budget-usd {budget_usd:g}")
    return None


def refuse(p: Preview) -> Preview:
    """The preview, or Blocked (one line, nothing changed) when it is over budget."""
    if p.cost_usd is not None and p.budget_usd is not None and p.cost_usd > p.budget_usd:
        raise Blocked(f"{p.step} {p.space} would cost ${p.cost_usd:.4f} ({p.tokens} tokens at "
                      f"${p.price_per_mtok:g}/Mtok), over --budget-usd {p.budget_usd:g}; nothing changed")
    return p


def texts_per_s(conn: psycopg.Connection, space: Space) -> float | None:
    """The newest passing smoke run's measured throughput for the space (texts/s)."""
    row = conn.execute(
        sql.SQL("SELECT evidence ->> 'texts_per_s' FROM {}.smoke_runs WHERE space_fp = %s AND passed"
                " ORDER BY id DESC LIMIT 1").format(sql.Identifier(store.SCHEMA)), (space.fingerprint,)).fetchone()
    return float(row[0]) if row and row[0] else None


def text(conn: psycopg.Connection, stmt: sql.Composable) -> str:
    """A statement as Postgres receives it (identifiers quoted), on one line."""
    return " ".join(stmt.as_string(conn).split())


def counter_for(space: Space) -> Any:
    """The space's token counter (its tokenizer offline, else a stated bound)."""
    from embed.embedders.tokens import byte_bound, token_counter

    try:
        return token_counter(space)
    except EmbedError:
        return byte_bound(space)


# ----------------------------------------------------------------------------------- backfill
def backfill_preview(cfg: Config, url: str, space_name: str, *, sources: list[str] | None = None,
                     budget_usd: float | None = None) -> Preview:
    """What `embed backfill --space S` would do now: the rows pending per source, their tokens
    (distinct contents: identical content is embedded once), the COPY per batch, the skip
    records, the HNSW build; time from the smoke's texts/s; storage from the vectors' size."""
    from embed.db.connection import connect
    from embed.fill.backfill import Options, check_ready
    from embed.store.indexes import hnsw_max_dims, hnsw_method
    from embed.store.target import Target
    from embed.store.writer import copy_statement

    sp = cfg.space(space_name)
    names = list(cfg.sources) if not sources or sources == ["all"] else [cfg.source(s).name for s in sources]
    check_ready(url)
    counter = counter_for(sp)
    rows: dict[str, int] = {}
    stmts: list[Statement] = []
    tokens = added = 0
    chunk = Options().chunk_rows
    with connect(url) as conn:
        rate = texts_per_s(conn, sp)
        for n in names:
            t = Target(cfg.source(n), sp)
            pending = conn.execute(t.pending_query()).fetchall()
            rows[n] = len(pending)
            distinct = {sha: txt or "" for _, txt, sha, _ in pending}
            tokens += int(counter.count(list(distinct.values()), "passage").sum()) if distinct else 0
            has = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(t.store)).fetchone()[0]
            per_dim = 2 if sp.storage == "halfvec" else 4  # the index holds a copy of each vector
            added += len(pending) * (per_dim * sp.dims + VECTOR_ROW_BYTES) * (2 if sp.dims <= hnsw_max_dims(sp) else 1)
            batches = max(1, -(-len(pending) // chunk))
            stmts += [
                Statement(text(conn, copy_statement(t.store)), f"{ROW_EXCLUSIVE} on {t.table}",
                          f"per batch ({batches} of <= {chunk} rows), in one transaction with its skip records"),
                Statement(text(conn, sql.SQL("CREATE INDEX {} ON {} USING {}").format(
                    sql.SQL("CONCURRENTLY") if has else sql.SQL(""), t.store, hnsw_method(t, cfg.index_params))),
                    f"{SHARE_UPDATE_EXCLUSIVE if has else SHARE} on {t.table}", "once, when the table is complete"),
            ]
    total = sum(rows.values())
    seconds = round(total / rate, 1) if rate else None
    basis = (f"{total} row(s) at the smoke's {rate:g} texts/s" if rate else
             "unknown: no passing `embed smoke` of the space measured its throughput")
    return refuse(Preview("backfill", sp.name, rows, tuple(stmts), seconds, basis, added, 0, tokens, price(sp),
                          cost(sp, tokens), budget_usd))


class Spend:
    """An embedder that counts the tokens of each call (the space's counter) before sending it,
    and refuses the call that would take the spend past `budget_usd` (Blocked, one line): what
    was written before stays; a rerun with a higher budget continues from there."""

    def __init__(self, embedder: Any, budget_usd: float) -> None:
        self.inner, self.budget_usd = embedder, budget_usd
        self.space: Space = embedder.space
        self.counter = counter_for(self.space) if price(self.space) is not None else None
        self.tokens = 0
        self._lock = threading.Lock()

    @property
    def call_rows(self) -> int | None:
        return getattr(self.inner, "call_rows", None)

    def embed(self, texts: list[str], kind: Any) -> Any:
        if self.counter is not None:
            n = int(self.counter.count(texts, kind).sum())
            with self._lock:
                why = over_budget(self.space, n, self.budget_usd, cost(self.space, self.tokens) or 0.0)
                if why:
                    raise Blocked(f"stopped before an embed call: {why}; what was written is kept")
                self.tokens += n
        return self.inner.embed(texts, kind)

    def close(self) -> None:
        self.inner.close()
