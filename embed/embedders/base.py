"""The embedder interface, its result type, its errors, and the checks every result passes.

Every provider returns vectors through `BaseEmbedder.embed`, which validates them (count,
dims, finite, non-zero) and normalizes them when the space says so, so no provider can hand
a bad vector to the store. Messages are one line and carry ids, counts and names only: never
input text, never secrets.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from embed.errors import EmbedError
from embed.spaces import Space

Kind = Literal["passage", "query"]
KINDS: tuple[str, ...] = ("passage", "query")
ENDPOINT_CLASSES: tuple[str, ...] = ("in-process", "loopback", "private-network", "cloud")


# --- errors -------------------------------------------------------------------------------
class EmbedConfigError(EmbedError):
    """A space's options cannot be used (missing model path, bad option value, dims mismatch)."""


class EmbedRefusedError(EmbedError):
    """An endpoint was refused by policy (cloud without an explicit allowance)."""


class EmbedInputError(EmbedError):
    """The caller passed something that is not a list of texts or not a valid kind."""


class EmbedResponseError(EmbedError):
    """A model or server returned something that is not a valid set of vectors for the space."""


class EmbedTransportError(EmbedError):
    """An endpoint could not be reached or kept failing after bounded retries."""


class EmbedRejectedError(EmbedError):
    """The endpoint refused these inputs (HTTP 400/413/422): the texts, not the endpoint, are the problem."""


# --- result -------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmbedResult:
    """Vectors for n texts, in input order. `truncated[i]` says text i was cut to max_tokens;
    `tokens[i]` is its token count as fed to the model (None where the provider cannot tell)."""

    vectors: np.ndarray  # float32, (n, space.dims)
    truncated: np.ndarray  # bool, (n,)
    tokens: np.ndarray | None = None  # int64, (n,)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


# --- interface ----------------------------------------------------------------------------
@runtime_checkable
class Embedder(Protocol):
    """One space's embedder. `embed` returns validated vectors of exactly `space.dims`."""

    space: Space
    endpoint_class: str  # one of ENDPOINT_CLASSES
    endpoint_reason: str  # how the class was decided (one line, no secrets)
    details: dict[str, Any]  # non-secret runtime facts for evidence (device, dtype, endpoint...)

    def embed(self, texts: list[str], kind: Kind) -> EmbedResult: ...

    def close(self) -> None: ...


# --- option helpers -----------------------------------------------------------------------
def opt_int(space: Space, key: str, default: int, *, minimum: int = 1) -> int:
    v = space.option(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise EmbedConfigError(f"space {space.name}: option {key} must be an integer >= {minimum}")
    return v


def opt_float(space: Space, key: str, default: float, *, minimum: float = 0.0) -> float:
    v = space.option(key, default)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v) or v < minimum:
        raise EmbedConfigError(f"space {space.name}: option {key} must be a number >= {minimum}")
    return float(v)


def opt_bool(space: Space, key: str, default: bool) -> bool:
    v = space.option(key, default)
    if not isinstance(v, bool):
        raise EmbedConfigError(f"space {space.name}: option {key} must be true or false")
    return v


def opt_str(space: Space, key: str, default: str | None = None, choices: tuple[str, ...] | None = None) -> str | None:
    v = space.option(key, default)
    if v is None:
        return None
    if not isinstance(v, str) or (choices is not None and v not in choices):
        allowed = f" (one of {', '.join(choices)})" if choices else ""
        raise EmbedConfigError(f"space {space.name}: option {key} must be a string{allowed}")
    return v


def opt_dict(space: Space, key: str) -> dict[str, Any]:
    v = space.option(key, None)
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise EmbedConfigError(f"space {space.name}: option {key} must be a mapping")
    return dict(v)


# --- validation ---------------------------------------------------------------------------
def check_texts(texts: Any, kind: Any) -> list[str]:
    if kind not in KINDS:
        raise EmbedInputError(f"kind must be 'passage' or 'query', got {kind!r}"[:120])
    if isinstance(texts, (str, bytes)) or not isinstance(texts, (list, tuple)):
        raise EmbedInputError("texts must be a list of strings")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise EmbedInputError(f"texts[{i}] is {type(t).__name__}, expected str")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            raise EmbedInputError(f"texts[{i}] is not valid Unicode (lone surrogate)") from None
    return list(texts)


def check_vectors(space: Space, vectors: Any, n: int, source: str) -> np.ndarray:
    """Validate n vectors for `space` and return them as float32, normalized if the space is.

    `source` names where they came from (e.g. 'endpoint 127.0.0.1:8080', 'model') for the
    message. Raises EmbedResponseError on any count, dims, NaN/inf or zero-vector problem.
    """
    try:
        arr = np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError):
        raise EmbedResponseError(f"{source} returned non-numeric vectors for space {space.name}") from None
    if arr.ndim != 2:
        if arr.ndim == 1 and arr.shape[0] == 0 and n == 0:
            return np.zeros((0, space.dims), dtype=np.float32)
        raise EmbedResponseError(f"{source} returned a {arr.ndim}-d array for space {space.name} (expected n x dims)")
    if arr.shape[0] != n:
        raise EmbedResponseError(f"{source} returned {arr.shape[0]} vectors for {n} inputs (space {space.name})")
    if arr.shape[1] != space.dims:
        raise EmbedResponseError(
            f"{source} returned {arr.shape[1]} dims for space {space.name} (expected {space.dims})"
        )
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise EmbedResponseError(
            f"{source} returned {int(bad.sum())} vector(s) with NaN/inf for space {space.name} "
            f"(first at position {int(np.argmax(bad))})"
        )
    norms = np.linalg.norm(arr, axis=1)
    zero = norms <= 1e-12
    if zero.any():
        raise EmbedResponseError(
            f"{source} returned {int(zero.sum())} zero vector(s) for space {space.name} "
            f"(first at position {int(np.argmax(zero))})"
        )
    if space.normalize:
        arr = arr / norms[:, None]
    out = arr.astype(np.float32)
    if not np.isfinite(out).all():  # float64 values beyond float32 range
        raise EmbedResponseError(f"{source} returned values out of float32 range for space {space.name}")
    return out


# --- shared behaviour ---------------------------------------------------------------------
def prefixed(space: Space, texts: list[str], kind: str) -> list[str]:
    p = space.query_prefix if kind == "query" else space.passage_prefix
    return [p + t for t in texts] if p else list(texts)


@dataclass
class Prepared:
    """What a provider hands back before validation."""

    vectors: Any
    truncated: np.ndarray
    tokens: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class BaseEmbedder:
    """Common part of every provider: input checks, validation, normalization, close."""

    provider = ""
    source = "model"  # how error messages name where vectors came from
    # Texts per `embed` call that a long fill makes (each call one step of its progress); None:
    # the whole batch in one call (FlagEmbedding re-runs its first batch on every call).
    call_rows: int | None = None

    def __init__(self, space: Space, endpoint_class: str, endpoint_reason: str) -> None:
        if endpoint_class not in ENDPOINT_CLASSES:
            raise ValueError(endpoint_class)
        self.space = space
        self.endpoint_class = endpoint_class
        self.endpoint_reason = endpoint_reason
        self.details: dict[str, Any] = {"provider": space.provider}
        self._closed = False
        self._lock = threading.Lock()

    def embed(self, texts: list[str], kind: Kind) -> EmbedResult:
        texts = check_texts(texts, kind)
        if self._closed:
            raise EmbedError(f"space {self.space.name}: embedder is closed")
        n = len(texts)
        if n == 0:
            return EmbedResult(
                vectors=np.zeros((0, self.space.dims), dtype=np.float32),
                truncated=np.zeros(0, dtype=bool),
                tokens=None,
            )
        prep = self._embed(texts, kind)
        vectors = check_vectors(self.space, prep.vectors, n, self.source)
        truncated = np.asarray(prep.truncated, dtype=bool)
        if truncated.shape != (n,):
            raise EmbedResponseError(f"{self.source}: truncation flags do not match {n} inputs")
        tokens = None if prep.tokens is None else np.asarray(prep.tokens, dtype=np.int64)
        return EmbedResult(vectors=vectors, truncated=truncated, tokens=tokens)

    def _embed(self, texts: list[str], kind: str) -> Prepared:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> BaseEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} space={self.space.name} endpoint={self.endpoint_class}>"
