"""The store writer: one all-or-nothing transaction per batch, vectors sent with binary COPY.

The COPY stream is built with numpy in one pass (a packed record per row: field lengths,
id, hash, space tag, `vector` in pgvector's binary form, tokens, truncated, run id), so the
client side costs far less than the server's own work. pgvector stores 1024-d vectors
out of line (TOAST, storage 'external'), so going through a staging table would write every
vector twice; rows the store does not have yet therefore go straight into the store table
inside a savepoint. Only rows that replace a stale vector, or a batch that races another
writer (unique violation), take the staging path: COPY into a temp table, then one
`INSERT ... ON CONFLICT DO UPDATE`.

Either way a row is written only if its source row is still live with the same content,
checked inside the write transaction just before the COPY, so a row edited or deleted while
its text was being embedded is not written (the next sync embeds the new content). Skip records and the chunk's done mark go into the same
transaction, so a crash at any point leaves either the whole batch or none of it.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import psycopg
from psycopg import sql

from embed.db.hooks import pause_point
from embed.store.target import Target

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)
COLUMNS = ("source_id", "content_sha256", "space_fp", "embedding", "tokens", "truncated", "run_id")


@dataclass
class Rows:
    """Rows ready to store: ids, content hashes, vectors (n x dims float32) and their facts
    (tokens: None or -1 where unknown, stored as NULL)."""

    ids: list[object]
    hashes: list[bytes]
    vectors: np.ndarray
    truncated: np.ndarray
    tokens: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, idx: np.ndarray | list[int]) -> Rows:
        idx = np.asarray(idx, dtype=np.int64)
        return Rows(
            ids=[self.ids[i] for i in idx],
            hashes=[self.hashes[i] for i in idx],
            vectors=self.vectors[idx],
            truncated=self.truncated[idx],
            tokens=None if self.tokens is None else self.tokens[idx],
        )


@dataclass
class Skip:
    source_id: object
    sha: bytes
    reason: str


@dataclass
class WriteResult:
    written: int = 0
    dropped: int = 0  # rows whose source changed or vanished while they were being embedded
    staged: int = 0  # rows that went through the staging table
    skipped: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def _record_dtype(id_kind: str, id_len: int, dims: int, with_tokens: bool, half: bool) -> np.dtype:
    fields: list[tuple] = [("nfields", ">i2"), ("id_len", ">i4")]
    if id_kind == "bigint":
        fields.append(("id", ">i8"))
    elif id_len:
        fields.append(("id", f"S{id_len}"))
    fields += [
        ("sha_len", ">i4"), ("sha", "S32"),
        ("fp_len", ">i4"), ("fp", "S64"),
        ("vec_len", ">i4"), ("vec_dim", ">i2"), ("vec_unused", ">i2"), ("vec", ">f2" if half else ">f4", (dims,)),
        ("tok_len", ">i4"),
    ]
    if with_tokens:
        fields.append(("tok", ">i4"))
    fields += [("tr_len", ">i4"), ("tr", "u1"), ("run_len", ">i4"), ("run", ">i8")]
    return np.dtype(fields)  # packed: numpy adds no padding unless asked


def encode_copy(rows: Rows, id_type: str, space_fp: str, run_id: int, *, half: bool = False) -> bytes:
    """The complete binary COPY stream (header, tuples, trailer) for COLUMNS."""
    return b"".join(encode_parts(rows, id_type, space_fp, run_id, half=half))


def encode_parts(rows: Rows, id_type: str, space_fp: str, run_id: int, *, half: bool = False) -> list[memoryview | bytes]:
    """The binary COPY stream as consecutive buffers (no copy into one big bytes object).

    `half`: the embedding column is a `halfvec` (storage: halfvec), sent as pgvector's binary
    halfvec (the same header, then big-endian fp16 values: numpy's round-to-nearest-even, as
    pgvector rounds a `vector` cast to `halfvec`).

    Rows are packed in groups that share a record layout (id byte length, tokens known or
    NULL); COPY does not care about row order.
    """
    n = len(rows)
    dims = int(rows.vectors.shape[1]) if n else 0
    parts: list[memoryview | bytes] = [COPY_HEADER]
    if n:
        vectors = np.ascontiguousarray(rows.vectors, dtype=np.float32)
        shas = np.frombuffer(b"".join(rows.hashes), dtype="S32")
        tokens = np.full(n, -1, np.int64) if rows.tokens is None else np.asarray(rows.tokens, np.int64)
        if id_type == "bigint":
            lengths = np.full(n, 8)
            idvals: np.ndarray | list[bytes] = np.asarray(rows.ids, dtype=np.int64)
        else:
            idvals = [str(i).encode("utf-8") for i in rows.ids]
            lengths = np.fromiter((len(b) for b in idvals), dtype=np.int64, count=n)
        groups: dict[tuple[int, bool], list[int]] = defaultdict(list)
        for pos, (length, tok) in enumerate(zip(lengths.tolist(), tokens.tolist(), strict=True)):
            groups[(length, tok >= 0)].append(pos)
        for (length, with_tokens), pos_list in groups.items():
            pos = np.asarray(pos_list, dtype=np.int64)
            rec = np.empty(len(pos), dtype=_record_dtype(id_type, length, dims, with_tokens, half))
            rec["nfields"] = len(COLUMNS)
            rec["id_len"] = length
            if id_type == "bigint":
                rec["id"] = idvals[pos]
            elif length:
                rec["id"] = np.array([idvals[p] for p in pos_list], dtype=f"S{length}")
            rec["sha_len"] = 32
            rec["sha"] = shas[pos]
            rec["fp_len"] = 64
            rec["fp"] = space_fp.encode("ascii")
            rec["vec_len"] = 4 + (2 if half else 4) * dims
            rec["vec_dim"] = dims
            rec["vec_unused"] = 0
            rec["vec"] = vectors[pos]
            rec["tok_len"] = 4 if with_tokens else -1
            if with_tokens:
                rec["tok"] = tokens[pos]
            rec["tr_len"] = 1
            rec["tr"] = np.asarray(rows.truncated, dtype=bool)[pos].astype(np.uint8)
            rec["run_len"] = 8
            rec["run"] = run_id
            parts.append(memoryview(rec.view(np.uint8)))
    parts.append(COPY_TRAILER)
    return parts


def copy_statement(table: sql.Composable) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        table, sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    )


class StoreWriter:
    """Writes batches into one store table over its own connection (not autocommit)."""

    def __init__(self, conn: psycopg.Connection, target: Target) -> None:
        self.conn = conn
        self.t = target
        self.stage = sql.Identifier("embed_stage_" + hashlib.sha256(target.table.encode()).hexdigest()[:16])
        self._stage_ready = False
        self.half = target.space.storage == "halfvec"

    # -- the pieces ------------------------------------------------------------------------
    def _copy(self, table: sql.Composable, parts: list[memoryview | bytes], *, hook: bool) -> None:
        with self.conn.cursor() as cur, cur.copy(copy_statement(table)) as cp:
            for i, part in enumerate(parts):
                if hook and i == len(parts) // 2:  # crash tests' "during a COPY": rows are on the server
                    pause_point("during_copy")
                cp.write(part)

    @property
    def _ids_param(self) -> sql.Composed:
        return sql.SQL("%s::{}[]").format(self.t.id_type)

    def _current(self, rows: Rows) -> np.ndarray:
        """Which rows are still live in the source with the content they were embedded for.

        One indexed lookup per row (a LATERAL with LIMIT 1 keeps the planner off a scan of
        the whole source), inside the write transaction.
        """
        got = self.conn.execute(
            sql.SQL(
                """SELECT u.ord FROM unnest(%s::{idt}[]) WITH ORDINALITY AS u(id, ord)
                CROSS JOIN LATERAL (
                    SELECT {sha} AS sha FROM {src} AS x WHERE x.{id} = u.id AND ({live}) LIMIT 1) AS s
                WHERE s.sha = substring(%s::bytea FROM (u.ord::int - 1) * 32 + 1 FOR 32)"""
            ).format(idt=self.t.id_type, sha=self.t.sha(sql.SQL("{}::text").format(sql.Identifier("x", self.t.source.text_column))),
                     src=self.t.src, id=self.t.id, live=self.t.live),
            (rows.ids, b"".join(rows.hashes)),  # one bytea: adapting 4096 bytes objects costs more than the query
        ).fetchall()
        mask = np.zeros(len(rows), bool)
        if got:
            mask[np.fromiter((r[0] - 1 for r in got), dtype=np.int64, count=len(got))] = True
        return mask

    def _ensure_stage(self) -> None:
        if not self._stage_ready:
            self.conn.execute(
                sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS").format(
                    self.stage, self.t.store
                )
            )
            self._stage_ready = True

    def _upsert_staged(self, parts: list[memoryview | bytes]) -> int:
        """COPY into the session's staging table, then one upsert; returns rows inserted or
        replaced (a row whose stored vector already has this content is left alone)."""
        self._ensure_stage()
        self.conn.execute(sql.SQL("TRUNCATE {}").format(self.stage))
        self._copy(self.stage, parts, hook=False)
        cols = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        sets = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
            for c in ("content_sha256", "embedding", "tokens", "truncated", "embedded_at", "run_id")
        )
        cur = self.conn.execute(
            sql.SQL(
                """INSERT INTO {store} AS t ({cols}) SELECT {cols} FROM {stage}
                ON CONFLICT (source_id) DO UPDATE SET {sets}
                WHERE t.content_sha256 IS DISTINCT FROM EXCLUDED.content_sha256"""
            ).format(store=self.t.store, cols=cols, stage=self.stage, sets=sets)
        )
        return cur.rowcount

    def _has_skips(self) -> bool:
        """Any skip record for this pair? (Saves a delete per batch in the common case.)"""
        return self.conn.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE source = %s AND space_fp = %s)").format(self.t.skipped),
            (self.t.source.name, self.t.space.fingerprint),
        ).fetchone()[0]

    def _write_skips(self, skips: list[Skip]) -> None:
        t = self.t
        with self.conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (source, space_fp, source_id, content_sha256, reason) VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT (source, space_fp, source_id) DO UPDATE SET content_sha256 = EXCLUDED.content_sha256,"
                    " reason = EXCLUDED.reason, at = now()"
                ).format(t.skipped),
                [(t.source.name, t.space.fingerprint, str(s.source_id), s.sha, s.reason) for s in skips],
            )
        # Whatever vector the store held for these rows was for content they no longer have.
        self.conn.execute(
            sql.SQL("DELETE FROM {} WHERE source_id = ANY({})").format(t.store, self._ids_param),
            ([s.source_id for s in skips],),
        )

    # -- one batch -------------------------------------------------------------------------
    def write(
        self,
        rows: Rows,
        has_row: np.ndarray,
        skips: list[Skip],
        run_id: int,
        done: tuple[sql.Composable, int] | None = None,
    ) -> WriteResult:
        """Store `rows` and `skips` and run `done` (the chunk's done-mark statement, taking the
        rows written and the chunk index) in one transaction.

        `has_row[i]` says the store already held a (stale) vector for row i when it was read.
        """
        t = self.t
        res = WriteResult()
        fp = t.space.fingerprint
        with self.conn.transaction():
            pause_point("before_copy")
            if len(rows):
                keep = self._current(rows)
                res.dropped = int((~keep).sum())
                if res.dropped:
                    rows, has_row = rows.take(np.flatnonzero(keep)), has_row[keep]
                fresh = np.flatnonzero(~has_row)
                stale = np.flatnonzero(has_row)
                if len(fresh):
                    sub = rows.take(fresh) if len(stale) else rows
                    try:
                        with self.conn.transaction():  # savepoint: a racing writer turns this into an upsert
                            self._copy(t.store, encode_parts(sub, t.source.id_type, fp, run_id, half=self.half), hook=True)
                        res.written += len(sub)
                    except psycopg.errors.UniqueViolation:
                        stale = np.arange(len(rows))
                if len(stale):
                    sub = rows.take(stale)
                    res.written += self._upsert_staged(encode_parts(sub, t.source.id_type, fp, run_id, half=self.half))
                    res.staged += len(sub)
                if self._has_skips():
                    self.conn.execute(
                        sql.SQL(
                            "DELETE FROM {} WHERE source = %s AND space_fp = %s AND source_id = ANY(%s::text[])"
                        ).format(t.skipped),
                        (t.source.name, fp, [str(i) for i in rows.ids]),
                    )
            if skips:
                self._write_skips(skips)
                res.skipped = len(skips)
            if done is not None:
                self.conn.execute(done[0], (res.written, done[1]))
            pause_point("after_copy")
        pause_point("after_commit")
        return res
