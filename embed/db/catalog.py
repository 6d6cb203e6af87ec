"""What the catalog says about a source table that would break a step: objects bound to its
vector column, partitioning or inheritance, row-level security that applies to embed's role.

- A view or rule that reads the vector column follows it by column number: after an in-place swap
  renames the columns it would go on serving the *old* space under the old name, and it would block
  retiring the parked column. embed's own SQLMesh views (schema `embed`, its environments
  `embed__<env>` and SQLMesh's physical `sqlmesh__embed`) are re-planned by every switch and do not
  count.
- A partitioned table (or a partition, or an inheritance parent or child) cannot be staged: an
  index is not built CONCURRENTLY on a partitioned table, and a column inherited by a child cannot
  be renamed on its own.
- Row-level security that applies to the current role (`row_security_active`) hides the rows its
  policies filter: a backfill would silently miss them.

Every read here is of catalogs any role may read; nothing needs a superuser.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from embed.errors import Blocked

NOT_TABLES = {"v": "view", "m": "materialized view", "f": "foreign table"}
OWN_SCHEMAS = ("embed", "sqlmesh__embed")  # embed's SQLMesh views (environments: `embed__<env>`)


@dataclass(frozen=True)
class TableFacts:
    """One source table as the catalog describes it to the connected role."""

    table: str  # schema.table
    owner: str
    kind: str  # relkind: r table, p partitioned table, v view, m materialized view, f foreign table
    partitioned: bool  # declaratively partitioned (relkind 'p')
    partition_of: str | None  # the parent when the table is itself a partition
    inherits: tuple[str, ...]  # inheritance parents and children (partitions included)
    rls: bool  # row-level security applies to the connected role: rows may be hidden
    bound: tuple[str, ...]  # views, materialized views and rules that read the vector column

    @property
    def layout_problem(self) -> str | None:
        """Why the in-place swap cannot run on this table's layout (None: it can)."""
        if self.partitioned:
            return f"{self.table} is a partitioned table"
        if self.kind in NOT_TABLES:
            return f"{self.table} is a {NOT_TABLES[self.kind]}"
        if self.partition_of:
            return f"{self.table} is a partition of {self.partition_of}"
        if self.inherits:
            return f"{self.table} is in an inheritance tree ({', '.join(self.inherits)})"
        return None


def table_facts(conn: psycopg.Connection, schema: str, table: str, column: str | None) -> TableFacts | None:
    """The facts of schema.table, a table or anything else a source may be read from (a view, a
    foreign table); None when it does not exist or the role cannot see it."""
    name = f"{schema}.{table}"
    row = conn.execute(
        """SELECT c.oid, pg_get_userbyid(c.relowner), c.relkind::text, c.relkind = 'p', c.relispartition,
                  row_security_active(c.oid)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')""", (schema, table)).fetchone()
    if row is None:
        return None
    oid, owner, kind, partitioned, is_partition, rls = row
    related = "SELECT {0} FROM pg_inherits WHERE {1} = %s ORDER BY 1"
    parents = [_name(conn, r[0]) for r in conn.execute(related.format("inhparent", "inhrelid"), (oid,)).fetchall()]
    children = [_name(conn, r[0]) for r in conn.execute(related.format("inhrelid", "inhparent"), (oid,)).fetchall()]
    return TableFacts(name, owner, kind, bool(partitioned), parents[0] if is_partition and parents else None,
                      tuple(parents + children), bool(rls), bound_to(conn, oid, column) if column else ())


def _name(conn: psycopg.Connection, oid: int) -> str:
    """schema.table of a relation, schema always named (regclass's text drops it on the search path)."""
    return conn.execute("SELECT format('%%s.%%s', n.nspname, c.relname) FROM pg_class c"
                        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s", (oid,)).fetchone()[0]


def bound_to(conn: psycopg.Connection, oid: int, column: str) -> tuple[str, ...]:
    """Views, materialized views and rules (other than embed's own views) that read `column`."""
    rows = conn.execute(
        """SELECT DISTINCT r.rulename, c.relkind, n.nspname, c.relname
           FROM pg_depend d
           JOIN pg_rewrite r ON r.oid = d.objid
           JOIN pg_class c ON c.oid = r.ev_class
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
           WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
             AND d.refobjid = %s AND a.attname = %s
           ORDER BY 3, 4, 1""", (oid, column)).fetchall()
    out = []
    for rule, kind, schema, rel in rows:
        if rule != "_RETURN":
            out.append(f"rule {rule} on {schema}.{rel}")
        elif not (schema in OWN_SCHEMAS or schema.startswith("embed__")):
            out.append(f"{'materialized view' if kind == 'm' else 'view'} {schema}.{rel}")
    return tuple(out)



@dataclass(frozen=True)
class Problem:
    """Why steps would break on a table: what `embed doctor` lists and the steps refuse with."""

    check: str  # rls, partitioned, bound_objects
    steps: tuple[str, ...]  # the steps it breaks
    message: str
    fix: str

    def refuse(self, step: str) -> None:
        raise Blocked(f"{step} refused, nothing changed: {self.message}; {self.fix}")


READ_STEPS = ("backfill", "sync", "cutover --stage-only")
SWAP_STEPS = ("cutover --mode honcho-inplace", "rollback")


def hidden_rows(facts: TableFacts, role: str) -> Problem | None:
    """Row-level security hiding rows of the table from `role` (a backfill would miss them)."""
    if not facts.rls:
        return None
    return Problem("rls", READ_STEPS, f"row-level security on {facts.table} applies to role {role}, so rows its "
                   "policies hide would be silently missed",
                   f"run embed as the table's owner {facts.owner} (without FORCE ROW LEVEL SECURITY) or "
                   f"ALTER ROLE {role} BYPASSRLS")


def unswappable(facts: TableFacts, column: str) -> list[Problem]:
    """What an in-place swap of `column` would break: the table's layout, objects bound to it."""
    out = []
    if facts.layout_problem:
        out.append(Problem("partitioned", SWAP_STEPS, f"{facts.layout_problem}, whose column the in-place swap "
                           "cannot rename nor index CONCURRENTLY", "use `embed cutover --mode view`"))
    if facts.bound:
        out.append(Problem("bound_objects", SWAP_STEPS, f"{', '.join(facts.bound)} read {facts.table}.{column} and "
                           "would keep serving the old space after the in-place swap",
                           "drop them, cut over, then recreate them"))
    return out
