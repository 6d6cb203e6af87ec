"""`embed cutover --mode honcho-inplace` and its rollback end to end: gates, the column swap,
the views following it (embed_active and the legacy view's renamed column), events, and the
CLI printing the Honcho settings. The swap engine itself is tested in tests/test_inplace.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from embed import mesh
from embed.cli import cli
from embed.config import Config
from embed.cutover import cutover, rollback
from embed.database import connect
from embed.errors import EmbedError
from embed.retire import retire_plan
from tests.gate_support import plant_gates
from tests.test_inplace_support import LEGACY, NEW, fill_store, honcho_db

pytestmark = pytest.mark.timeout(600)


def vectors(url: str, view: str) -> dict[str, str]:
    """id -> text form of the vector served by a view (or a table column)."""
    with connect(url) as conn:
        return {str(i): str(v) for i, v in conn.execute(f"SELECT source_id, embedding FROM {view}")}


def live_column(url: str) -> dict[str, str]:
    with connect(url) as conn:
        return {str(i): str(v) for i, v in conn.execute(
            "SELECT id, embedding FROM documents WHERE deleted_at IS NULL AND embedding IS NOT NULL")}


def test_inplace_cutover_moves_honcho_and_the_views_together_and_rolls_back(db_url: str, project: Path) -> None:
    cfg = Config.load(project, "local")
    honcho_db(db_url, cfg, documents=160, messages=60)
    fill_store(db_url, cfg, NEW)
    mesh.plan(cfg, db_url)
    legacy_before = vectors(db_url, f"embed.documents__{LEGACY}")
    new_store = vectors(db_url, f"embed.documents__{NEW}")
    assert legacy_before == live_column(db_url)

    with pytest.raises(EmbedError, match="cutover blocked, nothing changed"):
        cutover(cfg, db_url, NEW, mode="honcho-inplace")  # no gate inputs yet
    with connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'documents' "
                            "AND column_name LIKE 'embedding\\_\\_%'").fetchone()[0] == 0

    plant_gates(db_url, cfg, cfg.space(NEW))
    runner = CliRunner()
    r = runner.invoke(cli, ["--project", str(project), "--db", db_url, "cutover", "--space", NEW,
                            "--mode", "honcho-inplace", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["swap"]["lock_ms"] < 1000
    assert out["honcho_settings"]["settings"]["EMBEDDING_VECTOR_DIMENSIONS"] in (384, "384")
    assert out["switched"]["documents"] == {"from": LEGACY, "to": NEW}

    moved = Config.load(project, "local")
    assert moved.active_space("documents").name == NEW
    tagged = moved.legacy_column("documents")
    assert tagged.startswith(f"embedding__{LEGACY}_")
    assert tagged in (project / "external_models.yaml").read_text()
    # Honcho's column now holds the new space; the legacy view, rebuilt by SQLMesh, still serves
    # exactly the old vectors (from the renamed column), and the active view the new ones.
    assert live_column(db_url) == new_store
    assert vectors(db_url, f"embed.documents__{LEGACY}") == legacy_before
    assert vectors(db_url, "embed.documents_active") == new_store
    with connect(db_url) as conn:
        kinds = conn.execute("SELECT details ->> 'mode', details ->> 'to_fp' FROM embed_store.events "
                             "WHERE kind = 'cutover' AND outcome = 'ok'").fetchall()
    assert kinds and {k for k in kinds} == {("honcho-inplace", cfg.space(NEW).fingerprint)}
    assert any("not allowed" in b or "retention" in b for b in retire_plan(moved, db_url, LEGACY)["blockers"])
    assert not any("legacy space" in b for b in retire_plan(moved, db_url, LEGACY)["blockers"])

    back = rollback(moved, db_url)
    assert back["mode"] == "honcho-inplace" and back["switched"]["documents"] == {"from": NEW, "to": LEGACY}
    restored = Config.load(project, "local")
    assert restored.active_space("documents").name == LEGACY
    assert restored.legacy_column("documents") == "embedding"
    assert "embed_legacy_columns" not in (project / "config.yaml").read_text()
    assert live_column(db_url) == legacy_before
    assert vectors(db_url, "embed.documents_active") == legacy_before
    assert vectors(db_url, f"embed.documents__{LEGACY}") == legacy_before
