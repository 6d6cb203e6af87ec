"""Labelled query sets a shadow run can judge quality with, without anyone writing labels.

  provenance  Honcho's own record of where a memory came from: every document its deriver writes
              cites the messages it was derived from (`documents.internal_metadata -> 'message_ids'`,
              `messages.id` values). For the documents source a query is a message and its
              relevant rows are the live documents derived from it in the same collection
              (workspace, observer, observed); for message_embeddings a query is a live document
              and its relevant rows are the chunk rows of the messages it cites, searched across
              its workspace. Recognised by shape: a source table named `documents` with
              `internal_metadata`, next to `messages` and `message_embeddings`.
  known-item  for any other source: a sentence (or the first half) of a sampled row as the query,
              that row as its one relevant row. It favours lexical overlap, so it is named as such.
  seeded      the labelled set `embed honcho seed` writes to embed_eval (documents only).
  file        hand-written qrels (with --query-set).

Each query carries its text (embedded only by a space whose stored vectors cannot serve as
queries), the ids of the rows holding its text in a source (`rows` in `row_source`: a
message's chunk rows, a document's own row) so a space can read its query vector instead of
computing it, its tenant filter, and a language pair guessed from the texts ('pl->en+pl').
Texts stay in this process: results carry qids, counts and exclusion reasons only.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import polars as pl
import psycopg
from psycopg import sql

from embed.config import Config, Source
from embed.db.idents import column, qualified
from embed.shadow.inputs import TextQueries

KINDS = ("provenance", "known-item", "seeded", "file")
MAX_DERIVED = 20  # a message with more derived documents (a dump, a summary) is no single question
KNOWN_ITEM_MIN_WORDS = 6
QRELS_SCHEMA = {"qid": pl.String, "doc_id": pl.String, "relevance": pl.Int64}

_PL_WORDS = frozenset(
    "w na się jest nie z do że to od po ma mam jak co czy jako oraz we za u lat roku się mieszka "
    "pracuje lubi chodzi bardzo zwykle jestem mój moja był była".split()
)
_EN_WORDS = frozenset("the and is to of in on for has was with at my by as it be are have his her lives works".split())
_PL_LETTERS = re.compile(r"[ąćęłńóśźż]")
_WORD = re.compile(r"[^\W\d_]+")


def guess_lang(text: str) -> str | None:
    """'pl' or 'en' by common words and Polish letters in lower-case words (names are capitalised,
    so an English sentence about Łukasz stays English); None when nothing tells."""
    pl_score = en_score = 0
    for w in _WORD.findall(text):
        low = w.lower()
        pl_score += low in _PL_WORDS or (w == low and bool(_PL_LETTERS.search(w)))
        en_score += low in _EN_WORDS
    if pl_score == en_score:
        return None
    return "pl" if pl_score > en_score else "en"


def lang_pair(query: str | None, docs: Sequence[str | None]) -> str | None:
    """'pl->en+pl' style: the query's language, then the sorted set of its relevant rows' languages."""
    langs = sorted({d for d in docs if d})
    return f"{query}->{'+'.join(langs)}" if query and langs else None


@dataclass(frozen=True)
class Labelled:
    """Queries with their relevant rows, ready to rank: everything but the texts may be reported."""

    kind: str
    qids: tuple[str, ...]
    texts: tuple[str, ...]
    tenants: tuple[tuple[Any, ...], ...]  # a prefix of the source's tenant columns
    lang_pairs: tuple[str | None, ...]
    qrels: pl.DataFrame | None
    name: str = ""
    rows: tuple[tuple[str, ...], ...] | None = None  # per query: ids of rows of `row_source` holding its text
    row_source: str | None = None
    excluded: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.qids)

    def subset(self, keep: Sequence[str], reason: str | None = None) -> Labelled:
        """These queries restricted to `keep` (in this order), the others counted under `reason`."""
        pos = {q: i for i, q in enumerate(self.qids)}
        idx = [pos[q] for q in keep]
        excluded = dict(self.excluded)
        if reason and len(idx) < len(self.qids):
            excluded[reason] = excluded.get(reason, 0) + len(self.qids) - len(idx)

        def pick(xs: Sequence[Any]) -> tuple[Any, ...]:
            return tuple(xs[i] for i in idx)

        return replace(
            self,
            qids=pick(self.qids),
            texts=pick(self.texts),
            tenants=pick(self.tenants),
            lang_pairs=pick(self.lang_pairs),
            rows=pick(self.rows) if self.rows is not None else None,
            qrels=self.qrels.filter(pl.col("qid").is_in(list(keep))) if self.qrels is not None else None,
            excluded=excluded,
        )


def from_text(tq: TextQueries, kind: str) -> Labelled:
    """A seeded or file query set as labelled queries (their texts are embedded by every space)."""
    return Labelled(kind, tq.qids, tq.texts, tq.tenants, tq.lang_pairs, tq.qrels, name=tq.qrels_name or tq.name)


def capped(lab: Labelled, limit: int, seed: int) -> Labelled:
    """At most `limit` queries, a seeded sample in qid order; the rest counted as 'over --queries'."""
    if len(lab) <= limit:
        return lab
    rng = np.random.default_rng([seed, 0x1ABE1])
    pick = np.sort(rng.choice(len(lab), limit, replace=False))
    return lab.subset([lab.qids[i] for i in pick], "over --queries")


# ----------------------------------------------------------------------------- Honcho provenance


@dataclass(frozen=True)
class Honcho:
    """Honcho's three tables around a source, and which declared sources read them."""

    documents: Source | None
    message_embeddings: Source | None
    messages: sql.Identifier


def _relname(source: Source) -> str:
    return source.schema_table[1]


def _has_columns(conn: psycopg.Connection, schema: str, table: str, cols: Sequence[str]) -> bool:
    got = {
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            (schema, table),
        ).fetchall()
    }
    return set(cols) <= got


def honcho_tables(conn: psycopg.Connection, cfg: Config, source: Source) -> Honcho | None:
    """Honcho's provenance around `source` (documents or message_embeddings), if this is Honcho."""
    schema, rel = source.schema_table
    if rel not in ("documents", "message_embeddings"):
        return None
    need = {
        "documents": ("id", "content", "internal_metadata"),
        "messages": ("id", "public_id", "content"),
        "message_embeddings": ("id", "content", "message_id"),
    }
    if not all(_has_columns(conn, schema, t, cols) for t, cols in need.items()):
        return None
    by_rel = {_relname(s): s for s in cfg.sources.values() if s.schema_table[0] == schema}
    by_rel[rel] = source
    return Honcho(by_rel.get("documents"), by_rel.get("message_embeddings"), sql.Identifier(schema, "messages"))


_CITED = """SELECT d.{id}::text AS doc_id, d.content AS doc_text, ({live}) AS live, v.x::bigint AS message_id{tenants}
    FROM {docs} AS d CROSS JOIN LATERAL jsonb_array_elements_text(
      CASE WHEN jsonb_typeof(d.internal_metadata -> 'message_ids') = 'array'
           THEN d.internal_metadata -> 'message_ids' ELSE '[]'::jsonb END) AS v(x)
    WHERE v.x ~ '^[0-9]{{1,18}}$'"""


def _norm(text: str | None) -> str:
    return " ".join((text or "").split()).lower()


@dataclass(frozen=True)
class _Rel:
    """A source's table, id, text and live filter as SQL pieces (no space involved)."""

    source: Source

    @property
    def src(self) -> sql.Composable:
        return qualified(self.source.table)

    @property
    def id(self) -> sql.Identifier:
        return column(self.source.id_column)

    @property
    def text(self) -> sql.Identifier:
        return column(self.source.text_column)

    @property
    def live(self) -> sql.SQL:
        return sql.SQL(self.source.live_filter)

    @property
    def id_type(self) -> sql.SQL:
        return sql.SQL(self.source.id_type)


def provenance_documents(conn: psycopg.Connection, source: Source, h: Honcho) -> Labelled:
    """documents: a message as the query, the live documents derived from it (same collection) as relevant."""
    t = _Rel(source)
    tcols = sql.SQL("").join(sql.SQL(", d.{}").format(column(c)) for c in source.tenant_columns)
    cited = sql.SQL(_CITED).format(id=t.id, live=t.live, tenants=tcols, docs=t.src)
    rows = conn.execute(
        sql.SQL("SELECT c.*, m.public_id, m.content FROM ({}) AS c JOIN {} AS m ON m.id = c.message_id").format(
            cited, h.messages
        )
    ).fetchall()
    n_t = len(source.tenant_columns)
    groups: dict[tuple[int, tuple[Any, ...]], list[tuple[str, str]]] = {}
    message: dict[int, tuple[str, str]] = {}
    why: Counter[str] = Counter()
    for doc_id, doc_text, live, mid, *rest in rows:
        tenant, (public_id, text) = tuple(rest[:n_t]), rest[n_t:]
        message[mid] = (public_id, text or "")
        if not live:
            why["deleted document (pairs)"] += 1
        elif not (doc_text or "").strip():
            why["blank document (pairs)"] += 1
        elif _norm(doc_text) == _norm(text):
            why["document text equals its message (pairs)"] += 1
        else:
            groups.setdefault((mid, tenant), []).append((doc_id, doc_text))
    chunks = _chunks_of(conn, h, [message[m][0] for m, _ in groups]) if h.message_embeddings else {}
    tenants_of = Counter(m for m, _ in groups)  # a message cited in two collections: one query in each
    out: list[tuple[str, str, tuple[Any, ...], str | None, list[str], tuple[str, ...]]] = []
    for (mid, tenant), docs in sorted(groups.items(), key=lambda g: (g[0][0], [str(v) for v in g[0][1]])):
        public_id, text = message[mid]
        if not text.strip():
            why["blank message"] += 1
            continue
        if len(docs) > MAX_DERIVED:
            why[f"message with over {MAX_DERIVED} derived documents"] += 1
            continue
        qid = f"msg:{mid}" + ("" if tenants_of[mid] == 1 else f"@{'/'.join(map(str, tenant))}")
        pair = lang_pair(guess_lang(text), [guess_lang(d) for _, d in docs])
        out.append((qid, text, tenant, pair, [d for d, _ in docs], tuple(chunks.get(public_id, ()))))
    return _labelled("provenance", out, h.message_embeddings.name if h.message_embeddings else None, why)


def _chunks_of(conn: psycopg.Connection, h: Honcho, public_ids: Sequence[str]) -> dict[str, list[str]]:
    """Chunk row ids (message_embeddings.id as text) per message public id, live rows only."""
    assert h.message_embeddings is not None
    t = _Rel(h.message_embeddings)
    rows = conn.execute(
        sql.SQL(
            "SELECT e.message_id, e.{id}::text FROM {src} AS e WHERE ({live}) AND e.message_id = ANY(%s) ORDER BY 2"
        ).format(id=t.id, src=t.src, live=t.live),
        (list(public_ids),),
    ).fetchall()
    out: dict[str, list[str]] = {}
    for public_id, rid in rows:
        out.setdefault(public_id, []).append(rid)
    return out


def provenance_messages(conn: psycopg.Connection, source: Source, h: Honcho) -> Labelled:
    """message_embeddings: a live document as the query, the chunk rows of the messages it cites
    (in its workspace) as relevant; the search is filtered on the workspace alone."""
    assert h.documents is not None
    d, e = _Rel(h.documents), _Rel(source)
    ws = column(source.tenant_columns[0]) if source.tenant_columns else None
    cited = sql.SQL(_CITED).format(id=d.id, live=d.live, tenants=sql.SQL(", d.workspace_name"), docs=d.src)
    rows = conn.execute(
        sql.SQL(
            "SELECT c.doc_id, c.doc_text, c.live, c.workspace_name, e.{eid}::text, e.{etext}, {ews}"
            " FROM ({cited}) AS c JOIN {msgs} AS m ON m.id = c.message_id"
            " JOIN (SELECT * FROM {esrc} WHERE ({elive})) AS e ON e.message_id = m.public_id"
        ).format(
            eid=e.id,
            etext=e.text,
            ews=sql.SQL("e.{}::text").format(ws) if ws else sql.SQL("NULL::text"),
            cited=cited,
            msgs=h.messages,
            esrc=e.src,
            elive=e.live,
        )
    ).fetchall()
    why: Counter[str] = Counter()
    groups: dict[str, list[tuple[str, str]]] = {}
    doc: dict[str, tuple[str, str]] = {}
    deleted: set[str] = set()
    for doc_id, doc_text, live, doc_ws, chunk_id, chunk_text, chunk_ws in rows:
        doc[doc_id] = (doc_text or "", doc_ws)
        if not live or not (doc_text or "").strip():
            deleted.add(doc_id)
            continue
        if chunk_ws is not None and str(chunk_ws) != str(doc_ws):
            why["chunk in another workspace (pairs)"] += 1
        elif _norm(chunk_text) == _norm(doc_text):
            why["document text equals its message (pairs)"] += 1
        else:
            groups.setdefault(doc_id, []).append((chunk_id, chunk_text or ""))
    why["deleted or blank document"] = len(deleted)
    out = []
    for doc_id, chunks in sorted(groups.items()):
        text, doc_ws = doc[doc_id]
        if len(chunks) > MAX_DERIVED:
            why[f"document citing over {MAX_DERIVED} chunk rows"] += 1
            continue
        pair = lang_pair(guess_lang(text), [guess_lang(c) for _, c in chunks])
        out.append((f"doc:{doc_id}", text, (doc_ws,), pair, [c for c, _ in chunks], (doc_id,)))
    return _labelled("provenance", out, h.documents.name if h.documents else None, why)


def _labelled(
    kind: str,
    out: Sequence[tuple[str, str, tuple[Any, ...], str | None, Sequence[str], tuple[str, ...]]],
    row_source: str | None,
    why: Mapping[str, int],
) -> Labelled:
    qrels = pl.DataFrame(
        [(q, doc, 1) for q, _, _, _, docs, _ in out for doc in docs], schema=QRELS_SCHEMA, orient="row"
    )
    return Labelled(
        kind=kind,
        qids=tuple(o[0] for o in out),
        texts=tuple(o[1] for o in out),
        tenants=tuple(o[2] for o in out),
        lang_pairs=tuple(o[3] for o in out),
        qrels=qrels,
        rows=tuple(o[5] for o in out) if row_source else None,
        row_source=row_source,
        excluded={k: v for k, v in why.items() if v},
    )


# ----------------------------------------------------------------------------- known items

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _known_span(text: str) -> str | None:
    """The longest sentence of a multi-sentence text, else its first half; None when too short."""
    words = text.split()
    if len(words) < KNOWN_ITEM_MIN_WORDS:
        return None
    sentences = [s.strip() for s in _SENTENCE.split(text.strip()) if len(s.split()) >= KNOWN_ITEM_MIN_WORDS // 2]
    if len(sentences) > 1:
        return max(sentences, key=len)
    return " ".join(words[: max(KNOWN_ITEM_MIN_WORDS // 2, len(words) // 2)])


def known_items(conn: psycopg.Connection, source: Source, limit: int, seed: int) -> Labelled:
    """Known-item queries: a span of each sampled live row, that row as the one relevant row."""
    t = _Rel(source)
    tcols = sql.SQL("").join(sql.SQL(", {}").format(column(c)) for c in source.tenant_columns)
    ids = [
        r[0]
        for r in conn.execute(
            sql.SQL("SELECT {id}::text FROM {src} WHERE ({live}) ORDER BY 1").format(id=t.id, src=t.src, live=t.live)
        ).fetchall()
    ]
    rng = np.random.default_rng([seed, 0x4B1])
    pick = sorted(rng.choice(len(ids), min(len(ids), 2 * limit + 10), replace=False).tolist()) if ids else []
    rows = conn.execute(
        sql.SQL("SELECT {id}::text, {text}{tcols} FROM {src} WHERE {id} = ANY(%s::{typ}[]) ORDER BY 1").format(
            id=t.id, text=t.text, tcols=tcols, src=t.src, typ=t.id_type
        ),
        ([ids[i] for i in pick],),
    ).fetchall()
    why: Counter[str] = Counter()
    out = []
    for rid, text, *tenant in rows:
        span = _known_span(text or "")
        if span is None:
            why[f"text under {KNOWN_ITEM_MIN_WORDS} words"] += 1
            continue
        lang = guess_lang(span)
        out.append((f"ki:{rid}", span, tuple(tenant), lang_pair(lang, [lang]), [rid], ()))
    lab = _labelled("known-item", out, None, why)
    return capped(lab, limit, seed)


def provenance(conn: psycopg.Connection, cfg: Config, source: Source) -> Labelled | None:
    """Honcho's provenance labels for `source`, or None when the source is not Honcho-shaped."""
    h = honcho_tables(conn, cfg, source)
    if h is None:
        return None
    if _relname(source) == "documents":
        return provenance_documents(conn, source, h)
    return provenance_messages(conn, source, h) if h.documents else None
