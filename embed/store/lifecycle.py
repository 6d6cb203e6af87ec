"""The space lifecycle: one table of allowed moves, applied in the caller's transaction.

    declared -> smoke-passed | smoke-failed -> backfilling -> shadow -> gated -> active
    active -> retiring (a cutover replaced it: kept through the retention window) -> retired
    active -> gated (a rollback undid the cutover that made it active)

A state changes only by a named move, and only from the states the move lists: a smoke run
never moves an active space back to 'smoke-passed', a shadow run never demotes a gated one,
and a rollback moves both spaces back to where they stood before the cutover. A move from any
other state leaves the state as it is (the event that asked for it is still recorded).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from embed.errors import EmbedError

STATES = ("declared", "smoke-failed", "smoke-passed", "backfilling", "shadow", "gated", "active", "retiring",
          "retired")
_EARLY = frozenset({"declared", "smoke-failed", "smoke-passed"})
_PREPARING = _EARLY | {"backfilling", "shadow", "gated"}
_LIVE = frozenset(STATES) - {"retired"}

# move -> (the states it may start from, the state it leads to)
MOVES: dict[str, tuple[frozenset[str], str]] = {
    "smoke-passed": (_EARLY, "smoke-passed"),
    "smoke-failed": (_EARLY, "smoke-failed"),
    "backfill": (_EARLY, "backfilling"),
    "shadow": (_PREPARING - _EARLY, "shadow"),
    "gate": (_PREPARING - {"declared", "smoke-failed"}, "gated"),
    "activate": (_LIVE, "active"),  # a cutover or rollback made it what production reads
    "replace": (frozenset({"active"}), "retiring"),  # a cutover moved production off it
    "undo": (frozenset({"active"}), "gated"),  # a rollback moved production off it
    "retire": (_LIVE - {"active"}, "retiring"),  # its first object dropped
    "retired": (_LIVE - {"active"}, "retired"),  # its last object dropped
}


def move(conn: psycopg.Connection, fingerprint: str, name: str) -> str | None:
    """Apply move `name` to the space; returns the new state, or None when the space's current
    state is not one the move starts from (then nothing changes)."""
    try:
        froms, to = MOVES[name]
    except KeyError:
        raise EmbedError(f"unknown lifecycle move {name!r} (moves: {', '.join(MOVES)})") from None
    row = conn.execute(
        sql.SQL("UPDATE {} SET state = %s WHERE fingerprint = %s AND state = ANY(%s) RETURNING state").format(
            sql.Identifier("embed_store", "spaces")),
        (to, fingerprint, sorted(froms)),
    ).fetchone()
    return row[0] if row else None
