"""HTTP transport benchmark: embed's OpenAI-compatible client vs the bare library call (not a test).

    .venv/bin/python bench/transport.py [--requests 400] [--batch 64] [--dims 1024] [--concurrency 1,4]

Against a local OpenAI-compatible server (tests/support/badserver.py: vectors derived from a
hash, so the model costs nothing and the transport is all that is measured), the same
requests, in the same run, alternating:
  bare     a urllib3 keep-alive pool: POST the JSON body, parse the JSON (the ceiling);
  embed    OpenAIEmbedder.embed(): truncation, the body, the urllib3 pool, tenacity's retry
           loop, the response checks (count, order, dims, finite) and the float32 matrix.
Prints requests/s of each and embed/bare per concurrency (threads issuing requests at once).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from embed.embedders import get_embedder
from embed.spaces import Space
from tests.support.badserver import BadServer


def texts(n: int, i: int) -> list[str]:
    return [f"wspomnienie {i}-{j}: Ala ma kota, a kot ma Alę; the fox jumps over the dog." for j in range(n)]


def bare(url: str, port: int, batches: list[list[str]], conc: int) -> float:
    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=conc, block=True, retries=False)
    path = url.split(str(port), 1)[1] + "/embeddings"

    def one(b: list[str]) -> int:
        r = pool.urlopen("POST", path, body=json.dumps({"model": "m", "input": b}).encode(),
                         headers={"Content-Type": "application/json"}, redirect=False)
        return len(json.loads(r.data)["data"])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(conc) as ex:
        assert sum(ex.map(one, batches)) == sum(map(len, batches))
    pool.close()
    return len(batches) / (time.perf_counter() - t0)


def ours(url: str, batches: list[list[str]], conc: int, dims: int) -> float:
    sp = Space(name="bench", provider="openai", model="m", revision="1", dims=dims, max_tokens=512,
               options={"endpoint": url, "batch_size": len(batches[0]), "concurrency": conc})
    flat = [t for b in batches for t in b]
    with get_embedder(sp) as emb:
        t0 = time.perf_counter()
        out = emb.embed(flat, "passage")
        seconds = time.perf_counter() - t0
    assert out.vectors.shape == (len(flat), dims)
    return len(batches) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dims", type=int, default=1024)
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    with BadServer(dims=a.dims) as server:
        batches = [texts(a.batch, i) for i in range(a.requests)]
        print(f"{a.requests} requests of {a.batch} texts, {a.dims}-d floats, best of {a.reps} alternating runs")
        for conc in (int(c) for c in a.concurrency.split(",")):
            b, o = [], []
            for _ in range(a.reps):
                b.append(bare(server.url, server.port, batches, conc))
                o.append(ours(server.url, batches, conc, a.dims))
            print(f"concurrency {conc}: bare {max(b):8.1f} req/s   embed {max(o):8.1f} req/s   "
                  f"embed/bare {max(o) / max(b):.2f} (medians {statistics.median(o) / statistics.median(b):.2f})")


if __name__ == "__main__":
    main()
