"""A tiny random BGE-M3 look-alike on disk, loadable offline by FlagEmbedding's BGEM3FlagModel.

Real BGE-M3 weights cannot be downloaded here, so tests build an XLM-RoBERTa with the real
hidden size (1024, so vectors have BGE-M3's dims) but one layer, a tiny intermediate size and a
Unigram tokenizer trained in-process on a few Polish/English sentences (special tokens laid out
like XLM-R: <s>=0 <pad>=1 </s>=2 <unk>=3), plus the two head files FlagEmbedding's M3 runner
loads when present (colbert_linear.pt, sparse_linear.pt). Seeded: the same bytes every build.
About 24 MB; builds in well under a second once torch/transformers are imported.

A test module wraps `session_tiny_bge(tmp_path_factory)` in its own session fixture (built once
per process however many modules ask), or calls `build_tiny_bge(path)` directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

HIDDEN = 1024
MAX_POSITIONS = 8194  # as BGE-M3: 8192 tokens + padding_idx offset of 2
CORPUS = [
    "Ala ma kota, a kot ma Alę.",
    "Jutro przez cały dzień ma padać ulewny deszcz.",
    "Babcia upiekła szarlotkę z jabłek z naszego sadu.",
    "Pociąg do Krakowa odjeżdża z trzeciego peronu o ósmej rano.",
    "Zażółć gęślą jaźń; źdźbło, chrząszcz, żółw.",
    "The quick brown fox jumps over the lazy dog.",
    "Heavy rain is expected all day tomorrow.",
    "After the update the database server stopped answering queries.",
    "My dog is afraid of thunderstorms and hides under the bed.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation: . , ; : ! ? ( ) - ' \"",
]


def write_tokenizer(path: Path, corpus: list[str], max_positions: int = MAX_POSITIONS) -> int:
    """A Unigram tokenizer laid out like XLM-R's, trained on `corpus`, saved into `path`;
    returns its vocabulary size. (bench/gpu_bge_m3.py builds its full-size model with it too.)"""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=2000, special_tokens=specials, unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(corpus * 4, trainer)
    assert [tok.token_to_id(s) for s in specials] == [0, 1, 2, 3, 4]
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
        pad_token="<pad>", unk_token="<unk>", mask_token="<mask>", model_max_length=max_positions - 2,
    ).save_pretrained(path)
    return tok.get_vocab_size()


def write_heads(path: Path, hidden: int = HIDDEN) -> None:
    """The two head files FlagEmbedding's M3 runner loads when present."""
    import torch

    torch.save(torch.nn.Linear(hidden, hidden).state_dict(), path / "colbert_linear.pt")
    torch.save(torch.nn.Linear(hidden, 1).state_dict(), path / "sparse_linear.pt")


def build_tiny_bge(path: Path, seed: int = 0) -> Path:
    """Write the tiny model into `path` (created) and return it."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from embed.smoke import SENTINELS

    vocab = write_tokenizer(path, CORPUS + [t for _sid, pl, en in SENTINELS for t in (pl, en)])
    torch.manual_seed(seed)
    cfg = XLMRobertaConfig(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=8,
        intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    model = XLMRobertaModel(cfg)
    model.eval()
    model.save_pretrained(path)
    write_heads(path)
    return path


_built: dict[str, Path] = {}


def session_tiny_bge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model directory, built once per test process (call it from a session fixture)."""
    if "dir" not in _built:
        _built["dir"] = build_tiny_bge(tmp_path_factory.mktemp("tiny-bge-m3") / "model")
    return _built["dir"]
