"""Endpoint classification and the cloud refusal (no connection may be opened for a refused space)."""

from __future__ import annotations

import socket
import sys
import threading

import pytest

from embed.embedders import EmbedConfigError, EmbedRefusedError, get_embedder
from embed.embedders.endpoint import address_class, classify, safe_url
from embed.errors import EmbedError
from embed.spaces import Space

# --- a real observation of outgoing connections: the interpreter's audit hook -----------------
# Audit hooks cannot be removed, so one hook is installed for the session and only counts while
# a test has armed it.
_connects: list[tuple[object, ...]] = []
_armed = threading.Event()


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _armed.is_set() and event == "socket.connect":
        _connects.append(args[1:])


sys.addaudithook(_audit)


class connections_observed:
    def __enter__(self) -> list[tuple[object, ...]]:
        _connects.clear()
        _armed.set()
        return _connects

    def __exit__(self, *exc: object) -> None:
        _armed.clear()


def http_space(endpoint: str, **options: object) -> Space:
    return Space(
        name="remote",
        provider="openai",
        model="text-embedding-3-small",
        revision="2024-01-25",
        dims=8,
        options={"endpoint": endpoint, **options},
    )


# --- classify -------------------------------------------------------------------------------
def test_in_process_when_no_url() -> None:
    assert classify(None)[0] == "in-process"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080/v1", "loopback"),
        ("http://localhost:11434", "loopback"),
        ("http://[::1]:8080/v1", "loopback"),
        ("http://127.8.9.10", "loopback"),
        ("http://0.0.0.0:8080", "loopback"),
        ("http://10.1.2.3:8080/v1", "private-network"),
        ("http://172.20.0.5/v1", "private-network"),
        ("http://192.168.1.20:11434", "private-network"),
        ("http://100.101.102.103:8080", "private-network"),  # CGNAT / Tailscale
        ("http://169.254.10.10", "private-network"),
        ("http://[fd12:3456::1]:8080", "private-network"),
        ("http://[fe80::1]:8080", "private-network"),
        ("http://[::ffff:10.0.0.1]/v1", "private-network"),
        ("https://8.8.8.8/v1", "cloud"),
        ("http://172.32.0.1", "cloud"),  # just outside 172.16/12
        ("http://192.0.2.10", "cloud"),  # documentation range: not known private, so cloud
        ("http://[2001:4860:4860::8888]", "cloud"),
    ],
)
def test_classify_addresses(url: str, expected: str) -> None:
    cls, reason = classify(url)
    assert cls == expected, reason
    assert "\n" not in reason


def test_unresolvable_host_is_cloud() -> None:
    cls, reason = classify("https://embeddings.invalid/v1")  # .invalid never resolves (RFC 6761)
    assert cls == "cloud"
    assert "did not resolve" in reason


def test_public_name_is_cloud_with_or_without_network() -> None:
    # With network it resolves to public addresses; without, it does not resolve. Cloud both ways.
    assert classify("https://api.openai.com/v1")[0] == "cloud"


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http://", "not a url", "", "http://host:99999/"])
def test_bad_urls_are_clear_errors(url: str) -> None:
    with pytest.raises(EmbedError):
        classify(url)


def test_address_class_mapped_and_zone() -> None:
    assert address_class("::ffff:127.0.0.1") == "loopback"
    assert address_class("fe80::1%eth0") == "private-network"


def test_safe_url_drops_userinfo_and_query() -> None:
    u = safe_url("https://user:s3cret@api.example.com:8443/v1?api-key=s3cret#frag")
    assert u == "https://api.example.com:8443/v1"
    assert "s3cret" not in u


# --- refusal --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "endpoint", ["https://api.openai.com/v1", "https://embeddings.invalid/v1", "http://8.8.8.8/v1"]
)
def test_cloud_refused_without_flag_and_no_connection(endpoint: str) -> None:
    with connections_observed() as seen:
        with pytest.raises(EmbedRefusedError) as exc:
            get_embedder(http_space(endpoint))
    assert seen == []
    msg = str(exc.value)
    assert "cloud" in msg and "allow" in msg and "\n" not in msg


def test_refusal_comes_before_the_api_key_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMBED_TEST_KEY", raising=False)
    with pytest.raises(EmbedRefusedError):
        get_embedder(http_space("https://api.openai.com/v1", api_key_env="EMBED_TEST_KEY"))


def test_cloud_allowed_by_flag_or_option_opens_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBED_TEST_KEY", "sk-test-not-a-real-key")
    with connections_observed() as seen:
        emb = get_embedder(http_space("https://api.openai.com/v1", api_key_env="EMBED_TEST_KEY"), allow_cloud=True)
        emb2 = get_embedder(http_space("https://api.openai.com/v1", allow_cloud=True))
    assert seen == []  # construction is lazy: the first embed() would connect
    assert emb.endpoint_class == "cloud" and emb2.endpoint_class == "cloud"
    assert "sk-test" not in repr(emb.details) and "sk-test" not in repr(emb)
    emb.close()
    emb2.close()


def test_option_allow_cloud_must_be_true_not_truthy() -> None:
    with pytest.raises(EmbedRefusedError):
        get_embedder(http_space("https://api.openai.com/v1", allow_cloud="yes"))


def test_loopback_and_private_need_no_flag() -> None:
    with connections_observed() as seen:
        a = get_embedder(http_space("http://127.0.0.1:9/v1"))
        b = get_embedder(http_space("http://10.255.255.1:8080/v1"))
    assert seen == []
    assert (a.endpoint_class, b.endpoint_class) == ("loopback", "private-network")
    a.close()
    b.close()


def test_audit_hook_does_see_real_connections() -> None:
    # The observation above means something: a real connect is counted.
    srv = socket.create_server(("127.0.0.1", 0))
    with connections_observed() as seen:
        c = socket.create_connection(srv.getsockname())
    c.close()
    srv.close()
    assert len(seen) == 1


def test_http_space_without_endpoint_is_config_error() -> None:
    sp = Space(name="remote", provider="ollama", model="bge-m3", revision="x", dims=8, options={})
    with pytest.raises(EmbedConfigError):
        get_embedder(sp)
