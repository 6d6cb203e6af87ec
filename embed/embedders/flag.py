"""In-process BGE-M3 through FlagEmbedding's `BGEM3FlagModel` (dense vectors only).

Options: path (a local model directory) or path_env (the name of an env var holding it);
dtype fp16 | bf16 | fp32 (default fp16; applies on CUDA only); device auto | cpu | cuda | cuda:N
(default auto: cuda:0 when torch sees a GPU); batch_size (default 64); threads (torch
intra-op threads, process-wide; default torch's).

FlagEmbedding traps handled here (FlagEmbedding 1.4.2):
- a missing local path makes it download from the Hub: the directory is checked first, and
  HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are set before it is imported;
- `devices=None` starts a process pool per GPU: devices is always one explicit device;
- on CPU it calls `model.float()` after loading, so fp16/bf16 weights would be rounded to half
  precision and then widened: on CPU it is always loaded in fp32 (details say so);
- each `encode()` re-runs its first (longest) batch as a probe, so the whole list goes to one
  call, never per batch; the probe silently shrinks batch_size on *any* RuntimeError, so
  max_tokens is checked against the model's position limit up front;
- passage/query max_length default to 512: both are set to the space's max_tokens.
Token counts and truncation flags come from the model's own tokenizer (one extra tokenization).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from embed.embedders.base import BaseEmbedder, EmbedConfigError, Prepared, opt_int, opt_str, prefixed
from embed.spaces import Space

_HEX40 = re.compile(r"^[0-9a-f]{40}$")


def model_dir(space: Space) -> Path:
    """The local model directory of a space, or a clear error. Never a Hub name."""
    path = opt_str(space, "path")
    how = "option path"
    if not path:
        env = opt_str(space, "path_env")
        if not env:
            raise EmbedConfigError(f"space {space.name}: set option path or path_env to a local model directory")
        path = os.environ.get(env)
        how = f"env {env}"
        if not path:
            raise EmbedConfigError(f"space {space.name}: {env} is not set (it must name a local model directory)")
    p = Path(path).expanduser()
    if not p.is_dir():
        raise EmbedConfigError(f"space {space.name}: model directory from {how} does not exist: {p}")
    if not (p / "config.json").is_file():
        raise EmbedConfigError(f"space {space.name}: model directory from {how} has no config.json: {p}")
    snap = Path(os.path.abspath(p)).name  # HF cache layout: .../snapshots/<commit>/
    if _HEX40.fullmatch(snap) and snap != space.revision:
        raise EmbedConfigError(
            f"space {space.name}: model directory is snapshot {snap[:12]}, space declares revision {space.revision[:12]}"
        )
    return p


def offline_hub() -> None:
    """Never reach for the Hub, and keep the library's weight-loading bars off the operator's terminal."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def set_torch_threads(space: Space) -> int | None:
    """Apply option `threads` (torch intra-op threads; process-wide) and return it."""
    if space.option("threads") is None:
        return None
    n = opt_int(space, "threads", 1)
    import torch

    torch.set_num_threads(n)
    return n


def _device(space: Space) -> str:
    dev = opt_str(space, "device", "auto")
    if dev == "auto":
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if dev == "cuda":
        dev = "cuda:0"
    if dev != "cpu" and not re.fullmatch(r"cuda:\d+", dev):
        raise EmbedConfigError(f"space {space.name}: device must be auto, cpu, cuda or cuda:N")
    return dev


class FlagEmbedder(BaseEmbedder):
    provider = "flagembedding"
    source = "FlagEmbedding"

    def __init__(self, space: Space, endpoint_class: str, endpoint_reason: str) -> None:
        super().__init__(space, endpoint_class, endpoint_reason)
        path = model_dir(space)
        dtype = opt_str(space, "dtype", "fp16", choices=("fp16", "bf16", "fp32"))
        self.batch_size = opt_int(space, "batch_size", 64)
        offline_hub()
        device = _device(space)
        threads = set_torch_threads(space)
        self.endpoint_reason = f"in-process FlagEmbedding BGEM3FlagModel on {device}"
        run_dtype = dtype if device.startswith("cuda") else "fp32"
        try:
            from FlagEmbedding import BGEM3FlagModel
        except ImportError as e:
            raise EmbedConfigError(
                f"space {space.name}: FlagEmbedding cannot be imported ({type(e).__name__})"
            ) from None
        try:
            self.model = BGEM3FlagModel(
                str(path),
                normalize_embeddings=space.normalize,
                use_fp16=run_dtype == "fp16",
                use_bf16=run_dtype == "bf16",
                devices=[device],
                batch_size=self.batch_size,
                query_max_length=space.max_tokens,
                passage_max_length=space.max_tokens,
                return_dense=True,
                return_sparse=False,
                return_colbert_vecs=False,
            )
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            raise EmbedConfigError(f"space {space.name}: model in {path} failed to load ({type(e).__name__})") from None
        cfg = self.model.model.model.config
        if cfg.hidden_size != space.dims:
            raise EmbedConfigError(
                f"space {space.name}: model makes {cfg.hidden_size} dims, space declares {space.dims}"
            )
        limit = int(getattr(cfg, "max_position_embeddings", 0) or 0)
        if getattr(cfg, "model_type", "") in ("xlm-roberta", "roberta"):
            limit -= int(getattr(cfg, "pad_token_id", 1) or 0) + 1  # positions start after padding_idx
        if limit and space.max_tokens > limit:
            raise EmbedConfigError(
                f"space {space.name}: max_tokens {space.max_tokens} exceeds the model's {limit} positions"
            )
        self.tokenizer = self.model.tokenizer
        self.details.update(
            device=device,
            dtype=run_dtype,
            threads=threads or "torch default",
            batch_size=self.batch_size,
            max_length=space.max_tokens,
            model_dir_name=path.resolve().name,
        )
        if run_dtype != dtype:
            self.details["dtype_note"] = f"{dtype} requested; on CPU FlagEmbedding runs fp32"

    def _count(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)
        return np.array([len(ids) for ids in enc["input_ids"]], dtype=np.int64)

    def _embed(self, texts: list[str], kind: str) -> Prepared:
        inputs = prefixed(self.space, texts, kind)
        full = self._count(inputs)
        limit = self.space.max_tokens
        with self._lock:
            out = self.model.encode(
                inputs,
                batch_size=self.batch_size,
                max_length=limit,
                return_dense=True,
                return_sparse=False,
                return_colbert_vecs=False,
            )
        return Prepared(
            vectors=np.atleast_2d(out["dense_vecs"]), truncated=full > limit, tokens=np.minimum(full, limit)
        )

    def close(self) -> None:
        super().close()
        model, self.model = getattr(self, "model", None), None
        if model is not None:
            model.stop_self_pool()
