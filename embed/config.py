"""Reads config.yaml: the SQLMesh project config that also declares spaces and sources."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from embed.db.connection import URL_ENV, mask
from embed.db.idents import check_name, column, qualified
from embed.db.localpg import LocalServer
from embed.errors import EmbedError, first_line
from embed.spaces import Space, parse_space

CONFIG_FILE = "config.yaml"
ID_TYPES = ("text", "bigint")
DEFAULT_BUILD_MEMORY = "512MB"  # maintenance_work_mem of embed's HNSW builds unless embed_index says otherwise
_UNITS_KB = {"kB": 1, "MB": 1024, "GB": 1024**2, "TB": 1024**3}
_MAX_KB = 2**31 - 1  # PostgreSQL's ceiling for maintenance_work_mem


def memory_kb(value: object) -> int:
    """A PostgreSQL memory size ('512MB', '2GB', '65536kB') in kB; a bad one is a one-line error."""
    m = re.fullmatch(r"\s*(\d+)\s*(kB|MB|GB|TB)\s*", str(value))
    kb = int(m.group(1)) * _UNITS_KB[m.group(2)] if m else 0
    if not 1024 <= kb <= _MAX_KB:
        raise EmbedError(f"embed_index.maintenance_work_mem: {str(value)[:40]!r} is not a memory size from 1MB "
                         "to 2047GB written like 512MB (units kB, MB, GB, TB)")
    return kb


@dataclass(frozen=True)
class Source:
    """A table whose rows carry text to embed (read-only to embed)."""

    name: str
    table: str
    id_column: str
    id_type: str
    text_column: str
    vector_column: str | None
    live_filter: str
    tenant_columns: tuple[str, ...]
    # timestamp columns that every write of the vector column sets (Honcho: created_at on insert,
    # last_sync_at when its reconciler embeds a row): `embed verify --watch` reads only rows where
    # one of them moved since its last pass, through their indexes; empty: the watch scans the table
    written_at: tuple[str, ...] = ()

    @property
    def schema_table(self) -> tuple[str, str]:
        """(schema, table) of `table`, an unqualified name being in `public`."""
        schema, _, table = self.table.rpartition(".")
        return schema or "public", table


def parse_source(name: str, raw: Any) -> Source:
    check_name("source", name)
    if not isinstance(raw, dict):
        raise EmbedError(f"source {name!r}: expected a mapping of fields")
    try:
        src = Source(
            name=name,
            table=raw["table"],
            id_column=raw.get("id_column", "id"),
            id_type=raw.get("id_type", "text"),
            text_column=raw.get("text_column", "content"),
            vector_column=raw.get("vector_column"),
            live_filter=str(raw.get("live_filter", "TRUE")),
            tenant_columns=tuple(raw.get("tenant_columns", ())),
            written_at=tuple(raw.get("written_at", ()) or ()),
        )
    except KeyError as e:
        raise EmbedError(f"source {name!r}: missing {e.args[0]}") from None
    qualified(src.table)
    if not isinstance(raw.get("written_at", []) or [], list):
        raise EmbedError(f"source {name!r}: written_at must be a list of column names")
    for col in (src.id_column, src.text_column, *src.tenant_columns, *src.written_at):
        column(col)
    if src.vector_column:
        column(src.vector_column)
    if src.id_type not in ID_TYPES:
        raise EmbedError(f"source {name!r}: id_type must be one of {', '.join(ID_TYPES)}")
    # The live filter is SQL the operator wrote in the config; allow only simple predicates.
    if not re.fullmatch(r"[A-Za-z0-9_ .'=<>()]+", src.live_filter) or ";" in src.live_filter:
        raise EmbedError(f"source {name!r}: live_filter may only be a simple SQL predicate")
    return src


def find_project(start: Path | None = None) -> Path:
    """The project directory: $EMBED_PROJECT, else the nearest parent with config.yaml, else
    the checkout this package lives in."""
    env = os.environ.get("EMBED_PROJECT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / CONFIG_FILE).is_file() and (d / "models").is_dir():
            return d
    return Path(__file__).resolve().parent.parent


@dataclass
class Config:
    """The parsed project config for one gateway."""

    project: Path
    gateway: str
    raw: dict[str, Any]

    @classmethod
    def load(cls, project: Path | None = None, gateway: str | None = None) -> Config:
        project = project or find_project()
        path = project / CONFIG_FILE
        if not path.is_file():
            raise EmbedError(f"no {CONFIG_FILE} in {project} (set EMBED_PROJECT to the project directory)")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise EmbedError(f"{CONFIG_FILE} is not valid YAML: {first_line(str(e))}") from None
        gateway = gateway or os.environ.get("EMBED_GATEWAY") or raw.get("default_gateway") or "local"
        if gateway not in (raw.get("gateways") or {}):
            known = ", ".join(raw.get("gateways") or {}) or "none"
            raise EmbedError(f"unknown gateway {gateway!r} (declared: {known})")
        return cls(project=project, gateway=gateway, raw=raw)

    @classmethod
    def from_variables(cls, variables: dict[str, Any], project: Path | None = None) -> Config:
        """A Config over already-resolved variables (what a SQLMesh macro sees), no file read."""
        return cls(project=project or Path("."), gateway="resolved", raw={"gateways": {"resolved": {}},
                                                                          "variables": dict(variables)})

    @property
    def variables(self) -> dict[str, Any]:
        """Root variables overridden by the gateway's, as SQLMesh resolves them."""
        merged = dict(self.raw.get("variables") or {})
        merged.update((self.raw["gateways"][self.gateway] or {}).get("variables") or {})
        return merged

    @cached_property
    def spaces(self) -> dict[str, Space]:
        raw = self.variables.get("embed_spaces") or {}
        spaces = {name: parse_space(name, spec) for name, spec in raw.items()}
        if not spaces:
            raise EmbedError(f"{CONFIG_FILE} declares no spaces (variables.embed_spaces)")
        return spaces

    @cached_property
    def sources(self) -> dict[str, Source]:
        raw = self.variables.get("embed_sources") or {}
        return {name: parse_source(name, spec) for name, spec in raw.items()}

    def database_url(self, db: str | None = None) -> str:
        """The target database: the flag, then $EMBED_DATABASE_URL, then the embedded server of
        the `local` gateway."""
        url = db or os.environ.get(URL_ENV)
        if url:
            if not url.startswith(("postgresql://", "postgres://")):
                raise EmbedError(f"database URL must start with postgresql:// (got {mask(url)[:40]!r})")
            return url
        if self.gateway != "local":
            raise EmbedError(f"gateway {self.gateway!r} needs a database: pass --db URL or set {URL_ENV}")
        server = LocalServer.default(self.project)
        if not server.status()["running"]:
            raise EmbedError("the embedded database is not running: start it with `embed db up`")
        return server.url()

    def space(self, name: str) -> Space:
        try:
            return self.spaces[name]
        except KeyError:
            raise EmbedError(f"unknown space {name!r} (declared: {', '.join(self.spaces)})") from None

    def source(self, name: str) -> Source:
        try:
            return self.sources[name]
        except KeyError:
            raise EmbedError(f"unknown source {name!r} (declared: {', '.join(self.sources)})") from None

    @property
    def legacy_space(self) -> Space:
        """The space whose vectors already sit in the sources' own vector columns."""
        return self.space(self.variables.get("embed_legacy_space", ""))

    def space_by_fp(self, fingerprint: str | None) -> Space:
        """The declared space with this fingerprint (the legacy space for None)."""
        if fingerprint is None:
            return self.legacy_space
        for sp in self.spaces.values():
            if sp.fingerprint == fingerprint:
                return sp
        raise EmbedError(f"no declared space has fingerprint {fingerprint[:12]} (was its spec changed?)")

    def label(self, fingerprint: str | None) -> str:
        """A fingerprint as an operator reads it: the declared space's name, else its first 12 hex."""
        for sp in self.spaces.values():
            if sp.fingerprint == fingerprint:
                return sp.name
        return f"undeclared space {str(fingerprint)[:12]}"

    @property
    def index_params(self) -> dict[str, int]:
        """HNSW build parameters; `maintenance_work_mem_kb` is operational (the build's memory,
        not part of any fingerprint: the index it builds is the same)."""
        idx = self.variables.get("embed_index") or {}
        return {"m": int(idx.get("m", 16)), "ef_construction": int(idx.get("ef_construction", 64)),
                "maintenance_work_mem_kb": memory_kb(idx.get("maintenance_work_mem", DEFAULT_BUILD_MEMORY))}
