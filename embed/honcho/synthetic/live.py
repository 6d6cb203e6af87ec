"""A simulated live Honcho writer: keeps inserting, editing and soft-deleting memories while a
migration step runs, so the demo shows sync catching up with a store that never stands still.

Like Honcho's API it writes the legacy model's vector with each new or edited document (its
own configured embedder), and it never prints memory text: only counts.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable

import numpy as np
import psycopg

from embed.db.connection import connect
from embed.honcho.synthetic.corpus import NANOID_SIZE, generate

NANOID = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
Vectors = Callable[[list[str]], np.ndarray]


class LiveWriter:
    """Writes documents at `rate` operations per second on its own thread until `stop()`."""

    def __init__(self, url: str, vectors: Vectors, *, seed: int = 11, rate: float = 5.0) -> None:
        self.url, self.vectors, self.rate = url, vectors, rate
        self.texts = [d["content"] for d in generate(seed=seed, documents=400, messages=0).documents
                      if d["content"].strip()]
        self.counts = {"inserted": 0, "edited": 0, "deleted": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-honcho-writer", daemon=True)
        self._rng = np.random.default_rng(seed)

    def __enter__(self) -> LiveWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> dict[str, int]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        return dict(self.counts)

    def burst(self, n: int) -> dict[str, int]:
        """`n` inserts right now, on the caller's thread (a writer that did not pause)."""
        with connect(self.url) as conn:
            for _ in range(n):
                self._insert(conn)
                conn.commit()
        return dict(self.counts)

    def _run(self) -> None:
        with connect(self.url) as conn:
            while not self._stop.wait(1.0 / self.rate):
                op = self._rng.random()
                if op < 0.7:
                    self._insert(conn)
                elif op < 0.85:
                    self._edit(conn)
                else:
                    self._delete(conn)
                conn.commit()

    def _text(self) -> str:
        return self.texts[int(self._rng.integers(len(self.texts)))]

    def _insert(self, conn: psycopg.Connection) -> None:
        scope = conn.execute("SELECT workspace_name, observer, observed, session_name FROM documents "
                             "WHERE deleted_at IS NULL ORDER BY random() LIMIT 1").fetchone()
        text = self._text()
        conn.execute(
            "INSERT INTO documents (id, content, embedding, workspace_name, observer, observed, session_name) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            ("".join(secrets.choice(NANOID) for _ in range(NANOID_SIZE)), text, self.vectors([text])[0], *scope),
        )
        self.counts["inserted"] += 1

    def _edit(self, conn: psycopg.Connection) -> None:
        text = self._text()
        cur = conn.execute(
            "UPDATE documents SET content = %s, embedding = %s WHERE id = (SELECT id FROM documents "
            "WHERE deleted_at IS NULL ORDER BY random() LIMIT 1)", (text, self.vectors([text])[0]))
        self.counts["edited"] += cur.rowcount

    def _delete(self, conn: psycopg.Connection) -> None:
        cur = conn.execute("UPDATE documents SET deleted_at = now() WHERE id = (SELECT id FROM documents "
                           "WHERE deleted_at IS NULL ORDER BY random() LIMIT 1)")
        self.counts["deleted"] += cur.rowcount
