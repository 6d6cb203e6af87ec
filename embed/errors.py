"""The exception types the CLI turns into a one-line error and a non-zero exit."""

from __future__ import annotations

from typing import Any


class EmbedError(Exception):
    """A problem the operator can fix; its message is one clear line, free of secrets."""


class SwitchIncomplete(EmbedError):
    """Production was switched (committed and recorded) but a later step of the same command
    failed. `honcho` carries the settings Honcho needs now, printed with the error."""

    def __init__(self, message: str, honcho: Any = None) -> None:
        super().__init__(message)
        self.honcho = honcho
