"""GPU throughput of a BGE-M3-shaped model through FlagEmbedding's real code path (not a test).

    .venv/bin/python bench/gpu_bge_m3.py [--device cuda|cpu] [--layers 24] [--out FILE.json]
    .venv/bin/python bench/gpu_bge_m3.py --device cpu --layers 1 --lengths 16,mix --batches 4,8 --texts 32

Real BGE-M3 weights cannot be downloaded here, so the script builds on disk a randomly
initialised XLMRobertaModel with BGE-M3's exact shape (1024 hidden, 24 layers, 16 heads, 4096
FFN, 8194 positions, 250002 vocab; weights saved in fp16), a Unigram tokenizer trained
in-process on a few PL/EN sentences (ids above its small vocab are simply never used), and the
colbert_linear.pt / sparse_linear.pt heads that BGEM3FlagModel loads. Speed does not depend
on the weights' values, only on the shape (and on the real tokenizer's speed, see below).

For each length L (synthetic PL/EN texts of L*[0.9, 1.0] tokens, specials included, or 'mix':
a Honcho-like log-normal mix with mean ~60 tokens, max_length 512) and batch size B:
  FE    BGEM3FlagModel(path, use_fp16=True, devices=[dev]).encode(texts, batch_size=B,
        max_length=L, return_dense=True, return_sparse=False, return_colbert_vecs=False):
        one call over all --texts texts (as embed.fill.backfill does, one call per chunk of rows),
        tokenisation, its first-batch probe, padding and the copy back included;
  bare  the same model loaded with transformers' AutoModel (fp16 on CUDA, fp32 on CPU), fed
        the same length-sorted, padded batches already on the device: forward, CLS pooling,
        L2 normalisation, one copy back at the end. This is the model's ceiling.
Each is warmed up on 2*B texts, then timed --reps times; the best run is reported. texts/s
and tokens/s count real (non-pad) tokens. 'fwd' is the number of model forwards FE made in
one call (its batches + 1 for the probe that re-runs the first, longest batch), 'B used' the
batch size FE actually ran (its probe silently shrinks B by 3/4 on any RuntimeError, OOM
included). At the end: what 40k Honcho rows (~26k docs + ~14k message chunks, ~60 tokens
each) would take at the best setting, in calls of 4096 texts.

Note: the tokenizer here is a ~1-2k-piece Unigram, not XLM-R's 250k SentencePiece; both are
Rust Unigram models in `tokenizers`, so tokenising cost per token is of the same order.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.tinybge import write_heads, write_tokenizer

HIDDEN = 1024
SHAPE = dict(
    hidden_size=HIDDEN,
    num_attention_heads=16,
    intermediate_size=4096,
    max_position_embeddings=8194,
    vocab_size=250002,
    type_vocab_size=1,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)
HONCHO_ROWS = 40_000  # ~26k docs + ~14k message chunks
CALL_ROWS = 4096  # embed.fill.backfill's chunk_rows: the most texts in one encode() call

PL = [
    "Ala ma kota, a kot ma Alę.",
    "Jutro przez cały dzień ma padać ulewny deszcz.",
    "Babcia upiekła szarlotkę z jabłek z naszego sadu.",
    "Pociąg do Krakowa odjeżdża z trzeciego peronu o ósmej rano.",
    "Zażółć gęślą jaźń; źdźbło, chrząszcz, żółw.",
    "Po aktualizacji serwer bazy danych przestał odpowiadać na zapytania.",
    "Mój pies boi się burzy i chowa się pod łóżkiem.",
    "Spotkanie zespołu przeniesiono na czwartek po południu.",
    "Proszę przesłać fakturę za ostatni miesiąc do działu księgowości.",
    "W niedzielę pojechaliśmy rowerami nad jezioro i wróciliśmy wieczorem.",
    "Lekarz zalecił odpoczynek, dużo wody i spacer na świeżym powietrzu.",
    "Nowa wersja aplikacji poprawia wydajność wyszukiwania i zużycie pamięci.",
    "Czy możesz mi przypomnieć, o której godzinie zaczyna się koncert?",
    "Dzieci budowały zamek z piasku, a rodzice czytali książki na plaży.",
    "Kurs złotego wobec euro lekko wzrósł po ogłoszeniu danych o inflacji.",
]
EN = [
    "The quick brown fox jumps over the lazy dog.",
    "Heavy rain is expected all day tomorrow.",
    "After the update the database server stopped answering queries.",
    "My dog is afraid of thunderstorms and hides under the bed.",
    "The team meeting was moved to Thursday afternoon.",
    "Please send the invoice for last month to the accounting department.",
    "On Sunday we cycled to the lake and came back in the evening.",
    "The doctor recommended rest, plenty of water and a walk in fresh air.",
    "The new release improves search performance and memory usage.",
    "Can you remind me what time the concert starts?",
    "Children built a sand castle while their parents read books on the beach.",
    "The exchange rate rose slightly after the inflation figures were published.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation: . , ; : ! ? ( ) - ' \"",
    "She wrote down every idea in a small notebook she always carried.",
    "Embedding models turn sentences into vectors that can be compared quickly.",
]


def log(*a) -> None:
    print(*a, flush=True)


def build_model(path: Path, layers: int, device: str) -> float:
    """Write the BGE-M3-shaped model, tokenizer and heads into `path`; return seconds taken."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    t0 = time.perf_counter()
    write_tokenizer(path, PL + EN, SHAPE["max_position_embeddings"])  # ids above its small vocab are never used

    torch.manual_seed(0)
    cfg = XLMRobertaConfig(num_hidden_layers=layers, **SHAPE)
    with torch.device(device):  # random init on the GPU is seconds faster for 568M parameters
        model = XLMRobertaModel(cfg)
    quiet_call(model.half().eval().save_pretrained, path)
    del model
    write_heads(path, HIDDEN)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return time.perf_counter() - t0


class TextMaker:
    """Synthetic PL/EN texts whose token counts (specials included) hit given targets."""

    def __init__(self, tokenizer, seed: int = 0):
        self.tok = tokenizer
        self.rng = np.random.default_rng(seed)
        self.pools = []
        for sents in (PL, EN):
            words = sorted({w for s in sents for w in s.split()})
            counts = np.array([len(ids) for ids in tokenizer(words, add_special_tokens=False)["input_ids"]])
            self.pools.append((words, counts))

    def make(self, targets: np.ndarray) -> list[str]:
        texts = []
        for i, target in enumerate(targets):
            words, counts = self.pools[i % 2]
            need = max(1, int(target) - 2)  # <s> and </s>
            idx = self.rng.integers(0, len(words), size=need)  # each word is >= 1 token
            cum = np.cumsum(counts[idx])
            n = int(np.searchsorted(cum, need)) + 1
            texts.append(" ".join(words[j] for j in idx[:n]))
        return texts

    def fixed(self, n: int, length: int) -> list[str]:
        return self.make(self.rng.integers(int(0.9 * length), length + 1, size=n))

    def honcho_mix(self, n: int) -> list[str]:
        # log-normal, median 45, mean ~60 tokens, 8..512: short messages and doc chunks
        lengths = np.clip(np.round(np.exp(self.rng.normal(math.log(45), 0.75, size=n))), 8, 512)
        return self.make(lengths)


def quiet_call(fn, *a, **kw):
    """Call fn with stderr captured (FlagEmbedding's tqdm bars); echo non-progress lines."""
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        out = fn(*a, **kw)
    for line in buf.getvalue().replace("\r", "\n").splitlines():
        if line.strip() and "it/s]" not in line and "s/it]" not in line and "%|" not in line:
            log("  [stderr]", line)
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_reset(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**20) if device.startswith("cuda") else None


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--lengths", default="64,mix,256,512", help="token lengths and/or 'mix' (Honcho-like)")
    ap.add_argument("--batches", default="16,32,64,128,256")
    ap.add_argument("--texts", type=int, default=CALL_ROWS, help="texts per encode() call (default 4096)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--model-dir", default=None, help="reuse/keep the built model here (default: a temp dir)")
    ap.add_argument("--max-seconds", type=float, default=None, help="skip points once this much time has passed")
    ap.add_argument("--out", default=None, help="write results as JSON here (rewritten after every point)")
    args = ap.parse_args()

    t_start = time.perf_counter()
    dev = "cuda:0" if args.device == "cuda" else "cpu"
    if dev != "cpu" and not torch.cuda.is_available():
        log("no CUDA device visible; use --device cpu")
        return 2
    lengths = [x.strip() for x in args.lengths.split(",") if x.strip()]
    batches = [int(x) for x in args.batches.split(",") if x.strip()]

    import transformers

    datasets_note = None
    try:
        import datasets  # noqa: F401  (FlagEmbedding imports it at import time, for fine-tuning only)
    except Exception as e:
        # The inference path never touches `datasets`; a stub lets the import through (said so).
        import types

        datasets_note = f"real datasets failed to import ({type(e).__name__}: {e}); a stub module stood in"
        for name in [m for m in sys.modules if m == "datasets" or m.startswith("datasets.")]:
            del sys.modules[name]
        import importlib.machinery

        stub = types.ModuleType("datasets")
        stub.__spec__ = importlib.machinery.ModuleSpec("datasets", None)

        def stub_attr(name: str):
            if name.startswith("_"):
                raise AttributeError(name)
            return type(name, (), {})

        stub.__getattr__ = stub_attr
        sys.modules["datasets"] = stub
    try:
        from importlib.metadata import version

        from FlagEmbedding import BGEM3FlagModel

        fe_version = version("FlagEmbedding")
    except Exception as e:  # still measure the bare model
        BGEM3FlagModel, fe_version = None, f"import failed: {type(e).__name__}: {e}"

    env = {
        "device": dev,
        "gpu": torch.cuda.get_device_name(0) if dev != "cpu" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "flagembedding": fe_version,
        "datasets": datasets_note or getattr(sys.modules.get("datasets"), "__version__", None),
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "layers": args.layers,
        "texts_per_call": args.texts,
    }
    log("env:", json.dumps(env))
    result: dict = {"env": env, "points": [], "notes": []}

    def save() -> None:
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))

    tmp = None
    if args.model_dir:
        path = Path(args.model_dir)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bge-m3-shape-")
        path = Path(tmp.name) / "model"
    if (path / "config.json").is_file():
        log(f"model: reusing {path}")
    else:
        build_s = build_model(path, args.layers, dev)
        size = sum(f.stat().st_size for f in path.iterdir()) / 2**20
        log(f"model: built {args.layers}-layer BGE-M3 shape in {build_s:.1f}s, {size:.0f} MiB on disk")
        result["build_s"] = build_s

    from transformers import AutoModel, AutoTokenizer

    use_fp16 = dev != "cpu"
    fe = None
    if BGEM3FlagModel is not None:
        t0 = time.perf_counter()
        fe = quiet_call(BGEM3FlagModel, str(path), use_fp16=use_fp16, devices=[dev], normalize_embeddings=True)
        result["fe_load_s"] = time.perf_counter() - t0
        inner = fe.model.model  # the transformers XLMRobertaModel FlagEmbedding runs
        log(
            f"FlagEmbedding: loaded in {result['fe_load_s']:.1f}s, weights {next(inner.parameters()).dtype}, "
            f"attn={inner.config._attn_implementation}, target_devices={fe.target_devices}"
        )
    else:
        log(f"FlagEmbedding: {fe_version} -- only the bare model is measured")
    bare_dtype = torch.float16 if use_fp16 else torch.float32
    t0 = time.perf_counter()
    bare = quiet_call(AutoModel.from_pretrained, str(path), dtype=bare_dtype).to(dev).eval()
    tokzr = AutoTokenizer.from_pretrained(str(path))
    result["bare_load_s"] = time.perf_counter() - t0
    log(f"bare: loaded in {result['bare_load_s']:.1f}s, {bare_dtype}, attn={bare.config._attn_implementation}")

    # count FlagEmbedding's forwards (batches + probe) and the batch size it really ran
    fwd_shapes: list[tuple[int, int]] = []
    if fe is not None:
        fe.model.model.register_forward_hook(
            lambda mod, a, kw, out: fwd_shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True
        )

    maker = TextMaker(tokzr)

    def fe_encode(texts, B, L):
        return quiet_call(
            fe.encode,
            texts,
            batch_size=B,
            max_length=L,
            return_dense=True,
            return_sparse=False,
            return_colbert_vecs=False,
        )

    def bare_batches(texts, B, L):
        enc = tokzr(texts, truncation=True, max_length=L)
        items = [{k: enc[k][i] for k in ("input_ids", "attention_mask")} for i in range(len(texts))]
        items.sort(key=lambda x: -len(x["input_ids"]))
        out = []
        for s in range(0, len(items), B):
            chunk = items[s : s + B]
            padded = tokzr.pad(
                {k: [x[k] for x in chunk] for k in ("input_ids", "attention_mask")}, padding=True, return_tensors="pt"
            )
            out.append((padded["input_ids"].to(dev), padded["attention_mask"].to(dev)))
        return out

    @torch.inference_mode()
    def bare_run(batches_on_dev):
        vecs = []
        for ids, mask in batches_on_dev:
            h = bare(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
            vecs.append(torch.nn.functional.normalize(h, dim=-1))
        v = torch.cat(vecs).cpu()
        sync(dev)
        return v

    # global warm-up: CUDA context, cuBLAS handles, allocator
    warm = maker.fixed(2 * max(batches), 32)
    if fe is not None:
        fe_encode(warm, max(batches), 32)
    bare_run(bare_batches(warm, max(batches), 32))
    fwd_shapes.clear()

    header = (
        f"{'L':>4} {'B':>4} | {'FE texts/s':>10} {'FE tok/s':>10} {'fwd':>4} {'B used':>6} | "
        f"{'bare texts/s':>12} {'bare tok/s':>10} | {'FE/bare':>7} | {'peak MiB':>8}"
    )
    table = [header, "-" * len(header)]
    log("\n" + header + "\n" + table[1])
    best_mix = None
    for Lname in lengths:
        if Lname == "mix":
            L, texts = 512, maker.honcho_mix(args.texts)
        else:
            L = int(Lname)
            texts = maker.fixed(args.texts, L)
        real = [len(x) for x in tokzr(texts, truncation=True, max_length=L)["input_ids"]]
        ntok = int(sum(real))
        t0 = time.perf_counter()
        tokzr(texts, truncation=True, max_length=L)
        tok_s = time.perf_counter() - t0
        result["notes"].append(
            f"L={Lname}: {len(texts)} texts, mean {np.mean(real):.1f} tokens (min {min(real)}, max {max(real)}), "
            f"tokenising them all once takes {tok_s * 1000:.0f} ms"
        )
        for B in batches:
            pt = {
                "L": Lname,
                "max_length": L,
                "B": B,
                "texts": len(texts),
                "tokens": ntok,
                "mean_tokens": ntok / len(texts),
            }
            if args.max_seconds and time.perf_counter() - t_start > args.max_seconds:
                pt["skipped"] = "time budget"
                result["points"].append(pt)
                table.append(f"{Lname:>4} {B:>4} | skipped (time budget)")
                log(table[-1])
                continue
            # FlagEmbedding
            fe_best = None
            if fe is not None:
                peak_reset(dev)
                fe_encode(texts[: 2 * B], B, L)
                runs = []
                for _ in range(args.reps):
                    fwd_shapes.clear()
                    t0 = time.perf_counter()
                    out = fe_encode(texts, B, L)
                    runs.append(time.perf_counter() - t0)
                dense = out["dense_vecs"]
                fe_best = min(runs)
                pt.update(
                    fe_s=runs,
                    fe_texts_s=len(texts) / fe_best,
                    fe_tok_s=ntok / fe_best,
                    fe_forwards=len(fwd_shapes),
                    fe_batch_used=fwd_shapes[0][0] if fwd_shapes else None,
                    fe_probe_shape=list(fwd_shapes[0]) if fwd_shapes else None,
                    fe_out_dtype=str(dense.dtype),
                    fe_out_shape=list(dense.shape),
                    fe_out_finite=bool(np.isfinite(dense.astype(np.float32)).all()),
                    fe_peak_mib=peak_mib(dev),
                )
            # bare model, same sorted+padded batches, already on the device
            peak_reset(dev)
            try:
                bb = bare_batches(texts, B, L)
                bare_run(bb[:2])
                runs = []
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    bare_run(bb)
                    runs.append(time.perf_counter() - t0)
                bare_best = min(runs)
                pt.update(bare_s=runs, bare_texts_s=len(texts) / bare_best, bare_tok_s=ntok / bare_best)
                del bb
            except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
                if not is_oom(e):
                    raise
                bare_best = None
                pt["bare_oom"] = True
                if dev != "cpu":
                    torch.cuda.empty_cache()
            pt["bare_peak_mib"] = peak_mib(dev)
            if fe_best and bare_best:
                pt["fe_over_bare"] = bare_best / fe_best
            result["points"].append(pt)

            def f(x, w, d=0):
                return f"{x:>{w},.{d}f}" if isinstance(x, (int, float)) else f"{'-' if x is None else x:>{w}}"

            peak = max([p for p in (pt.get("fe_peak_mib"), pt.get("bare_peak_mib")) if p is not None], default=None)
            row = (
                f"{Lname:>4} {B:>4} | {f(pt.get('fe_texts_s'), 10)} {f(pt.get('fe_tok_s'), 10)} "
                f"{f(pt.get('fe_forwards'), 4)} {f(pt.get('fe_batch_used'), 6)} | "
                f"{f(pt.get('bare_texts_s') if not pt.get('bare_oom') else 'OOM', 12)} {f(pt.get('bare_tok_s'), 10)} | "
                f"{f(pt.get('fe_over_bare'), 7, 2)} | {f(peak, 8)}"
            )
            table.append(row)
            log(row)
            if (
                Lname == "mix"
                and pt.get("fe_texts_s")
                and (best_mix is None or pt["fe_texts_s"] > best_mix["fe_texts_s"])
            ):
                best_mix = pt
            save()

    log("")
    for n in result["notes"]:
        log("note:", n)
    first = result["points"][0] if result["points"] else {}
    if first.get("fe_out_dtype"):
        log(
            f"note: FE dense_vecs come back as numpy {first['fe_out_dtype']} {first['fe_out_shape']} "
            f"(finite: {first['fe_out_finite']}); the probe re-runs the first (longest) batch of every encode() call"
        )

    # 40k Honcho rows at the best setting
    est = []
    if best_mix:
        calls = math.ceil(HONCHO_ROWS / args.texts)
        secs = HONCHO_ROWS / best_mix["fe_texts_s"]
        est.append(
            f"Honcho 40k rows (~26k docs + ~14k message chunks, mix mean {best_mix['mean_tokens']:.0f} tokens): "
            f"FlagEmbedding B={best_mix['B']} -> {best_mix['fe_texts_s']:,.0f} texts/s -> {secs:.1f} s "
            f"({calls} encode() calls of {args.texts}; model only, no database)"
        )
        if best_mix.get("bare_texts_s"):
            est.append(f"  bare model ceiling at B={best_mix['B']}: {HONCHO_ROWS / best_mix['bare_texts_s']:.1f} s")
    fixed64 = [p for p in result["points"] if p["L"] != "mix" and p.get("fe_texts_s")]
    if fixed64:
        lo = min({int(p["L"]) for p in fixed64})
        bp = max((p for p in fixed64 if int(p["L"]) == lo), key=lambda p: p["fe_texts_s"])
        est.append(
            f"  from the fixed L={lo} sweep (best B={bp['B']}, {bp['fe_texts_s']:,.0f} texts/s): "
            f"{HONCHO_ROWS / bp['fe_texts_s']:.1f} s"
        )
    for line in est:
        log(line)
    result["honcho_estimate"] = est
    result["table"] = table
    result["total_s"] = time.perf_counter() - t_start
    log(f"total {result['total_s']:.0f}s")
    save()
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
