"""The exception types the CLI turns into a one-line error and a non-zero exit."""

from __future__ import annotations

from typing import Any


class EmbedError(Exception):
    """A problem the operator can fix; its message is one clear line, free of secrets."""


class NotInitialized(EmbedError):
    """The database has no embed_store (yet)."""

    def __init__(self, message: str = "embed_store does not exist in this database: run `embed init` first") -> None:
        super().__init__(message)


class Busy(EmbedError):
    """Another session holds what this step needs (a lock, the tables); nothing changed: retry."""


class Blocked(EmbedError):
    """A safety check refused the step (a gate, the retention window, live writers); nothing changed."""


class NothingToDo(EmbedError):
    """The step asks for a state that already holds, in a way the command cannot treat as a
    retry (e.g. staging the space that is already live); nothing changed."""


class SwitchIncomplete(EmbedError):
    """Production was switched (committed and recorded) but a later step of the same command
    failed. `honcho` carries the settings Honcho needs now, printed with the error."""

    def __init__(self, message: str, honcho: Any = None) -> None:
        super().__init__(message)
        self.honcho = honcho


def first_line(text: str, default: str = "unknown error") -> str:
    """The first non-blank line of a (library's multi-line) message: what a one-line error quotes."""
    return next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), default)


def last_line(text: str, default: str = "no output") -> str:
    """The last non-blank line: where a command-line tool (pg_ctl, pg_dump, redis-cli) says why."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else default
