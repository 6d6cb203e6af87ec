"""A simulated Honcho writing to the database while the migration runs (another process).

    python -m tests.faults.honcho_sim URL --seed N --rate R --workdir DIR [--env HONCHO_ENV]

At a steady (Poisson) rate it does what Honcho's API and deriver do to the two vector tables:
inserts documents with a vector from the model Honcho is configured with (sometimes NULL and
'pending' first, filled later as its reconciler would), inserts messages with their chunked
message_embeddings (older Honcho repeats the full text in every chunk), edits a document's
content (re-embedding it), soft-deletes documents, hard-deletes messages (ON DELETE CASCADE
removes their message_embeddings) and writes blank texts now and then.

Every text it writes carries a marker `fz<seed>n<k>` so the checker can find any of them in a
log. It survives dropped connections and server restarts (reconnects with backoff and
carries on). Control (DIR/sim.control.json, written by the driver): `paused` (quiesce the
writers, as an operator does around a cutover) and `space` (which model Honcho is configured
with: after an in-place cutover the operator switches it, and Honcho writes that space's
vectors into the same column). State, counts and ids go to DIR/sim.state.json and the log;
never a text.

With `--env FILE` it is configured the way Honcho is, by the .env settings `embed cutover`
prints: it runs Honcho's startup check (both vector columns' declared dims must equal
EMBEDDING_VECTOR_DIMENSIONS, else it exits 3, as Honcho refuses to start), and embeds every text
by POSTing it raw, with no query/passage hint, to EMBEDDING_MODEL_CONFIG__OVERRIDES__BASE_URL as
EMBEDDING_MODEL_CONFIG__MODEL: whatever space that server makes is what lands in the column.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import numpy as np
import psycopg

from tests.faults.common import connect_until, write_json
from tests.faults.world import HTTP, LEGACY, http_vectors, legacy_vectors
from tests.support.backfill import NANOID

MARKER = "fz{seed}n{k}"
VECTORS: dict[str, Callable[[list[str]], np.ndarray]] = {LEGACY: legacy_vectors, HTTP: http_vectors}
OPS = {  # weights
    "insert_document": 30, "edit_document": 15, "soft_delete_document": 8, "insert_message": 20,
    "hard_delete_message": 7, "fill_pending": 10,
}


def read_env(path: Path) -> dict[str, str]:
    """A .env file: VAR=value lines; comments and blank lines skipped."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


class HonchoEmbedder:
    """Honcho's embedding client, reduced to what decides the space: endpoint, model, raw text."""

    def __init__(self, settings: dict[str, str]) -> None:
        self.url = settings["EMBEDDING_MODEL_CONFIG__OVERRIDES__BASE_URL"].rstrip("/") + "/embeddings"
        self.model = settings["EMBEDDING_MODEL_CONFIG__MODEL"]
        self.dims = int(settings["EMBEDDING_VECTOR_DIMENSIONS"])
        self.batch = int(settings.get("EMBEDDING_MODEL_CONFIG__MAX_BATCH_SIZE", 32))

    def __call__(self, texts: list[str]) -> np.ndarray:
        data: list[dict] = []
        for at in range(0, len(texts), self.batch):  # Honcho batches by MAX_BATCH_SIZE too
            body = json.dumps({"model": self.model, "input": texts[at:at + self.batch]}).encode()
            req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as r:
                data += sorted(json.loads(r.read())["data"], key=lambda d: d["index"])
        out = np.asarray([d["embedding"] for d in data], dtype=np.float32).reshape(len(texts), -1)
        if out.shape[1] != self.dims:  # Honcho checks every vector's length
            raise ValueError(f"the server returned {out.shape[1]} dims, EMBEDDING_VECTOR_DIMENSIONS is {self.dims}")
        return out

    def startup_check(self, conn: psycopg.Connection) -> str | None:
        """Honcho's src/startup/embedding_validator.py: the declared dims of both columns."""
        for table in ("documents", "message_embeddings"):
            typ = conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                               "%s::regclass AND attname = 'embedding' AND NOT attisdropped", (table,)).fetchone()[0]
            if typ != f"vector({self.dims})":
                return f"{table}.embedding is {typ}, EMBEDDING_VECTOR_DIMENSIONS is {self.dims}"
        return None


class Sim:
    def __init__(self, url: str, seed: int, rate: float, workdir: Path, honcho: HonchoEmbedder | None = None
                 ) -> None:
        self.honcho = honcho
        self.url, self.seed, self.rate = url, seed, rate
        self.rng = random.Random(seed)
        self.control = workdir / "sim.control.json"
        self.state_file = workdir / "sim.state.json"
        self.log = (workdir / "sim.log").open("a", buffering=1)
        self.ops: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.reconnects = 0
        self.k = 0
        self.paused = False
        self.space = LEGACY
        self.stop = False
        self.conn: psycopg.Connection | None = None
        self.phrases: list[str] = []
        self.doc_scopes: list[tuple] = []
        self.msg_scopes: list[tuple] = []

    # -- plumbing --------------------------------------------------------------------------
    def say(self, line: str) -> None:
        self.log.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def connect(self) -> psycopg.Connection:
        return connect_until(self.url, "honcho-sim", self.errors, lambda: self.stop)

    def write_state(self) -> None:
        write_json(self.state_file, {"pid": os.getpid(), "paused": self.paused, "space": self.space,
                                     "ops": dict(self.ops), "errors": dict(self.errors), "reconnects": self.reconnects,
                                     "texts": self.k})

    def read_control(self) -> None:
        try:
            order = json.loads(self.control.read_text())
        except (OSError, ValueError):
            return
        if order.get("paused", False) != self.paused or order.get("space", self.space) != self.space:
            self.paused = bool(order.get("paused", False))
            self.space = order.get("space", self.space)
            self.say(f"control paused={self.paused} space={self.space}")
            self.write_state()

    # -- content -----------------------------------------------------------------------------
    def text(self) -> str:
        self.k += 1
        roll = self.rng.random()
        if roll < 0.04:
            return self.rng.choice(["", "   "])  # Honcho stores blank text too; nothing to embed
        if roll < 0.12 and self.phrases:
            return self.rng.choice(self.phrases)  # identical content in another row: embedded once
        tag = MARKER.format(seed=self.seed, k=self.k)
        body = " ".join(self.rng.sample(self.phrases, k=min(len(self.phrases), self.rng.randint(1, 3))))
        return f"{body} ({tag})"

    def vector(self, text: str) -> np.ndarray | None:
        if not text.strip():
            return None
        return (self.honcho or VECTORS[self.space])([text])[0]

    def nanoid(self) -> str:
        return "".join(self.rng.choice(NANOID) for _ in range(21))

    # -- operations ----------------------------------------------------------------------------
    def insert_document(self, conn: psycopg.Connection) -> str:
        ws, observer, observed, session = self.rng.choice(self.doc_scopes)
        text = self.text()
        vec = self.vector(text) if self.rng.random() < 0.8 else None
        doc = self.nanoid()
        conn.execute(
            "INSERT INTO documents (id, content, embedding, observer, observed, workspace_name, session_name, "
            "sync_state, last_sync_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now() END)",
            (doc, text, vec, observer, observed, ws, session, "synced" if vec is not None else "pending",
             vec is not None),
        )
        return doc

    def _pick(self, conn: psycopg.Connection, query: str) -> str | None:
        """One row of `query` (ids in order), chosen by the seeded RNG rather than by random()."""
        n = conn.execute(f"SELECT count(*) FROM ({query}) AS q").fetchone()[0]
        if not n:
            return None
        return conn.execute(f"{query} ORDER BY 1 LIMIT 1 OFFSET %s", (self.rng.randrange(n),)).fetchone()[0]

    def _live_doc(self, conn: psycopg.Connection) -> str | None:
        return self._pick(conn, "SELECT id FROM documents WHERE deleted_at IS NULL")

    def edit_document(self, conn: psycopg.Connection) -> str | None:
        doc = self._live_doc(conn)
        if doc:
            text = self.text()
            vec = self.vector(text) if self.rng.random() < 0.8 else None
            conn.execute("UPDATE documents SET content = %s, embedding = %s, sync_state = %s WHERE id = %s",
                         (text, vec, "synced" if vec is not None else "pending", doc))
        return doc

    def soft_delete_document(self, conn: psycopg.Connection) -> str | None:
        doc = self._live_doc(conn)
        if doc:
            conn.execute("UPDATE documents SET deleted_at = now() WHERE id = %s", (doc,))
        return doc

    def insert_message(self, conn: psycopg.Connection) -> str:
        ws, session, peer = self.rng.choice(self.msg_scopes)
        text = self.text()
        public_id = self.nanoid()
        conn.execute(
            "INSERT INTO messages (public_id, session_name, content, token_count, seq_in_session, peer_name, "
            "workspace_name) VALUES (%s, %s, %s, %s, (SELECT coalesce(max(seq_in_session), 0) + 1 FROM messages "
            "WHERE workspace_name = %s AND session_name = %s), %s, %s)",
            (public_id, session, text, max(1, len(text) // 4), ws, session, peer, ws),
        )
        if not text.strip():
            return public_id
        words = text.split()
        n = self.rng.randint(1, 3)
        if self.rng.random() < 0.3:
            chunks = [text] * n  # older Honcho: the full text in every chunk row
        else:
            step = max(1, -(-len(words) // n))
            chunks = [" ".join(words[i:i + step]) for i in range(0, len(words), step)]
        for chunk in chunks:
            vec = self.vector(chunk) if self.rng.random() < 0.85 else None
            conn.execute(
                "INSERT INTO message_embeddings (content, embedding, message_id, workspace_name, session_name, "
                "peer_name, sync_state) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (chunk, vec, public_id, ws, session, peer, "synced" if vec is not None else "pending"),
            )
        return public_id

    def hard_delete_message(self, conn: psycopg.Connection) -> str | None:
        public_id = self._pick(conn, "SELECT public_id FROM messages")
        if public_id:
            conn.execute("DELETE FROM messages WHERE public_id = %s", (public_id,))
        return public_id

    def fill_pending(self, conn: psycopg.Connection) -> str:
        """Honcho's reconciler: embed rows still 'pending' with the model it is configured with."""
        n = 0
        for table, live in (("documents", "deleted_at IS NULL"), ("message_embeddings", "TRUE")):
            rows = conn.execute(
                f"SELECT id, content FROM {table} WHERE embedding IS NULL AND {live} AND btrim(content) <> '' "
                "ORDER BY id LIMIT 5 FOR UPDATE SKIP LOCKED").fetchall()
            for rid, content in rows:
                conn.execute(f"UPDATE {table} SET embedding = %s, sync_state = 'synced', last_sync_at = now() "
                             "WHERE id = %s", (self.vector(content), rid))
                n += 1
        return str(n)

    # -- loop ------------------------------------------------------------------------------------
    def load(self, conn: psycopg.Connection) -> None:
        self.phrases = [r[0] for r in conn.execute(
            "SELECT DISTINCT content FROM documents WHERE length(content) BETWEEN 12 AND 200 ORDER BY 1 LIMIT 200")]
        self.doc_scopes = conn.execute(
            "SELECT DISTINCT workspace_name, observer, observed, session_name FROM documents ORDER BY 1, 2, 3, 4"
        ).fetchall()
        self.msg_scopes = conn.execute(
            "SELECT DISTINCT workspace_name, session_name, peer_name FROM messages ORDER BY 1, 2, 3").fetchall()
        conn.commit()

    def run(self) -> None:
        names, weights = list(OPS), list(OPS.values())
        conn = self.connect()
        if self.honcho is not None:
            wrong = self.honcho.startup_check(conn)
            if wrong:
                self.say(f"startup check failed: {wrong}")
                raise SystemExit(3)
        self.load(conn)
        self.write_state()
        self.say(f"started seed={self.seed} rate={self.rate}")
        last_state = time.monotonic()
        while not self.stop:
            self.read_control()
            if self.paused:
                time.sleep(0.05)
                continue
            op = self.rng.choices(names, weights)[0]
            try:
                if conn.closed:
                    conn = self.connect()
                    self.reconnects += 1
                    self.say(f"reconnected ({self.reconnects})")
                with conn.transaction():
                    ref = getattr(self, op)(conn)
                self.ops[op] += 1
                self.say(f"op={op} ref={ref}")
            except psycopg.OperationalError as e:
                self.errors[type(e).__name__] += 1
                self.say(f"op={op} lost the connection ({type(e).__name__}); reconnecting")
                conn.close()
            except (psycopg.Error, OSError, ValueError) as e:  # a race with our deletes, a lock timeout, the server: Honcho retries
                self.errors[type(e).__name__] += 1
                self.say(f"op={op} failed ({type(e).__name__})")
            if time.monotonic() - last_state > 0.5:
                self.write_state()
                last_state = time.monotonic()
            time.sleep(self.rng.expovariate(self.rate))
        self.write_state()
        self.say(f"stopped ops={sum(self.ops.values())}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--rate", type=float, default=4.0, help="operations per second (Poisson)")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--env", type=Path, help="Honcho's .env settings: embed through that server, check dims first")
    a = ap.parse_args(argv)
    sim = Sim(a.url, a.seed, a.rate, a.workdir, HonchoEmbedder(read_env(a.env)) if a.env else None)

    def on_term(signum: int, frame: FrameType | None) -> None:
        sim.stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    sim.run()
    sys.exit(0)


if __name__ == "__main__":
    main()
