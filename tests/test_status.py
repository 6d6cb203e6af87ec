"""`embed status`: coverage, stale, orphans, pending, skipped, runs and index, from a real database.

No model here: the store is filled with synthetic vectors through the real writer.
"""

from __future__ import annotations

import json

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner

from embed.cli import cli
from embed.config import Config
from embed.db.connection import connect
from embed.errors import EmbedError
from embed.fill.runs import start_run
from embed.fill.status import NextStep, status
from embed.store.target import Target
from embed.store.writer import Rows, Skip, StoreWriter
from tests.support.backfill import ROOT, SPACE, expected, seeded, sha
from tests.support.gate import plant_backup, plant_gates


def fill(url: str, cfg: Config, ids: list[str], keep: dict[str, bytes]) -> None:
    t = Target(cfg.source("documents"), cfg.space(SPACE))
    v = np.random.default_rng(0).standard_normal((len(ids), 384)).astype(np.float32)
    with connect(url) as conn:
        StoreWriter(conn, t).write(
            Rows(ids=ids, hashes=[keep[i] for i in ids], vectors=v, truncated=np.zeros(len(ids), bool)),
            np.zeros(len(ids), bool), [], run_id=0,
        )


def test_status_needs_an_initialized_store(db_url: str, cfg: Config) -> None:
    with pytest.raises(EmbedError, match="no pgvector extension"):
        status(cfg, db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    with pytest.raises(EmbedError, match="run `embed init` first"):
        status(cfg, db_url)


def test_status_counts_every_kind_of_row_and_run(db_url: str, cfg: Config) -> None:
    seeded(db_url, cfg, documents=20, messages=2)
    keep, _ = expected(db_url, cfg)
    ids = sorted(keep)
    fill(db_url, cfg, ids[:10], keep)
    t = Target(cfg.source("documents"), cfg.space(SPACE))
    with connect(db_url) as conn:
        StoreWriter(conn, t).write(Rows([], [], np.zeros((0, 384), np.float32), np.zeros(0, bool)),
                                   np.zeros(0, bool), [Skip(ids[10], keep[ids[10]], "empty")], run_id=0)
        conn.execute("UPDATE documents SET content = content || '!' WHERE id = %s", (ids[0],))  # stale
        conn.execute("UPDATE documents SET deleted_at = now() WHERE id = %s", (ids[1],))  # orphan
        run_id = start_run(conn, t, "backfill", {})  # a run whose process is gone: no lock held
        conn.commit()
        live = conn.execute("SELECT count(*) FROM documents WHERE deleted_at IS NULL").fetchone()[0]
    typed = status(cfg, db_url, spaces=[SPACE], sources=["documents"])
    got = typed.pair("documents", SPACE)
    assert got.totals and got.store and got.store.last_run and got.store.last_run.id == run_id
    assert got.totals.pending == got.totals.live_rows - got.totals.current - got.totals.skipped
    p = got.as_dict()  # what `embed status --json` prints for it
    assert (p["live_rows"], p["current"], p["stale"], p["skipped"]) == (live, 8, 1, 1)
    assert p["pending"] == live - 8 - 1 and p["orphans"] == 1 and p["stored"] == 10
    assert p["coverage_pct"] == round(100 * 9 / live, 2)
    assert sum(w["live_rows"] for w in p["workspaces"]) == live
    assert p["last_run"]["id"] == run_id and p["last_run"]["status"] == "abandoned"
    assert p["index"]["hnsw"] == "missing" and p["skipped_by_reason"] == {"empty": 1}
    assert p["state"] == "backfilling"

    legacy = status(cfg, db_url, spaces=["minilm_l6"], sources=["documents"]).pairs[0].as_dict()
    assert (legacy["kind"], legacy["column"], legacy["live"]) == ("column", "embedding", True)
    assert legacy["current"] == 0  # seeded without legacy vectors

    runner = CliRunner()
    res = runner.invoke(cli, ["--db", db_url, "--project", str(ROOT), "--gateway", "local",
                              "status", "--space", SPACE, "--source", "documents", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["pairs"][0]["current"] == 8
    res = runner.invoke(cli, ["--db", db_url, "--project", str(ROOT), "status", "--space", SPACE])
    assert res.exit_code == 0 and "documents" in res.output and "abandoned" in res.output
    text = conn_texts(db_url)
    assert not [x for x in text if x[:20] in res.output]


def test_status_names_the_next_command_for_each_source(db_url: str, cfg: Config) -> None:
    """backfill, then sync (N rows behind), then the fix of the first failing gate, then ready."""
    seeded(db_url, cfg, documents=20, messages=2)
    keep, empty = expected(db_url, cfg)

    def step() -> NextStep:
        (only,) = status(cfg, db_url, spaces=[SPACE], sources=["documents"]).next["documents"]
        return only

    first = step()
    assert (first.command, first.ready) == (f"embed backfill --space {SPACE}", False)
    assert first.why == f"{len(keep) + len(empty)} row(s) to embed"
    ids = sorted(keep)
    fill(db_url, cfg, ids[:5], keep)
    assert (step().command, step().why) == (f"embed sync --space {SPACE}", f"{len(keep) + len(empty) - 5} row(s) behind")
    fill(db_url, cfg, ids[5:], keep)
    t = Target(cfg.source("documents"), cfg.space(SPACE))
    with connect(db_url) as conn:
        StoreWriter(conn, t).write(Rows([], [], np.zeros((0, 384), np.float32), np.zeros(0, bool)), np.zeros(0, bool),
                                   [Skip(i, h, "empty") for i, h in empty.items()], run_id=0)
        conn.commit()
    assert (step().command, step().why[:20]) == (f"embed smoke --space {SPACE}", "gate smoke fails (no")
    plant_gates(db_url, cfg, cfg.space(SPACE), omit=["backup"])
    assert step().command == "embed backup --out DIR" and "gate backup fails" in step().why
    plant_backup(db_url)
    ready = step()
    assert ready.ready and ready.command == f"embed gate --space {SPACE}"

    res = CliRunner().invoke(cli, ["--db", db_url, "--project", str(ROOT), "status", "--space", SPACE, "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)["next"]
    assert got["documents"] == [{"source": "documents", "space": SPACE, "command": f"embed gate --space {SPACE}",
                                 "why": ready.why, "ready": True}]
    assert got["message_embeddings"][0]["command"] == f"embed backfill --space {SPACE}"
    res = CliRunner().invoke(cli, ["--db", db_url, "--project", str(ROOT), "status", "--space", SPACE])
    assert f"  next for {SPACE}: ready: `embed gate --space {SPACE}`" in res.output
    assert f"  next for {SPACE}: run `embed backfill --space {SPACE}`: " in res.output  # message_embeddings


def conn_texts(url: str) -> list[str]:
    with connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT content FROM documents WHERE content <> ''")]


def test_cli_errors_are_one_line(db_url: str) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["--db", db_url, "--project", str(ROOT), "backfill", "--space", "nope"])
    assert res.exit_code == 1 and res.output.strip().startswith("embed: error: unknown space 'nope'")
    res = runner.invoke(cli, ["--db", db_url, "--project", str(ROOT), "backfill", "--space", SPACE,
                              "--source", "nope"])
    assert res.exit_code == 1 and "unknown source 'nope'" in res.output
    assert sha("") == sha(None)
