"""`embed evidence` on a real embedded Postgres: a real smoke run (in-process e5 model), a real
backup (pg_dump), a shadow run and a gate result in the store, then the bundle: files, modes,
sha256s, parseable JSON, and a grep of every byte for the seeded texts and the secrets."""

from __future__ import annotations

import hashlib
import html
import json
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import psycopg
import pytest
from click.testing import CliRunner, Result

from embed import store
from embed.api import init_store
from embed.cli import cli
from embed.config import Config
from embed.db.connection import connect
from embed.db.localpg import LocalServer
from embed.embedders import get_embedder
from embed.safety.backup import take_backup
from embed.safety.evidence import visible_secrets
from embed.shadow.report import build_result
from embed.smoke import SENTINELS, run_smoke
from tests.conftest import ROOT, new_database
from tests.support.backfill import seeded

API_KEY = "sk-test-evidence-5f0c9a7e1b2d4c6a8e0f"
DB_PASSWORD = "Ev1dence-db-pw-7c41"
SPACE = "e5_small"


def with_password(url: str) -> str:
    """The same database with a password in the URL (the server trusts; the password is a canary)."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{DB_PASSWORD}@", 1)


def run(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", url, "--project", str(ROOT), "--gateway", "local", *args])


def shadow_result(url: str, cfg: Config, baseline: str, candidate: str) -> dict:
    """A shadow result over the real document ids (id lists only, as `embed shadow` stores them)."""
    with connect(url, vector=False) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM public.documents ORDER BY id LIMIT 30").fetchall()]
    rng = np.random.default_rng(5)
    rows = []
    for q in range(12):
        base = rng.choice(ids, 10, replace=False).tolist()
        rows += [(f"q{q}", baseline, r, d) for r, d in enumerate(base, 1)]
        rows += [(f"q{q}", candidate, r, d) for r, d in enumerate(rng.permutation(base).tolist(), 1)]
    d = rng.beta(2, 5, 200) * 0.9 + 0.01
    return build_result(
        pl.DataFrame(rows, schema={"qid": pl.String, "space": pl.String, "rank": pl.Int64, "doc_id": pl.String},
                     orient="row"),
        (baseline, cfg.space(baseline).fingerprint), [(candidate, cfg.space(candidate).fingerprint)], 10,
        latency_ms={baseline: rng.gamma(2, 4, 50), candidate: rng.gamma(2, 3, 50)},
        distances={candidate: pl.DataFrame({"base_distance": d, "cand_distance": 0.5 * d})},
        thresholds={"semantic_dedup": 0.05}, n_boot=50, source="documents",
    )


def record_shadow(url: str, result: dict, baseline_fp: str, candidate_fp: str) -> int:
    with connect(url, vector=False) as conn:
        return conn.execute(
            "INSERT INTO embed_store.shadow_runs (started_at, actor, source, baseline_fp, candidate_fps, result) "
            "VALUES (now(), 'test', 'documents', %s, %s, %s) RETURNING id",
            (baseline_fp, [candidate_fp], json.dumps(result)),
        ).fetchone()[0]


@pytest.fixture(scope="module")
def populated(pg_server: LocalServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A seeded Honcho-shaped database with smoke evidence for e5_small, a verified backup, a
    shadow run (e5_small vs the legacy space), one of two other spaces, and a gate result."""
    cfg = Config.load(ROOT, "local")
    url = seeded(new_database(pg_server), cfg, documents=40, messages=8)
    e5 = cfg.space(SPACE)
    with get_embedder(replace(e5, options={**e5.options, "threads": 1})) as emb:
        ev = run_smoke(emb, batch_sizes=(1, 8), repeats=1)
    assert ev["passed"], ev["checks"]
    with connect(url) as conn:
        store.record_smoke(conn, e5, ev)
    take_backup(cfg, url, tmp_path_factory.mktemp("bk") / "backup")
    legacy = cfg.legacy_space.name
    ours = record_shadow(url, shadow_result(url, cfg, legacy, SPACE), cfg.space(legacy).fingerprint, e5.fingerprint)
    other = cfg.space("bge_m3")
    theirs = record_shadow(url, shadow_result(url, cfg, legacy, "bge_m3"), cfg.space(legacy).fingerprint,
                           other.fingerprint)
    with connect(url, vector=False, autocommit=True) as conn:
        store.record_event(conn, "gate", "failed", space=e5, reason="coverage 0.0% < 100%",
                           details={"gates": [{"gate": "coverage", "passed": False, "value": 0.0}]})
        store.record_event(conn, "smoke", "ok", space=other, reason="another space's event")
        texts = [r[0] for q in ("SELECT content FROM public.documents", "SELECT content FROM public.messages",
                                "SELECT content FROM public.message_embeddings", "SELECT text FROM embed_eval.queries")
                 for r in conn.execute(q).fetchall() if r[0] and len(r[0].strip()) >= 12]
    assert len(texts) > 40
    return {"url": with_password(url), "cfg": cfg, "shadow": ours, "other_shadow": theirs, "texts": texts}


def forms(text: str) -> list[str]:
    return [text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1], html.escape(text)]


def assert_private(out: Path, texts: list[str]) -> None:
    """No seeded text (corpus, queries, smoke sentinels), API key or password in any byte of the bundle."""
    sentinels = [t for _sid, pl_text, en in SENTINELS for t in (pl_text, en)]
    for p in out.iterdir():
        blob = p.read_bytes().decode("utf-8")
        for secret in (API_KEY, DB_PASSWORD):
            assert secret not in blob, f"secret in {p.name}"
        for text in [*texts, *sentinels]:
            for f in forms(text):
                assert f not in blob, f"seeded text in {p.name}: {text[:20]!r}"


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_bundle_holds_every_record_with_hashes_and_no_text_or_secret(
    populated: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    cfg: Config = populated["cfg"]
    out = tmp_path / "ev" / "e5"
    r = run(populated["url"], "evidence", "--space", SPACE, "--out", str(out))
    assert r.exit_code == 0, r.output
    assert f"evidence for {SPACE} ({cfg.space(SPACE).fingerprint[:12]})" in r.output
    assert "gates: 1 result(s), latest failed" in r.output and "backups: 1 registered, 1 verified" in r.output

    shadow = f"shadow-documents-{populated['shadow']}"
    names = {p.name for p in out.iterdir()}
    assert names == {"index.md", "index.json", "smoke.json", f"{shadow}.json", f"{shadow}.html", "gates.json",
                     "backups.json", "history.json", "status.json"}
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert all(stat.S_IMODE((out / n).stat().st_mode) == 0o600 for n in names)

    index = json.loads((out / "index.json").read_text())
    md = (out / "index.md").read_text()
    fp = cfg.space(SPACE).fingerprint
    assert index["fingerprint"] == fp and fp in md
    assert {f["name"] for f in index["files"]} == names - {"index.md", "index.json"}
    for f in index["files"]:
        digest = hashlib.sha256((out / f["name"]).read_bytes()).hexdigest()
        assert f["sha256"] == digest and f"| `{f['name']}` | `{digest}` |" in md and f["proves"]
    assert hashlib.sha256((out / "index.json").read_bytes()).hexdigest() in md
    assert index["privacy"]["secrets_checked"] == ["$OPENAI_API_KEY", "database password"]

    docs = {n: json.loads((out / n).read_text()) for n in names if n.endswith(".json")}
    smoke = docs["smoke.json"]
    assert smoke["fingerprint"] == fp and smoke["passed"] is True and smoke["dims_observed"] == [384]
    assert smoke["endpoint_class"] == "in-process" and smoke["latency_ms"]["per_text"]["p95"] > 0
    assert docs[f"{shadow}.json"]["run"]["candidates"][0]["fingerprint"] == fp
    assert f"shadow-documents-{populated['other_shadow']}.json" not in names  # another space's run
    assert "<svg" in (out / f"{shadow}.html").read_text()
    assert [g["outcome"] for g in docs["gates.json"]] == ["failed"]
    backup = docs["backups.json"][0]
    assert backup["verified"] is True and backup["manifest"]["files"]["postgres.dump"]["sha256"]
    kinds = [e["kind"] for e in docs["history.json"]]
    assert "smoke" in kinds and "gate" in kinds
    assert all(e["space_fp"] in (fp, None) for e in docs["history.json"])  # not the other space's smoke
    pairs = {p["source"]: p for p in docs["status.json"]["pairs"]}
    assert set(pairs) == {"documents", "message_embeddings"} and pairs["documents"]["live_rows"] > 0
    assert_private(out, populated["texts"])


def test_rerun_replaces_the_previous_bundle_whole(populated: dict, tmp_path: Path) -> None:
    out = tmp_path / "e5"
    assert run(populated["url"], "evidence", "--space", SPACE, "--out", str(out)).exit_code == 0
    before = out.stat().st_ino
    (out / "smoke.json").chmod(0o600)
    (out / "smoke.json").write_text("{}")  # a stale / tampered file of the old bundle
    r = run(populated["url"], "evidence", "--space", SPACE, "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    index = json.loads(r.output)
    assert out.stat().st_ino != before  # a new directory took the old one's place
    smoke = next(f for f in index["files"] if f["name"] == "smoke.json")
    assert hashlib.sha256((out / "smoke.json").read_bytes()).hexdigest() == smoke["sha256"]
    assert leftovers(tmp_path) == []


def test_bad_input_is_one_line_and_writes_nothing(populated: dict, tmp_path: Path) -> None:
    url = populated["url"]
    r = run(url, "evidence", "--space", "nope", "--out", str(tmp_path / "a"))
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "unknown space 'nope'" in r.output
    assert not (tmp_path / "a").exists()

    afile = tmp_path / "afile"
    afile.write_text("keep me")
    r = run(url, "evidence", "--space", SPACE, "--out", str(afile))
    assert r.exit_code == 1 and "is not a directory" in r.output and afile.read_text() == "keep me"

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    r = run(url, "evidence", "--space", SPACE, "--out", str(foreign))
    assert r.exit_code == 1 and "holds no evidence bundle" in r.output
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    other = tmp_path / "other"
    assert run(url, "evidence", "--space", "bge_m3", "--out", str(other)).exit_code == 0
    r = run(url, "evidence", "--space", SPACE, "--out", str(other))
    assert r.exit_code == 1 and "evidence bundle of another space (bge_m3" in r.output
    (other / "extra.txt").write_text("x")
    r = run(url, "evidence", "--space", "bge_m3", "--out", str(other))
    assert r.exit_code == 1 and "not part of its evidence bundle (extra.txt)" in r.output
    assert json.loads((other / "index.json").read_text())["space"] == "bge_m3"

    empty = tmp_path / "empty"
    empty.mkdir(mode=0o755)
    assert run(url, "evidence", "--space", SPACE, "--out", str(empty)).exit_code == 0
    assert stat.S_IMODE(empty.stat().st_mode) == 0o700 and (empty / "index.md").is_file()
    assert leftovers(tmp_path) == []


def test_a_secret_in_the_store_fails_the_bundle_and_old_tables_are_reported_missing(
    pg_server: LocalServer, cfg: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grep backstop: a key that reached the event log keeps the bundle from being written.
    An embed_store older than shadow runs and backups, without source tables: reported, no crash."""
    url = new_database(pg_server)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    init_store(cfg, url)
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY + "\n")
    monkeypatch.setenv("OPENAI_API_KEY_FILE", str(key_file))
    with connect(url, vector=False, autocommit=True) as conn:
        conn.execute("DROP TABLE embed_store.shadow_metrics, embed_store.shadow_runs, embed_store.backups")
        leak = store.record_event(conn, "backfill", "failed", space=cfg.space(SPACE), reason=f"401 for key {API_KEY}")
    out = tmp_path / "ev"
    r = run(url, "evidence", "--space", SPACE, "--out", str(out))
    assert r.exit_code == 1 and "would contain a secret (file named by $OPENAI_API_KEY_FILE in history.json)" in r.output
    assert API_KEY not in r.output and not out.exists() and leftovers(tmp_path) == []

    with connect(url, vector=False, autocommit=True) as conn:
        conn.execute("DELETE FROM embed_store.events WHERE id = %s", (leak,))
    r = run(url, "evidence", "--space", SPACE, "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    sections = json.loads(r.output)["sections"]
    assert "shadow_runs does not exist" in sections["shadow"] and "backups does not exist" in sections["backups"]
    assert sections["smoke"].startswith("smoke: none recorded") and sections["gates"] == "gates: none recorded"
    assert sections["status"].startswith("status: a source table is missing")
    assert {p.name for p in out.iterdir()} == {"index.md", "index.json", "gates.json", "history.json"}


def test_secrets_that_grep_cannot_tell_apart_are_named_not_checked(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """Honcho's compose default is postgres/postgres: every masked URL prints the user name."""
    monkeypatch.setenv("OPENAI_API_KEY", "abc")
    monkeypatch.delenv("OPENAI_API_KEY_FILE", raising=False)
    checked, skipped = visible_secrets(cfg, "postgresql://postgres:postgres@db:5432/honcho")
    assert checked == []
    assert skipped == ["$OPENAI_API_KEY: shorter than 4 characters", "database password: equals the user or database name"]
    monkeypatch.setenv("EMBED_REDIS_URL", "redis://:r3d1s-pw@cache:6379/0")
    checked, _ = visible_secrets(cfg, "postgresql://honcho:s3cret-pw@db/honcho")
    assert checked == [("database password", "s3cret-pw"), ("Redis password", "r3d1s-pw")]
