"""A test hook: `EMBED_TEST_PAUSE_AT=<point>[:<nth>]` parks the process at a named point.

Crash tests set it so they can SIGKILL a real backfill at a deterministic moment (before,
during or after a COPY, before the index build...). The process announces the pause on stderr
and sleeps until killed, or, when `EMBED_TEST_RESUME_FILE` names a file, until that file
exists (so a test can interleave two processes exactly). Nothing else changes. Unset (always,
outside tests) it costs one dict lookup.
"""

from __future__ import annotations

import os
import sys
import threading
import time

_hits: dict[str, int] = {}
_lock = threading.Lock()


def pause_point(point: str) -> None:
    spec = os.environ.get("EMBED_TEST_PAUSE_AT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    with _lock:
        _hits[point] = _hits.get(point, 0) + 1
        hit = _hits[point]
    if hit == int(nth or 1):
        print(f"embed-test: paused at {point}", file=sys.stderr, flush=True)
        resume = os.environ.get("EMBED_TEST_RESUME_FILE")
        while not (resume and os.path.exists(resume)):
            time.sleep(0.05 if resume else 3600)
