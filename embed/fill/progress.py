"""Progress on stderr: a redrawn bar on a terminal, plain periodic lines otherwise.

It only ever prints counts, rates and names of sources and spaces: never row content.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def _hms(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Rows done out of an estimated total; `start()` runs a daemon thread that reports."""

    def __init__(
        self, label: str, total: int, *, stream: TextIO | None = None, every: float | None = None,
        tty: bool | None = None,
    ) -> None:
        self.label = label
        self.total = max(int(total), 0)
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every = every if every is not None else (0.5 if self.tty else 10.0)
        self.done = 0
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        total = max(self.total, self.done)
        pct = 100.0 * self.done / total if total else 100.0
        eta = _hms((total - self.done) / rate) if rate > 0 else "?"
        if self.tty:
            width = 24
            fill = int(width * pct / 100)
            bar = "#" * fill + "." * (width - fill)
            return f"{self.label} [{bar}] {self.done}/{total} rows {pct:5.1f}% {rate:,.0f} rows/s ETA {eta}"
        return f"{self.label}: {self.done}/{total} rows ({pct:.1f}%), {rate:,.0f} rows/s, ETA {eta}"

    def _emit(self, final: bool = False) -> None:
        text = self.line()
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._emit()

    def start(self) -> Progress:
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="embed-progress", daemon=True)
        self._thread.start()
        return self

    def finish(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self._emit(final=True)
