"""The privileges each step needs, whether the connected role holds them, and the GRANT that
fixes each one: no step needs a superuser once pgvector is installed (managed PostgreSQL such
as RDS, Cloud SQL or Supabase gives none).

    pgvector installed          every step          a superuser (or the service console) installs it once
    CREATE on the database      init, plan          embed_store and SQLMesh's schemas (`embed`, `sqlmesh`, ...)
    owner of embed_store        every step          whoever ran `embed init` owns it
    SELECT on a source table    backfill ... backup the rows to embed; pg_dump reads them too
    owner of a source table     in-place cutover, rollback, fill-column, retire: ALTER TABLE, CREATE INDEX
    SELECT on every table       backup              pg_dump of the whole database (or `--tables honcho`)
    MAINTAIN on a source table  in-place staging    optional: its closing VACUUM (ANALYZE), skipped without it
    pg_read_all_stats           in-place swap       optional: other roles' sessions with their details

Only catalog functions any role may call are used (has_*_privilege, pg_has_role).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from embed.errors import EmbedError
from embed.result import Result

STORE_SCHEMA = "embed_store"
CREATED_SCHEMAS = (STORE_SCHEMA, "embed", "sqlmesh", "sqlmesh__embed")  # init's, then SQLMesh's (plan)
INPLACE_STEPS = ("cutover --mode honcho-inplace", "rollback", "fill-column", "retire")


@dataclass(frozen=True)
class Privilege(Result):
    privilege: str  # what is needed, e.g. "CREATE on database honcho"
    steps: tuple[str, ...]  # the commands that need it
    held: bool  # whether the connected role holds it now
    fix: str  # the GRANT (or the one action) that gives it
    role: str  # the connected role it was checked for
    required: bool = True  # False: the steps run without it, with less to show


def role(conn: psycopg.Connection) -> tuple[str, str, bool]:
    """(current_user, current_database(), superuser)."""
    user, db, su = conn.execute(
        "SELECT current_user, current_database(), rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    return user, db, bool(su)


def _ident(name: str) -> str:
    return sql.Identifier(name).as_string(None)


def grant_membership(owner: str, user: str) -> str:
    return f"GRANT {_ident(owner)} TO {_ident(user)};  -- or run embed as {owner}"


def database_create(conn: psycopg.Connection) -> Privilege:
    user, db, _ = role(conn)
    held = conn.execute("SELECT has_database_privilege(current_database(), 'CREATE')").fetchone()[0]
    return Privilege(f"CREATE on database {db}", ("init", "plan"), bool(held),
                     f"GRANT CREATE ON DATABASE {_ident(db)} TO {_ident(user)};", user)


def create_needed(conn: psycopg.Connection) -> Privilege | None:
    """CREATE on the database while a schema that init or plan creates is missing (None: none is)."""
    missing = conn.execute("SELECT count(*) FROM unnest(%s::text[]) AS s(n) WHERE to_regnamespace(s.n) IS NULL",
                           (list(CREATED_SCHEMAS),)).fetchone()[0]
    return database_create(conn) if missing else None


def table_owner(conn: psycopg.Connection, table: str, steps: tuple[str, ...]) -> Privilege | None:
    """Membership in the owner role of `table` (schema.table); None when it does not exist."""
    user, _, _ = role(conn)
    row = conn.execute("SELECT pg_get_userbyid(relowner), pg_has_role(relowner, 'USAGE') FROM pg_class"
                       " WHERE oid = to_regclass(%s)", (table,)).fetchone()
    if row is None:
        return None
    return Privilege(f"owner of {table} (role {row[0]})", steps, bool(row[1]), grant_membership(row[0], user), user)


def table_maintain(conn: psycopg.Connection, table: str, steps: tuple[str, ...]) -> Privilege | None:
    """What VACUUM and ANALYZE of `table` need (None when it does not exist): MAINTAIN on it from
    PostgreSQL 17 (the owner's own grant, which it may revoke), membership in its owner before;
    owning the database also does. Without it PostgreSQL does not fail the VACUUM: it warns and
    skips the table, so the caller must ask first."""
    user, _, _ = role(conn)
    maintain = conn.info.server_version >= 170000
    row = conn.execute(
        "SELECT pg_get_userbyid(c.relowner), pg_has_role(d.datdba, 'USAGE') OR CASE WHEN %s"
        " THEN has_table_privilege(c.oid, 'MAINTAIN') ELSE pg_has_role(c.relowner, 'USAGE') END"
        " FROM pg_class AS c, pg_database AS d WHERE c.oid = to_regclass(%s) AND d.datname = current_database()",
        (maintain, table)).fetchone()
    if row is None:
        return None
    schema, _, name = table.rpartition(".")
    if maintain:
        return Privilege(f"MAINTAIN on {table}", steps, bool(row[1]),
                         f"GRANT MAINTAIN ON {_ident(schema or 'public')}.{_ident(name)} TO {_ident(user)};", user)
    return Privilege(f"owner of {table} (role {row[0]})", steps, bool(row[1]), grant_membership(row[0], user), user)


def table_select(conn: psycopg.Connection, table: str, steps: tuple[str, ...]) -> Privilege | None:
    user, _, _ = role(conn)
    row = conn.execute("SELECT has_table_privilege(to_regclass(%s), 'SELECT') WHERE to_regclass(%s) IS NOT NULL",
                       (table, table)).fetchone()
    if row is None:
        return None
    schema, _, name = table.rpartition(".")
    return Privilege(f"SELECT on {table}", steps, bool(row[0]),
                     f"GRANT SELECT ON {_ident(schema or 'public')}.{_ident(name)} TO {_ident(user)};", user)


def store_owner(conn: psycopg.Connection) -> Privilege | None:
    """Membership in the owner of schema embed_store (None before `embed init`)."""
    user, _, _ = role(conn)
    row = conn.execute("SELECT pg_get_userbyid(nspowner), pg_has_role(nspowner, 'USAGE') FROM pg_namespace"
                       " WHERE nspname = %s", (STORE_SCHEMA,)).fetchone()
    if row is None:
        return None
    return Privilege(f"owner of schema {STORE_SCHEMA} (role {row[0]})", ("every step after init",), bool(row[1]),
                     grant_membership(row[0], user), user)


def dump_readable(conn: psycopg.Connection) -> Privilege:
    """SELECT on every table of the database outside the system schemas: what pg_dump reads."""
    user, db, _ = role(conn)
    rows = conn.execute(
        """SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'p', 'm', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
             AND n.nspname NOT LIKE 'pg\\_%%' AND NOT has_table_privilege(c.oid, 'SELECT')
           ORDER BY 1 LIMIT 4""").fetchall()
    names = [r[0] for r in rows]
    what = f"SELECT on every table of database {db}" + (f" (not: {', '.join(names[:3])}...)" if names else "")
    return Privilege(what, ("backup",), not names,
                     f"GRANT SELECT ON <each table> TO {_ident(user)};  -- or `embed backup --tables honcho`", user)


def session_stats(conn: psycopg.Connection) -> Privilege:
    """Seeing other roles' sessions in full (pg_stat_activity). Without it the in-place swap still
    counts them (and refuses while they are connected) but cannot say from where or in what state."""
    user, _, su = role(conn)
    held = su or conn.execute("SELECT pg_has_role('pg_read_all_stats', 'USAGE')").fetchone()[0]
    return Privilege("pg_read_all_stats (other roles' sessions in full)", INPLACE_STEPS[:2], bool(held),
                     f"GRANT pg_read_all_stats TO {_ident(user)};", user, required=False)


def require(priv: Privilege | None, step: str) -> None:
    """Refuse `step` in one line naming the GRANT, when `priv` is not held (nothing changed)."""
    if priv is not None and not priv.held:
        raise EmbedError(f"{step} needs {priv.privilege}, which role {priv.role} lacks; nothing changed. "
                         f"Fix: {priv.fix}")
