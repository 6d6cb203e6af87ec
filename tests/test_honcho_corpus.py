"""The synthetic Honcho corpus: deterministic, the promised sizes, the edge texts and a labelled
query set that covers every query/document language pair. Pure Python, no database."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from embed.honcho.synthetic.corpus import CHUNK_CHARS, SCALES, Corpus, generate

ROOT = Path(__file__).resolve().parent.parent
NANOID = re.compile(r"^[A-Za-z0-9_-]{21}$")
PL_LETTERS = set("ąćęłńóśźżĄĆĘŁŃÓŚŹŻ")


@pytest.fixture(scope="module")
def small() -> Corpus:
    return generate()


@pytest.fixture(scope="module")
def honcho() -> Corpus:
    return generate(7, *SCALES["honcho"])


def digest(c: Corpus) -> str:
    return hashlib.sha256(pickle.dumps(c, protocol=5)).hexdigest()


def test_same_seed_gives_byte_identical_rows(small: Corpus) -> None:
    again = generate()
    assert again == small
    assert digest(again) == digest(small)


def test_output_does_not_depend_on_the_interpreter_hash_seed(small: Corpus) -> None:
    # set/dict iteration order must never leak into the rows
    code = (
        "import hashlib, pickle; from embed.honcho.synthetic.corpus import generate;"
        "print(hashlib.sha256(pickle.dumps(generate(), protocol=5)).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == digest(small)


def test_another_seed_gives_other_rows(small: Corpus) -> None:
    other = generate(seed=8)
    assert [d["id"] for d in other.documents] != [d["id"] for d in small.documents]
    assert [d["content"] for d in other.documents] != [d["content"] for d in small.documents]


def test_default_sizes_are_exact(small: Corpus) -> None:
    sizes = small.sizes()
    assert (sizes["documents"], sizes["message_embeddings"]) == SCALES["small"]
    assert sizes["messages"] < sizes["message_embeddings"]  # long messages are chunked
    assert sizes["workspaces"] >= 3 and sizes["peers"] > 10 and sizes["sessions"] > sizes["peers"] / 2
    assert sizes["queries"] >= 24 and sizes["qrels"] >= sizes["queries"]


def test_honcho_scale_sizes_and_speed() -> None:
    start = time.perf_counter()
    c = generate(7, *SCALES["honcho"])
    elapsed = time.perf_counter() - start
    assert (len(c.documents), len(c.message_embeddings)) == (26141, 13558)
    assert 10_000 < len(c.messages) < 13558
    assert elapsed < 60, f"honcho scale took {elapsed:.1f}s"


def test_ids_are_unique_nanoids(honcho: Corpus) -> None:
    ids = [r["id"] for t in (honcho.workspaces, honcho.peers, honcho.sessions, honcho.collections, honcho.documents) for r in t]
    ids += [m["public_id"] for m in honcho.messages]
    assert all(NANOID.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert [m["id"] for m in honcho.messages] == list(range(1, len(honcho.messages) + 1))


def test_rows_reference_each_other_like_honchos_foreign_keys(honcho: Corpus) -> None:
    workspaces = {w["name"] for w in honcho.workspaces}
    peers = {(p["name"], p["workspace_name"]) for p in honcho.peers}
    sessions = {(s["name"], s["workspace_name"]) for s in honcho.sessions}
    collections = {(c["observer"], c["observed"], c["workspace_name"]) for c in honcho.collections}
    messages = {m["public_id"]: m for m in honcho.messages}
    message_ids = {m["id"] for m in honcho.messages}
    assert all(p[1] in workspaces for p in peers)
    assert all((c[0], c[2]) in peers and (c[1], c[2]) in peers for c in collections)
    for d in honcho.documents:
        assert (d["observer"], d["observed"], d["workspace_name"]) in collections
        assert d["session_name"] is None or (d["session_name"], d["workspace_name"]) in sessions
        assert set(d["internal_metadata"]["message_ids"]) <= message_ids
    for m in honcho.messages:
        assert (m["session_name"], m["workspace_name"]) in sessions
        assert (m["peer_name"], m["workspace_name"]) in peers
    for e in honcho.message_embeddings:
        m = messages[e["message_id"]]
        assert (e["workspace_name"], e["session_name"], e["peer_name"]) == (
            m["workspace_name"], m["session_name"], m["peer_name"],
        )
    seqs = Counter((m["workspace_name"], m["session_name"], m["seq_in_session"]) for m in honcho.messages)
    assert max(seqs.values()) == 1


def test_edge_texts_are_present(small: Corpus) -> None:
    for rows in (small.documents, small.message_embeddings):
        texts = [r["content"] for r in rows]
        assert "" in texts
        assert any(t and not t.strip() for t in texts)  # whitespace only
        assert any(any(ord(ch) >= 0x1F300 for ch in t) for t in texts)  # emoji
        assert any(PL_LETTERS & set(t) for t in texts)
        assert max(Counter(texts).values()) > 1  # identical content repeats across rows
        assert not any("\x00" in t for t in texts)
    assert any(len(d["content"]) > 8000 for d in small.documents)
    assert any(len(m["content"]) > 8000 for m in small.messages)
    langs = Counter(d["internal_metadata"]["synthetic"]["lang"] for d in small.documents)
    assert langs["pl"] > 300 and langs["en"] > 300 and langs["mixed"] >= 1


def test_chunk_rows_old_style_repeat_the_message_new_style_split_it(honcho: Corpus) -> None:
    rows_by_message: dict[str, list[str]] = {}
    for e in honcho.message_embeddings:
        rows_by_message.setdefault(e["message_id"], []).append(e["content"])
    old = new = 0
    for m in honcho.messages:
        chunks = rows_by_message[m["public_id"]]
        if len(chunks) == 1:
            assert chunks == [m["content"]]
        elif all(c == m["content"] for c in chunks):
            old += 1
        else:
            assert "".join(chunks) == m["content"]
            assert all(len(c) <= CHUNK_CHARS for c in chunks)
            new += 1
    assert old > 5 and new > 5


def test_some_documents_are_soft_deleted(honcho: Corpus) -> None:
    deleted = [d for d in honcho.documents if d["deleted_at"] is not None]
    assert 0.02 < len(deleted) / len(honcho.documents) < 0.04
    assert all(d["deleted_at"] > d["created_at"] for d in deleted)
    assert {d["level"] for d in honcho.documents} == {"explicit", "deductive", "inductive", "contradiction"}
    assert all(d["sync_state"] == "pending" and "embedding" not in d for d in honcho.documents)


def test_documents_restate_the_message_they_cite(honcho: Corpus) -> None:
    """Provenance as Honcho's deriver leaves it: a document's message_ids cite the user message
    that stated its fact (same workspace, session and peer; its numbers repeated), and a share of
    them restates it in the other language."""
    messages = {m["id"]: m for m in honcho.messages}
    derived = [d for d in honcho.documents if d["internal_metadata"]["message_ids"]]
    assert len(derived) > 0.5 * len(honcho.documents)  # the rest: facts no seeded message stated
    crossed = restated = 0
    for d in derived:
        (mid,) = d["internal_metadata"]["message_ids"]
        m = messages[mid]
        assert (m["workspace_name"], m["session_name"], m["peer_name"]) == (
            d["workspace_name"], d["session_name"], d["observed"],
        )
        restated += set(re.findall(r"\d+", d["content"])) <= set(re.findall(r"\d+", m["content"]))
        assert m["created_at"] < d["created_at"]
        said = "pl" if PL_LETTERS & set(m["content"]) else "en"
        crossed += d["internal_metadata"]["synthetic"]["lang"] != said
    assert restated / len(derived) > 0.95  # a birth year is the deriver's addition to "my birthday is on ..."
    assert 0.15 < crossed / len(derived) < 0.6
    per_message = Counter(mid for d in derived for mid in d["internal_metadata"]["message_ids"])
    assert max(per_message.values()) <= 24


@pytest.mark.parametrize("name", ["small", "honcho"])
def test_qrels_cover_every_language_pair(name: str, request: pytest.FixtureRequest) -> None:
    c: Corpus = request.getfixturevalue(name)
    docs = {d["id"]: d for d in c.documents}
    pairs: Counter[tuple[str, str]] = Counter()
    for q in c.queries:
        rel = c.qrels[q["qid"]]
        assert rel and all(v >= 1 for v in rel.values())
        langs = set()
        for doc_id in rel:
            d = docs[doc_id]
            assert d["deleted_at"] is None and d["content"].strip()
            assert (d["workspace_name"], d["observer"], d["observed"]) == (
                q["workspace_name"], q["observer"], q["observed"],
            )
            lang = d["internal_metadata"]["synthetic"]["lang"]
            langs.add(lang)
            pairs[q["lang"], lang] += 1
        assert "+".join(sorted(langs)) == q["doc_langs"]
    assert {("pl", "pl"), ("pl", "en"), ("en", "pl"), ("en", "en")} <= set(pairs)
    # purely cross-lingual queries exist: every relevant document is in the other language
    strata = Counter((q["lang"], q["doc_langs"]) for q in c.queries)
    assert strata["pl", "en"] > 0 and strata["en", "pl"] > 0 and strata["pl", "en+pl"] > 0
    assert {q["lang"] for q in c.queries} == {"pl", "en"}
    assert len({q["qid"] for q in c.queries}) == len(c.queries)


@pytest.mark.parametrize("args", [(1, 0, 0), (1, 1, 1), (3, 120, 60), (2, 50, 10)])
def test_tiny_sizes_are_exact(args: tuple[int, int, int]) -> None:
    c = generate(*args)
    assert (len(c.documents), len(c.message_embeddings)) == args[1:]


def test_rejects_negative_sizes() -> None:
    with pytest.raises(ValueError):
        generate(documents=-1)
