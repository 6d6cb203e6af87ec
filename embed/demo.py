"""`embed demo`: the whole migration on the embedded default, one line per step with its key number.

doctor → backup → smoke → backfill → sync under a live writer → shadow (HTML) → `embed verify --where
endpoint` → gate (blocked, then passing) → the cutover's dry run → cutover → the Honcho-style query in the
new space → rollback → the in-place path an unmodified Honcho takes (stage and swap with Honcho stopped,
`embed verify` on its live column after its restart, a Honcho restarted on the OLD model caught by the next
verify pass and repaired, in-place rollback) → cutover again → retire dry-run → evidence bundle. Legacy vectors come from the English-only MiniLM, the
candidate is the multilingual e5-small (both real offline models); BGE-M3 joins as a second
candidate when its weights are on disk ($EMBED_BGE_M3_PATH).

It works on a copy of the project in <home>/demo/project, so nothing it writes (external models,
SQLMesh's cache) lands in the operator's checkout. Safe to re-run: every step is idempotent, and a
second run first rolls back to the legacy space to replay the procedure.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psycopg import sql

from embed import api
from embed.config import Config
from embed.db.connection import connect, mask
from embed.db.files import write_atomic
from embed.db.localpg import LocalServer
from embed.fill.progress import Say

CANDIDATE = "e5_small"
BGE_M3 = "bge_m3"
PROJECT_FILES = ("config.yaml", "external_models.yaml", "models", "macros", "audits")


def _step(say: Say, name: str, fn: Callable[[], str]) -> None:
    t0 = time.monotonic()
    line = fn()
    say(f"[{name:<8}] {line}  ({time.monotonic() - t0:.1f}s)")


def demo_project(cfg: Config, workdir: Path) -> Config:
    """A copy of the project for the demo, refreshed on every run (what production reads lives
    in the database, never in these files)."""
    dest = workdir / "project"
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src, out = Path(cfg.project) / name, dest / name
        if src.is_dir():
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(src, out, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, out)
    return Config.load(dest, cfg.gateway)


def _bge_m3_weights() -> Path | None:
    path = os.environ.get("EMBED_BGE_M3_PATH")
    return Path(path) if path and Path(path).is_dir() else None


def run(cfg: Config, db: str | None, *, scale: str, say: Say) -> dict[str, Any]:
    st: dict[str, Any] = {}
    legacy = cfg.legacy_space.name
    candidates = [CANDIDATE] + ([BGE_M3] if _bge_m3_weights() else [])

    def database() -> str:
        if db:
            st["url"], st["work"] = db, Path(cfg.project) / ".embed" / "demo"
            return f"using {mask(db)}"
        server = LocalServer.default(cfg.project)
        st["url"], st["work"] = server.up(), server.home / "demo"
        return f"embedded PostgreSQL + pgvector at {st['url']}"

    def project() -> str:
        st["cfg"] = demo_project(cfg, st["work"])
        return f"demo project (a copy of the checkout's project files): {st['cfg'].project}"

    def redis() -> str:
        from embed.db.localredis import LocalRedis

        if not LocalRedis.available():
            st["redis"] = None
            return "redis-server is not on this machine: the backup covers PostgreSQL only"
        st["redis_server"] = r = LocalRedis(st["work"] / "redis")
        st["redis"] = r.up()
        port = int(st["redis"].rsplit(":", 1)[1].split("/")[0])
        for i in range(20):  # what Honcho's cache holds: short-lived keys under honcho:v2:
            r.cli(port, "SET", f"honcho:v2:demo:peer:{i}", f"cached-{i}", "EX", "3600")
        return f"private redis-server (Honcho's cache) at {st['redis']}, 20 cache keys"

    def seed() -> str:
        with connect(st["url"]) as conn:
            exists = conn.execute("SELECT to_regclass('public.documents') IS NOT NULL").fetchone()[0]
            n = conn.execute("SELECT count(*) FROM public.documents").fetchone()[0] if exists else 0
        if n > 0:
            return f"corpus already seeded ({n} documents), kept"
        out = api.seed_honcho(cfg, st["url"], scale=scale)
        c = out.counts
        return (f"seeded {c.get('documents', 0)} documents + {c.get('message_embeddings', 0)} message embeddings, "
                f"legacy vectors from {out.legacy_space} ({out.dims}d)")

    def doctor() -> str:
        d = api.doctor(st["cfg"], st["url"], spaces=[CANDIDATE])
        head = f"{len(d.findings)} finding(s), {len(d.blocking)} blocking (role {d.role})"
        return "\n".join([head, *(f"           {f.severity}: {f.source or '-'}: {f.message}" for f in d.findings)])

    def init() -> str:
        out = api.init_store(st["cfg"], st["url"])
        return f"embed_store: {len(out.created_tables)} table(s) created, {len(cfg.spaces)} spaces declared"

    def plan() -> str:
        out = api.plan(st["cfg"], st["url"])
        return f"sqlmesh plan applied: {len(out.new_snapshots)} view(s) built; audits passed"

    def reset() -> str:
        dcfg = st["cfg"]
        if all(name == legacy for name in _reads(dcfg, st["url"]).values()):
            return f"production reads {legacy} (the legacy space)"
        api.rollback(dcfg, st["url"])
        return f"a previous demo left {CANDIDATE} active: rolled back to {legacy} to replay the procedure"

    def backup() -> str:
        from embed.safety.backup import human_bytes

        out = st["work"] / "backups" / time.strftime("%Y%m%dT%H%M%S")
        m = api.take_backup(st["cfg"], st["url"], out, redis_url=st["redis"])
        size = sum(f["bytes"] for f in m.manifest["files"].values())
        return f"backup verified ({len(m.manifest['database']['tables'])} tables, {human_bytes(size)}" + (
            ", Redis RDB" if st["redis"] else "") + f") in {out}"

    def smoke() -> str:
        lines = []
        for name in candidates:
            ev = api.smoke(st["cfg"], name, url=st["url"], out=st["work"] / f"smoke-{name}.json")
            per_text = (ev.get("latency_ms") or {}).get("per_text") or {}
            lines.append(f"{name} {'PASSED' if ev['passed'] else 'FAILED'} (p50 {per_text.get('p50')} ms/text, "
                         f"endpoint {ev['endpoint_class']})")
        if BGE_M3 not in candidates:
            lines.append("bge_m3 not run: no local weights ($EMBED_BGE_M3_PATH)")
        return "; ".join(lines)

    def backfill() -> str:
        outs = [api.backfill(st["cfg"], st["url"], name, progress=False) for name in candidates]
        return "; ".join(f"{o.space}: {o.rows_written} rows written, {o.rows_reused} reused, "
                         f"{o.rows_per_s} rows/s" for o in outs)

    def sync() -> str:
        from embed.embedders import get_embedder
        from embed.fill.backfill import Options
        from embed.fill.sync import sync_once
        from embed.honcho.synthetic.live import LiveWriter

        st["legacy_embedder"] = emb = get_embedder(st["cfg"].legacy_space)
        st["writer"] = writer = LiveWriter(st["url"], lambda t: emb.embed(t, "passage").vectors)
        written = 0
        with writer:
            for _ in range(2):
                for name in candidates:
                    written += sync_once(st["cfg"], st["url"], name, opts=Options(progress=False)).rows_written
        for name in candidates:
            out = sync_once(st["cfg"], st["url"], name, opts=Options(progress=False))
            written += out.rows_written
        c = writer.counts
        return (f"a live writer added {c['inserted']}, edited {c['edited']}, deleted {c['deleted']} documents; "
                f"sync wrote {written} vector(s); lag now {out.rows_pending}")

    def shadow() -> str:
        from embed.shadow.report import render_html, verdict_lines

        # no labelling work: Honcho's provenance (documents cite their messages) judges both sources
        results = api.shadow(st["cfg"], st["url"], baseline=legacy, candidates=candidates, queries=200).as_dict()
        html = st["work"] / "shadow-documents.html"
        write_atomic(html, render_html(results["documents"]))
        st["report"] = html
        verdicts = [f"\n  {src}: {line}" for src, r in results.items() for line, _ in verdict_lines(r)]
        return _shadow_line(results["documents"], legacy) + f"; report {html}" + "".join(verdicts)

    def verify_endpoint() -> str:
        """What consumers will call after the switch reproduces the stored vectors (the verify gate);
        e5_small runs in-process here: this machine's model against the backfill's vectors."""
        v = api.verify(st["cfg"], st["url"], CANDIDATE, where="endpoint", sample=32, embedder=candidate())
        low = min((c.min_cosine for c in v.locations if c.min_cosine is not None), default=None)
        return (f"{CANDIDATE}'s endpoint ({v.locations[0].location}): {sum(c.checked for c in v.locations)} stored "
                f"rows reproduced, min cosine {low}, {v.offenders} offenders")

    def gate_blocked() -> str:
        st["writer"].burst(3)  # Honcho kept writing after the last sync
        r = api.gate(st["cfg"], st["url"], CANDIDATE)
        return ("BLOCKED: " + r.summary()) if not r.passed else "passed (expected a lag)"

    def gate_passing() -> str:
        from embed.fill.backfill import Options
        from embed.fill.sync import sync_once

        n = sync_once(st["cfg"], st["url"], CANDIDATE, opts=Options(progress=False), embedder=candidate()).rows_written
        r = api.gate(st["cfg"], st["url"], CANDIDATE)
        verdict = "PASS" if r.passed else "BLOCKED: " + r.summary()
        return f"after `embed sync` ({n} written): {verdict}, {sum(g.passed for g in r.gates)}/{len(r.gates)} gates"

    def preview() -> str:
        p = api.switch_preview(st["cfg"], st["url"], "cutover", CANDIDATE)
        locks = sorted({s.lock.split(" (")[0] for s in p.statements})
        return (f"dry run of the cutover, nothing changed: {len(p.statements)} statement(s) in order "
                f"(locks: {', '.join(locks)}), {len(p.blockers)} gate(s) failing")

    def cutover() -> str:
        out = api.cutover(st["cfg"], st["url"], CANDIDATE)
        moved = ", ".join(f"{s} {a} -> {b}" for s, (a, b) in out.switched.items())
        return f"view mode: {moved} in {out.seconds} s"

    def query() -> str:
        return _honcho_style_query(st["cfg"], st["url"])

    def rollback() -> str:
        out = api.rollback(st["cfg"], st["url"])
        moved = ", ".join(f"{s} -> {b}" for s, (_, b) in out.switched.items())
        again = api.rollback(st["cfg"], st["url"])  # a retry is not a new action
        return (f"{moved} in {out.seconds} s (the legacy column is kept current by Honcho itself); "
                f"again: {again.outcome}")

    def inplace() -> str:
        api.rollback(st["cfg"], st["url"])  # back to the legacy space, to walk the in-place path from it
        out = api.cutover(st["cfg"], st["url"], CANDIDATE, mode="honcho-inplace", writers_policy="writers-stopped")
        env = {x.name: x.value for x in out.honcho.settings} if out.honcho else {}
        return (f"Honcho stopped; its columns swapped to {CANDIDATE} (lock {(out.swap or {}).get('lock_ms')} ms); "
                f"restart it with EMBEDDING_VECTOR_DIMENSIONS={env.get('EMBEDDING_VECTOR_DIMENSIONS')} and the rest "
                "of the printed settings")

    def candidate() -> Any:
        """The candidate's embedder, loaded once for the in-place steps (closed at the end)."""
        if "candidate_embedder" not in st:
            from embed.embedders import get_embedder

            st["candidate_embedder"] = get_embedder(st["cfg"].space(CANDIDATE))
        return st["candidate_embedder"]

    def verify_live() -> str:
        from embed.honcho.synthetic.live import LiveWriter

        emb = candidate()  # Honcho restarted with the printed settings writes the candidate's vectors
        LiveWriter(st["url"], lambda t: emb.embed(t, "passage").vectors, seed=23).burst(3)
        v = api.verify(st["cfg"], st["url"], CANDIDATE, source="documents", embedder=emb)
        c = v.locations[0]
        return (f"Honcho's live column: {c.checked} rows checked ({c.from_store} against the store, {c.embedded} "
                f"embedded), min cosine {c.min_cosine}, {c.offenders} offenders, contaminated <= "
                f"{c.contaminated_upper_95 * 100:.2f} %")

    def old_model() -> str:
        st["writer"].burst(3)  # Honcho restarted with its OLD settings: the legacy model, the same dims
        v = api.verify(st["cfg"], st["url"], CANDIDATE, source="documents", since_last=True,  # the next watch pass
                       embedder=candidate())
        c = v.locations[0]
        red = [g.gate for g in api.gate(st["cfg"], st["url"], CANDIDATE).gates if not g.passed]
        return (f"Honcho on the old model wrote 3 rows: the next watch pass flags {c.offenders} of {c.checked} new "
                f"rows (ids {', '.join(c.offender_ids)}); gate red on {', '.join(sorted(set(red)))}; "
                f"or roll back: {v.rollback}")

    def repair() -> str:
        c = api.verify(st["cfg"], st["url"], CANDIDATE, source="documents", repair=True,
                       embedder=candidate()).locations[0]
        after = api.verify(st["cfg"], st["url"], CANDIDATE, source="documents", embedder=candidate()).locations[0]
        return f"{c.repaired} vector(s) replaced by {CANDIDATE}'s own; now {after.offenders} offenders in {after.checked} rows"

    def inplace_back() -> str:
        from embed.fill.backfill import Options
        from embed.fill.sync import sync_once

        out = api.rollback(st["cfg"], st["url"], writers_policy="writers-stopped")
        c = api.verify(st["cfg"], st["url"], legacy, source="documents", where="live", sample=50).locations[0]
        n = sync_once(st["cfg"], st["url"], CANDIDATE, opts=Options(progress=False)).rows_written
        return (f"in-place rollback to {legacy} (lock {(out.swap or {}).get('lock_ms')} ms); its live column: "
                f"{c.checked} sampled rows, min cosine {c.min_cosine}, {c.offenders} offenders; "
                f"`embed sync` stored {n} row(s) Honcho wrote meanwhile")

    def retire() -> str:
        from embed.safety.backup import human_bytes

        p = api.retire_plan(st["cfg"], st["url"], legacy)
        why = p.blockers[0] if p.blockers else "allowed"
        return f"dry run for {legacy}: would free {human_bytes(p.bytes)}; {why}"

    def evidence() -> str:
        out = st["work"] / "evidence"
        idx = api.write_bundle(st["cfg"], st["url"], CANDIDATE, out)
        return f"{len(idx.index['files'])} file(s) in {out} (index.md lists their sha256)"

    steps: list[tuple[str, Callable[[], str]]] = [
        ("db", database), ("project", project), ("redis", redis), ("seed", seed), ("doctor", doctor), ("init", init),
        ("plan", plan), ("reset", reset), ("backup", backup), ("smoke", smoke), ("backfill", backfill),
        ("sync", sync), ("shadow", shadow), ("verify", verify_endpoint), ("gate", gate_blocked), ("gate", gate_passing), ("preview", preview),
        ("cutover", cutover), ("query", query), ("rollback", rollback), ("inplace", inplace), ("verify", verify_live),
        ("verify", old_model), ("repair", repair), ("rollback", inplace_back), ("cutover", cutover), ("query", query),
        ("retire", retire), ("evidence", evidence),
    ]
    try:
        for name, fn in steps:
            _step(say, name, fn)
    finally:
        for held in ("legacy_embedder", "candidate_embedder"):
            if held in st:
                st[held].close()
        if st.get("redis_server") is not None:  # the demo's own cache server: nothing needs it afterwards
            st["redis_server"].down()
    say(f"evidence: {st['work'] / 'evidence'}  report: {st.get('report')}")
    say("demo finished: `embed history` shows every step's event, `embed audit` re-checks every gate; "
        + _left_running(db, st["url"]))
    return st


def _left_running(db: str | None, url: str) -> str:
    """The last line's account of what the demo leaves running (its redis-server is stopped)."""
    if db:
        return "nothing of the demo's is left running (the database is the one --db named)"
    return f"still running: the embedded PostgreSQL at {mask(url)} (stop it: `embed db down`)"


def _metric(result: dict[str, Any], key: str, metric: str, who: str, slice_value: str = "all") -> dict | None:
    col = "space" if key == "quality" else "candidate"
    return next((r for r in result.get(key, []) if r[col] == who and r["metric"] == metric
                 and r["slice_value"] == slice_value), None)


def _shadow_line(result: dict[str, Any], legacy: str) -> str:
    k = result["run"]["k"]
    cand = result["run"]["candidates"][0]["space"]
    base, new = _metric(result, "quality", f"ndcg@{k}", legacy), _metric(result, "quality", f"ndcg@{k}", cand)
    delta = _metric(result, "deltas", f"ndcg@{k}", cand)
    cross = _metric(result, "deltas", f"ndcg@{k}", cand, "en->pl")
    recall = next((r for r in result.get("ann_recall", []) if r["space"] == cand), None)
    parts = [f"{legacy} vs {cand}"]
    if base and new and delta:
        parts.append(f"nDCG@{k} {base['value']:.3f} -> {new['value']:.3f} "
                     f"(delta {delta['value']:+.3f} [{delta['ci_low']:+.3f}, {delta['ci_high']:+.3f}])")
    if cross:
        parts.append(f"EN->PL delta {cross['value']:+.3f}")
    if recall:
        parts.append(f"ANN recall {recall['value']:.3f}")
    return ", ".join(parts)


def _reads(cfg: Config, url: str) -> dict[str, str]:
    """source -> the space production reads (embed_store.serving)."""
    from embed.store import serving

    with connect(url) as conn:
        return {s: cfg.label(st.space_fp) for s, st in serving.read(conn, cfg).items()}


def _honcho_style_query(cfg: Config, url: str) -> str:
    """Run Honcho's read (tenant filters, ORDER BY distance LIMIT k) through `embed.documents_active`."""
    from embed.embedders import get_embedder

    space = cfg.space(_reads(cfg, url)["documents"])
    with connect(url) as conn:
        row = conn.execute(
            "SELECT text, workspace_name, observer, observed FROM embed_eval.queries ORDER BY qid LIMIT 1"
        ).fetchone()
        with get_embedder(space) as embedder:
            qvec = embedder.embed([row[0]], "query").vectors[0]
        t0 = time.perf_counter()
        rows = conn.execute(
            sql.SQL(
                "SELECT source_id, space_fp FROM embed.documents_active "
                "WHERE workspace_name = %s AND observer = %s AND observed = %s "
                "ORDER BY embedding OPERATOR(public.<=>) %s LIMIT 10"
            ),
            (row[1], row[2], row[3], qvec),
        ).fetchall()
        ms = (time.perf_counter() - t0) * 1000
    fps = {r[1][:12] for r in rows}
    return (f"Honcho-style top-10 through embed.documents_active: {len(rows)} ids in {ms:.1f} ms, "
            f"all from {space.name} ({', '.join(sorted(fps))})")
