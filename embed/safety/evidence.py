"""`embed evidence`: one directory that shows a reviewer what happened to a space, and proves it.

For one space (by name, resolved to its fingerprint) the bundle holds the latest smoke evidence,
every shadow run where the space was baseline or candidate (JSON + the HTML report), the gate
results, the backup manifests, the event history and the coverage from `embed status`, plus
index.md / index.json naming each file with its sha256 and what it proves.

Privacy (invariant 6) is by construction, with a backstop:
- only bookkeeping in embed_store is read (ids, counts, hashes, metrics) and `embed status`
  counts; no content column of a source table is ever selected;
- before the bundle is published, every file is searched for the secrets this process can see
  (API keys named by the spaces' `api_key_env` / `<VAR>_FILE`, the database and Redis
  passwords) while it is still in memory; a hit fails the command and nothing is written.

Writes are all-or-nothing: the bundle is built in a private temporary sibling directory and
renamed into place, replacing (atomically where the kernel can exchange two directories) a
previous bundle of the same space. A directory holding anything else is refused.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import html
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from embed import store
from embed.config import Config
from embed.db.connection import connect
from embed.db.files import write_atomic
from embed.errors import EmbedError, NotInitialized, first_line
from embed.fill.status import status
from embed.result import Result
from embed.safety.backup import embed_version, masked_url
from embed.shadow.report import render_html
from embed.spaces import Space
from embed.store import registry
from embed.store.events import history

ARTIFACT = "embed.safety.evidence/1"
INDEX_JSON = "index.json"
INDEX_MD = "index.md"
NONE = "none recorded"
MIN_SECRET_LEN = 4  # shorter values match ordinary text: reported as not checkable instead


@dataclass
class Bundle:
    """The files of one bundle (name -> bytes, what it proves) and a one-line summary per section,
    including the sections with nothing recorded or no table to read."""

    space: Space
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    sections: dict[str, str] = field(default_factory=dict)  # section -> one-line summary

    def add_json(self, name: str, data: Any, proves: str) -> None:
        text = json.dumps(data, indent=2, sort_keys=True, default=str, ensure_ascii=False)
        self.files[name] = ((text + "\n").encode(), proves)

    def add_text(self, name: str, text: str, proves: str) -> None:
        self.files[name] = (text.encode(), proves)


# ---------------------------------------------------------------- collecting
def _space(conn: psycopg.Connection, cfg: Config, name: str) -> Space:
    if not store.is_initialized(conn):
        raise NotInitialized()
    return registry.by_name(conn, cfg, name)


def _select(conn: psycopg.Connection, b: Bundle, section: str, table: str, query: str,
            params: Any = None) -> list[tuple[Any, ...]] | None:
    """Rows of a bookkeeping table (`FROM {}` in `query`), or None with the section saying the
    table does not exist: a store made by an older embed is reported, never a crash."""
    if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{store.SCHEMA}.{table}",)).fetchone()[0]:
        b.sections[section] = f"{section}: table {store.SCHEMA}.{table} does not exist in this database yet: {NONE}"
        return None
    return conn.execute(sql.SQL(query).format(sql.Identifier(store.SCHEMA, table)), params).fetchall()


def _smoke(conn: psycopg.Connection, b: Bundle) -> None:
    rows = _select(conn, b, "smoke", "smoke_runs",
                   "SELECT id, at, actor, passed, endpoint_class, evidence, count(*) OVER () FROM {} "
                   "WHERE space_fp = %s ORDER BY at DESC, id DESC LIMIT 1", (b.space.fingerprint,))
    if rows is None:
        return
    if not rows:
        b.sections["smoke"] = f"smoke: {NONE} (run `embed smoke --space {b.space.name}`)"
        return
    rid, at, actor, passed, endpoint, ev, total = rows[0]
    lat = (ev.get("latency_ms") or {}).get("per_text") or {}
    summary = (f"smoke: run #{rid} at {at:%Y-%m-%d %H:%M:%S%z} by {actor}: {'PASSED' if passed else 'FAILED'}, "
               f"endpoint {endpoint}, dims observed {ev.get('dims_observed')}, "
               f"p50/p95 {lat.get('p50')}/{lat.get('p95')} ms per text ({total} run(s) recorded, latest kept)")
    b.add_json("smoke.json", {**ev, "smoke_run": rid, "recorded_at": at, "recorded_by": actor},
               "the embedder of this fingerprint made sane vectors: dims, PL/EN sentinels (ids + sha256 only), "
               "batch embedding, p50/p95 latency, endpoint class (" + summary + ")")
    b.sections["smoke"] = summary


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60] or "_"


def _shadow(conn: psycopg.Connection, b: Bundle) -> None:
    rows = _select(conn, b, "shadow", "shadow_runs",
                   "SELECT id, source, at, baseline_fp = %(fp)s, result FROM {} "
                   "WHERE baseline_fp = %(fp)s OR %(fp)s = ANY(candidate_fps) ORDER BY at, id",
                   {"fp": b.space.fingerprint})
    if rows is None:
        return
    if not rows:
        b.sections["shadow"] = f"shadow: {NONE} (run `embed shadow --baseline ... --candidate {b.space.name}`)"
        return
    unrendered = 0
    for rid, source, at, as_baseline, result in rows:
        stem = f"shadow-{_safe(source)}-{rid}"
        role = "baseline" if as_baseline else "candidate"
        b.add_json(f"{stem}.json", result, f"shadow run #{rid} on {source} at {at:%Y-%m-%d %H:%M:%S%z}, this space as "
                   f"{role}: retrieval compared from ranked id lists only, never vectors across spaces")
        try:
            page = render_html(result)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            unrendered += 1  # a result of another schema version: its JSON is still in the bundle
            continue
        b.add_text(f"{stem}.html", page, f"the same shadow run #{rid} as a self-contained report (no scripts, no URLs)")
    b.sections["shadow"] = f"shadow: {len(rows)} run(s)" + (f", {unrendered} without HTML (unknown result shape)"
                                                             if unrendered else "")


def _backups(conn: psycopg.Connection, b: Bundle) -> None:
    rows = _select(conn, b, "backups", "backups",
                   "SELECT id, at, actor, path, verified, verified_at, manifest FROM {} ORDER BY at DESC, id DESC")
    if rows is None:
        return
    keys = ("id", "at", "actor", "path", "verified", "verified_at", "manifest")
    data = [dict(zip(keys, r, strict=True)) for r in rows]
    verified = sum(1 for r in data if r["verified"])
    b.sections["backups"] = (f"backups: {len(data)} registered, {verified} verified"
                             + (f", newest #{data[0]['id']} at {data[0]['at']:%Y-%m-%d %H:%M:%S%z}" if data else
                                f" ({NONE}: run `embed backup --out DIR`)"))
    b.add_json("backups.json", data, "backups taken before anything destructive, newest first: manifest "
               "(sizes, sha256, row counts per table, server versions) and whether it was verified")


def collect(cfg: Config, url: str, name: str) -> Bundle:
    """Read everything the bundle holds (ids, counts, hashes and metrics only)."""
    with connect(url, vector=False, autocommit=True) as conn:
        b = Bundle(space=_space(conn, cfg, name))
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            _smoke(conn, b)
            _shadow(conn, b)
            _backups(conn, b)
    events = [e.as_dict() for e in history(cfg, url, name)]
    gates = [e for e in events if e["kind"] == "gate"]
    b.add_json("gates.json", gates, "every gate result recorded for this space (pass/fail with measured values)")
    b.sections["gates"] = (f"gates: {len(gates)} result(s), latest {gates[-1]['outcome']} at {gates[-1]['at']:%Y-%m-%d %H:%M:%S%z}"
                           if gates else f"gates: {NONE}")
    b.add_json("history.json", events, "the event log for this space, oldest first: who did what, when, why "
               "(smoke, backfill, gate, cutover, rollback, pin, retire)")
    b.sections["history"] = f"history: {len(events)} event(s)"
    _coverage(cfg, url, b)
    return b


def _coverage(cfg: Config, url: str, b: Bundle) -> None:
    declared = cfg.spaces.get(b.space.name)
    if declared is None or declared.fingerprint != b.space.fingerprint:
        b.sections["status"] = "status: this fingerprint is no longer declared in config.yaml: no coverage to report"
        return
    try:
        st = status(cfg, url, spaces=[b.space.name])
    except psycopg.errors.UndefinedTable as e:
        b.sections["status"] = f"status: a source table is missing ({first_line(str(e))}): {NONE}"
        return
    b.add_json("status.json", st.as_dict(), "coverage per source (and per workspace): live rows, current vectors, stale, "
               "orphans, pending, skipped, HNSW index state")
    b.sections["status"] = "status: " + "; ".join(
        f"{p.source} {p.totals.coverage_pct if p.totals else '-'}% covered, {p.totals.pending if p.totals else '-'} pending"
        for p in st.pairs
    )


# ---------------------------------------------------------------- secrets backstop
def visible_secrets(cfg: Config, url: str) -> tuple[list[tuple[str, str]], list[str]]:
    """([(label, value)] to search for, [labels that cannot be checked by grep])."""
    found: list[tuple[str, str]] = []
    for sp in cfg.spaces.values():
        env = sp.option("api_key_env")
        if not isinstance(env, str) or not env:
            continue
        if os.environ.get(env):
            found.append((f"${env}", os.environ[env].strip()))
        path = os.environ.get(f"{env}_FILE")
        if path:
            try:
                found.append((f"file named by ${env}_FILE", Path(path).read_text(encoding="utf-8").strip()))
            except (OSError, UnicodeDecodeError):
                pass  # unreadable here means it cannot have been copied into the bundle by us either
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        params = {}
    if params.get("password"):
        found.append(("database password", str(params["password"])))
    redis = os.environ.get("EMBED_REDIS_URL")
    if redis and urlsplit(redis).password:
        found.append(("Redis password", str(urlsplit(redis).password)))
    # A password equal to the user or database name is printed by every masked URL: grep cannot tell.
    named = {str(params.get(k, "")).lower() for k in ("user", "dbname")} - {""}
    checkable, skipped = [], []
    for label, value in dict.fromkeys(found):
        if len(value) < MIN_SECRET_LEN:
            skipped.append(f"{label}: shorter than {MIN_SECRET_LEN} characters")
        elif value.lower() in named:
            skipped.append(f"{label}: equals the user or database name")
        else:
            checkable.append((label, value))
    return checkable, skipped


def _forms(value: str) -> set[bytes]:
    """The ways a value can be written into JSON, HTML or a URL."""
    forms = {value, quote(value, safe=""), json.dumps(value)[1:-1],
             json.dumps(value, ensure_ascii=False)[1:-1], html.escape(value)}
    return {f.encode() for f in forms}


def leaked(files: Iterable[tuple[str, bytes]], secrets: list[tuple[str, str]]) -> list[str]:
    """`label in name` for every secret found in a file."""
    hits = []
    for name, data in files:
        for label, value in secrets:
            if any(f in data for f in _forms(value)):
                hits.append(f"{label} in {name}")
    return hits


# ---------------------------------------------------------------- writing
def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_target(out: Path, space: Space) -> bool:
    """Refuse a target that is not ours to replace; True when it holds a previous bundle."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise EmbedError(f"{out} exists and is not a directory: choose a new directory for the evidence")
    if not out.exists():
        return False
    entries = {p.name for p in out.iterdir()}
    if not entries:
        return False
    try:
        index = json.loads((out / INDEX_JSON).read_text())
        listed = {f["name"] for f in index["files"]} | {INDEX_JSON, INDEX_MD}
        if index["artifact"] != ARTIFACT:
            raise ValueError(index["artifact"])
    except (OSError, ValueError, KeyError, TypeError):
        raise EmbedError(f"{out} is not empty and holds no evidence bundle: choose a new or empty directory") from None
    if index.get("fingerprint") != space.fingerprint:
        raise EmbedError(f"{out} holds the evidence bundle of another space "
                         f"({index.get('space')}, {str(index.get('fingerprint'))[:12]}): not replaced")
    extra = sorted(entries - listed)
    if extra:
        raise EmbedError(f"{out} holds files that are not part of its evidence bundle ({', '.join(extra[:3])}): "
                         "not replaced")
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _publish(tmp: Path, out: Path, previous: bool) -> None:
    if not previous:
        os.rename(tmp, out)  # onto nothing, or onto an empty directory
        return
    if _exchange(tmp, out):
        shutil.rmtree(tmp)  # now the previous bundle
        return
    aside = out.with_name(f".{out.name}.old-{os.getpid()}")  # no exchange here: two renames
    os.rename(out, aside)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(aside, out)  # put the previous bundle back
        raise
    shutil.rmtree(aside)


def _index_md(index: dict[str, Any], b: Bundle, index_sha: str) -> str:
    lines = [
        f"# Evidence bundle: space `{b.space.name}`",
        "",
        f"- fingerprint: `{b.space.fingerprint}`",
        f"- model: {b.space.provider} `{b.space.model}` revision `{b.space.revision}`, {b.space.dims} dims, "
        f"{b.space.metric}",
        f"- collected: {index['created_at']} by {index['actor']} with embed {index['embed_version']}",
        f"- database: `{index['database']}` (gateway {index['gateway']})",
        "",
        "## What it shows",
        "",
        *[f"- {line}" for line in index["sections"].values()],
        "",
        "## Files",
        "",
        "| file | sha256 | what it proves |",
        "|---|---|---|",
        *[f"| `{f['name']}` | `{f['sha256']}` | {f['proves'].replace('|', '/')} |" for f in index["files"]],
        f"| `{INDEX_JSON}` | `{index_sha}` | this index, machine-readable |",
        "",
        "## Privacy",
        "",
        "Only ids, counts, hashes and metrics were read (no content column of any source table). Before "
        "publishing, every file was searched for: " + (", ".join(index["privacy"]["secrets_checked"]) or "no secret "
                                                       "was visible to this process") + ": none found.",
        *([f"Not checkable by grep: {'; '.join(index['privacy']['not_checkable'])}."]
          if index["privacy"]["not_checkable"] else []),
        "",
        "To check: `sha256sum *.json *.html` in this directory and compare with the table (or index.json).",
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class Published(Result):
    """A bundle written: its index (the document index.json holds) and where it is."""

    index: dict[str, Any]
    path: str

    def as_dict(self) -> dict[str, Any]:
        return {**self.index, "path": self.path}


def write_bundle(cfg: Config, url: str, name: str, out: Path) -> Published:
    """Collect, check for secrets and publish the bundle for space `name` into `out`."""
    out = Path(out).absolute()
    with connect(url, vector=False) as conn:
        space = _space(conn, cfg, name)
    check_target(out, space)  # bad input fails before any work
    b = collect(cfg, url, name)
    secrets, not_checkable = visible_secrets(cfg, url)
    index: dict[str, Any] = {
        "artifact": ARTIFACT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "actor": store.actor(),
        "embed_version": embed_version(),
        "gateway": cfg.gateway,
        "database": masked_url(url),
        "space": space.name,
        "fingerprint": space.fingerprint,
        "spec": space.spec(),
        "sections": b.sections,
        "files": [{"name": n, "sha256": sha256_bytes(d), "bytes": len(d), "proves": p}
                  for n, (d, p) in sorted(b.files.items())],
        "privacy": {"content_columns_read": False, "secrets_checked": [label for label, _ in secrets],
                    "not_checkable": not_checkable},
    }
    index_json = (json.dumps(index, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    blobs = {**{n: d for n, (d, _) in b.files.items()}, INDEX_JSON: index_json,
             INDEX_MD: _index_md(index, b, sha256_bytes(index_json)).encode()}
    hits = leaked(blobs.items(), secrets)
    if hits:
        raise EmbedError(f"evidence not written: it would contain a secret ({hits[0]}); find how it reached "
                         "embed_store before sharing any evidence")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))  # mode 0700
    except OSError as e:
        raise EmbedError(f"cannot create the evidence directory next to {out}: {e.strerror}") from None
    try:
        for n, d in blobs.items():
            write_atomic(tmp / n, d)
        previous = check_target(out, space)  # again: the directory may have changed while we collected
        _publish(tmp, out, previous)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise EmbedError(f"cannot write the evidence into {out}: {e.strerror or e}") from None
        raise
    return Published(index, str(out))
