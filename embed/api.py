"""The Python API behind the CLI: one function per operator verb (alembic's command.py), each
taking a Config and a database URL and returning data; `embed X` is `embed.api.X` printed.

    from embed import api
    from embed.config import Config
    cfg = Config.load(Path("."), "honcho")
    api.backfill(cfg, url, "bge_m3")
    print(api.gate(cfg, url, "bge_m3").passed)

The verbs defined here are the small ones; the others live with their concept and are exported
from here by name (VERBS), imported on first use so that `from embed import api` stays light.
"""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embed import mesh, store
from embed.config import Config
from embed.db import privileges
from embed.db.connection import connect, ensure_pgvector
from embed.db.files import write_atomic
from embed.errors import EmbedError, NotInitialized
from embed.result import Result
from embed.store import serving
from embed.store.location import check_legacy


@dataclass(frozen=True)
class Initialized(Result):
    created_tables: tuple[str, ...]  # embed_store tables made by this call (none the second time)
    declared_spaces: tuple[str, ...]  # spaces recorded for the first time
    external_models_changed: bool  # external_models.yaml was rewritten to match config.yaml
    legacy: Adoption | None = None  # the check that the legacy space wrote the legacy column (verify_legacy)


def init_store(cfg: Config, url: str, *, verify_legacy: int = 0) -> Initialized:
    """Create embed_store and every (source, space) table; sync external_models.yaml. Refuses a
    legacy space whose dims do not fit the column holding it, before creating anything; with
    `verify_legacy` N, also one whose own vectors of N sampled rows are not the column's
    (embed.verify.adoption: the measured cosine and the likely cause)."""
    from embed.verify import adoption

    ensure_pgvector(url)
    with connect(url) as conn:
        check_legacy(conn, cfg)
        if not store.is_initialized(conn):
            privileges.require(privileges.database_create(conn), "embed init")
        adopted = adoption(conn, cfg, verify_legacy) if verify_legacy else None
        created, declared = store.init(conn, cfg)
        serving.ensure(conn, cfg)
        if adopted is not None and adopted.outcome == "adopted":
            with conn.transaction():
                store.record_event(conn, "adopt", "ok", space=cfg.legacy_space, details=adopted.as_dict())
    return Initialized(tuple(created), tuple(declared), mesh.write_external_models(cfg), adopted)


@dataclass(frozen=True)
class SpaceRow(Result):
    name: str
    fingerprint: str
    dims: int
    provider: str
    model: str
    revision: str | None
    role: str  # active (production reads it), legacy, or -
    state: str  # its lifecycle state in the database, or 'not in database'


def list_spaces(cfg: Config, db: str | None = None) -> list[SpaceRow]:
    """Declared spaces with their role (legacy/active/candidate) and state in the database."""
    states: dict[str, str] = {}
    active = {cfg.legacy_space.fingerprint}  # what an unreachable database is assumed to read
    try:
        with connect(cfg.database_url(db)) as conn:
            if store.is_initialized(conn):
                states = store.space_states(conn)
            active = {st.space_fp for st in serving.read(conn, cfg).values()}
    except EmbedError:
        states = {}
    return [SpaceRow(sp.name, sp.fingerprint, sp.dims, sp.provider, sp.model, sp.revision,
                     "active" if sp.fingerprint in active else "legacy" if sp.name == cfg.legacy_space.name else "-",
                     states.get(sp.fingerprint, "not in database")) for sp in cfg.spaces.values()]


@dataclass(frozen=True)
class Seeded(Result):
    counts: dict[str, int]  # rows per table (documents, message_embeddings, queries, ...)
    legacy_space: str | None  # whose vectors fill the legacy columns (None: --no-vectors)
    dims: int
    seed: int
    seconds: float


def seed_honcho(
    cfg: Config, url: str, *, scale: str = "small", seed: int = 7, dims: int | None = None, vectors: bool = True
) -> Seeded:
    """Create the Honcho-shaped tables and load the seeded corpus, with legacy-space vectors."""
    from embed.honcho.synthetic.corpus import SCALES, generate
    from embed.honcho.synthetic.seed import seed as load

    legacy = cfg.legacy_space
    dims = dims or legacy.dims
    if vectors and dims != legacy.dims:
        raise EmbedError(f"--dims {dims} differs from the legacy space {legacy.name} ({legacy.dims}d)")
    ensure_pgvector(url)
    embed_fn = None
    embedder = None
    if vectors:
        from embed.embedders import get_embedder

        embedder = get_embedder(legacy)
        embed_fn = lambda texts: embedder.embed(texts, "passage").vectors  # noqa: E731
    t0 = time.monotonic()
    n_docs, n_msgs = SCALES[scale]
    corpus = generate(seed=seed, documents=n_docs, messages=n_msgs)
    try:
        with connect(url) as conn:
            counts = load(conn, corpus, dims=dims, vectors=embed_fn)
    finally:
        if embedder is not None:
            embedder.close()
    return Seeded(counts, legacy.name if vectors else None, dims, seed, round(time.monotonic() - t0, 1))


def smoke(
    cfg: Config,
    space_name: str,
    *,
    url: str | None,
    allow_cloud: bool = False,
    required: tuple[str, ...] | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Smoke-test a space's embedder; write the evidence JSON (0600) and record it in the store."""
    from embed.embedders import get_embedder
    from embed.smoke import DEFAULT_REQUIRED, run_smoke

    space = cfg.space(space_name)
    required = tuple(required or space.option("smoke_required") or DEFAULT_REQUIRED)
    with get_embedder(space, allow_cloud=allow_cloud) as embedder:
        evidence = run_smoke(embedder, required=required)
    if out is not None:
        write_atomic(out, json.dumps(evidence, indent=2, sort_keys=True) + "\n")
    if url is not None:
        with connect(url) as conn:
            if not store.is_initialized(conn):
                raise NotInitialized()
            evidence["smoke_run"] = store.record_smoke(conn, space, evidence)
    return evidence


OWN_VERBS = ("init_store", "list_spaces", "seed_honcho", "smoke")  # defined above
# verb -> module that defines it (docs/api.md: one example per verb)
VERBS = {
    "doctor": "embed.doctor",
    "plan": "embed.mesh", "audit": "embed.mesh",
    "backfill": "embed.fill.backfill", "backfill_preview": "embed.preview", "sync": "embed.fill.sync", "status": "embed.fill.status",
    "shadow": "embed.shadow.run",
    "gate": "embed.cutover.switch", "cutover": "embed.cutover.switch", "rollback": "embed.cutover.switch",
    "switch_preview": "embed.cutover.preview",
    "stage": "embed.cutover.inplace", "fill_column": "embed.cutover.inplace",
    "take_backup": "embed.safety.backup", "verify_backup": "embed.safety.backup", "list_backups": "embed.safety.backup",
    "retire": "embed.safety.retire", "retire_plan": "embed.safety.retire", "pin": "embed.safety.retire",
    "unpin": "embed.safety.retire", "history": "embed.store.events",
    "write_bundle": "embed.safety.evidence",
    "verify": "embed.verify", "verify_watch": "embed.verify", "verify_compare": "embed.verify",
}

__all__ = [  # noqa: RUF022 -- in the order of the procedure
    "doctor", "init_store", "list_spaces", "seed_honcho", "plan", "audit", "smoke", "take_backup", "verify_backup",
    "list_backups", "backfill_preview", "backfill", "sync", "status", "shadow", "gate", "switch_preview", "stage",
    "cutover", "rollback", "fill_column",
    "verify", "verify_watch", "verify_compare",
    "retire_plan", "retire", "pin", "unpin", "history", "write_bundle",
]

if TYPE_CHECKING:
    from embed.cutover.inplace import fill_column, stage
    from embed.cutover.preview import switch_preview
    from embed.cutover.switch import cutover, gate, rollback
    from embed.doctor import doctor
    from embed.fill.backfill import backfill
    from embed.fill.status import status
    from embed.fill.sync import sync
    from embed.mesh import audit, plan
    from embed.preview import backfill_preview
    from embed.safety.backup import list_backups, take_backup, verify_backup
    from embed.safety.evidence import write_bundle
    from embed.safety.retire import pin, retire, retire_plan, unpin
    from embed.shadow.run import shadow
    from embed.store.events import history
    from embed.verify import Adoption, verify, verify_compare, verify_watch


def __getattr__(name: str) -> Any:
    if name in VERBS:
        return getattr(importlib.import_module(VERBS[name]), name)
    raise AttributeError(f"module 'embed.api' has no attribute {name!r}")
