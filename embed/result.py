"""The base of every typed result a verb returns: a frozen dataclass whose `as_dict()` is its
JSON (`embed X --json` prints exactly that)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar


class Result:
    """Mixin for frozen dataclasses: fields are the JSON keys, nested results nest."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class PerSource(Result):
    """A step over every source for one space: a result per source, and the TOTALS of its fields."""

    space: str
    fingerprint: str
    sources: dict[str, Any]  # source name -> that source's Result
    TOTALS: ClassVar[tuple[str, ...]] = ()

    def total(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.sources.values())

    def as_dict(self) -> dict[str, Any]:
        return {"space": self.space, "fingerprint": self.fingerprint,
                "sources": {n: s.as_dict() for n, s in self.sources.items()}, **{t: self.total(t) for t in self.TOTALS}}
