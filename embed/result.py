"""The base of every typed result a verb returns: a frozen dataclass whose `as_dict()` is its
JSON (`embed X --json` prints exactly that)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any


class Result:
    """Mixin for frozen dataclasses: fields are the JSON keys, nested results nest."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]
