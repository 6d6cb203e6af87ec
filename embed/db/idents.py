"""Identifier validation and quoting: every name that reaches SQL passes through here."""

from __future__ import annotations

import re

from psycopg import sql

from embed.errors import EmbedError

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
PG_MAX_IDENT = 63


def check_name(kind: str, name: str) -> str:
    """Return `name` if it is a safe lower-case identifier part, else raise a clear error."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or "__" in name:
        raise EmbedError(
            f"invalid {kind} name {name!r}: use 1-31 characters of a-z, 0-9 and single '_', "
            "starting with a letter"
        )
    return name


def qualified(dotted: str) -> sql.Composable:
    """Quote `schema.table` (or `table`) after validating each part."""
    parts = dotted.split(".")
    if not 1 <= len(parts) <= 2:
        raise EmbedError(f"invalid table name {dotted!r}: expected schema.table")
    for part in parts:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", part):
            raise EmbedError(f"invalid identifier {part!r} in {dotted!r}")
    return sql.Identifier(*parts)


def column(name: str) -> sql.Identifier:
    """Quote one column name after validating it."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise EmbedError(f"invalid column name {name!r}")
    return sql.Identifier(name)
