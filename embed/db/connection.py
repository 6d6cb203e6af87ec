"""Finding and connecting to the target database, whichever it is (embedded or a URL)."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

import psycopg
from pgvector.psycopg import register_vector

from embed.errors import EmbedError, first_line

URL_ENV = "EMBED_DATABASE_URL"
MIN_PGVECTOR = (0, 5, 0)  # HNSW; 0.8 adds iterative index scans for filtered queries


def mask(url: str) -> str:
    """The URL with its password replaced, for printing."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def sqlmesh_env(url: str) -> dict[str, str]:
    """The EMBED_PG* variables config.yaml reads, so SQLMesh reaches the same database."""
    u = urlsplit(url)
    return {
        "EMBED_PGHOST": u.hostname or "127.0.0.1",
        "EMBED_PGPORT": str(u.port or 5432),
        "EMBED_PGUSER": unquote(u.username or "postgres"),
        "EMBED_PGPASSWORD": unquote(u.password or ""),
        "EMBED_PGDATABASE": unquote(u.path.lstrip("/") or "postgres"),
    }


def connect(url: str, *, autocommit: bool = False, vector: bool = True) -> psycopg.Connection:
    """Open a connection with the pgvector adapters; errors name the server, never the password."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, application_name="embed", connect_timeout=10)
    except psycopg.OperationalError as e:
        reason = first_line(str(e)).replace(url, mask(url))
        raise EmbedError(f"cannot connect to {mask(url)}: {reason}") from None
    if vector:
        try:
            register_vector(conn)
        except psycopg.ProgrammingError:
            conn.close()
            raise EmbedError(pgvector_missing(url)) from None
    return conn


def pgvector_missing(url: str) -> str:
    return (
        f"the server at {mask(url)} has no pgvector extension installed in this database "
        "(need `CREATE EXTENSION vector`, pgvector >= 0.5; use a pgvector/pgvector image or `embed db up`)"
    )


def ensure_pgvector(url: str) -> str:
    """Create the extension when the server has it; a clear error when it does not. Returns its version."""
    with connect(url, autocommit=True, vector=False) as conn:
        row = conn.execute(
            "SELECT default_version, installed_version FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
        if row is None:
            raise EmbedError(pgvector_missing(url).replace("installed in this database", "available"))
        if row[1] is None:
            try:
                with conn.transaction():  # serialized: concurrent CREATE EXTENSIONs race on its catalog row
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext('embed.create_extension'))")
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.Error as e:
                hint = ("; a superuser (or the service's console) installs it once: CREATE EXTENSION vector;"
                        if isinstance(e, psycopg.errors.InsufficientPrivilege) else "")
                raise EmbedError(f"cannot create the vector extension on {mask(url)}: {first_line(str(e))}{hint}") from None
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
    if tuple(int(x) for x in re.findall(r"\d+", version)[:3]) < MIN_PGVECTOR:
        raise EmbedError(f"pgvector {version} on {mask(url)} is too old: need >= 0.5 (HNSW)")
    return version

