"""How long library steps report: `Progress` for counted work, a `Say` callable for notices.

On a terminal `Progress` is a rich progress bar; otherwise (a log, a pipe) it prints one plain
line at once, then one every `every` seconds and a last one at the end, so a log shows the work
moving. `--progress json` (format JSON) prints one JSON object per line for automation: a
`start` event at once, a `batch` event per batch done (rows, done, total, rows/s, ETA) and an
`end` event. The caller adds per batch (an embed call, a staged id range), never per chunk of
thousands of rows, so the numbers move as the work does. A notice (`say`) is one line, the
caller's to route: the CLI sends it to stderr, a script may collect it. Both only ever carry
counts, rates and names of sources and spaces: never row content.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as Bar
from rich.text import Text

Say = Callable[[str], None]
AUTO, JSON, NONE = "auto", "json", "none"
FORMATS = (AUTO, JSON, NONE)  # auto: a bar on a terminal, plain lines otherwise


def wanted(progress: bool | str) -> str:
    """A caller's `progress` (True/False, or one of FORMATS) as a format."""
    if progress is True or progress is False:
        return AUTO if progress else NONE
    if progress not in FORMATS:
        raise ValueError(f"progress must be one of {', '.join(FORMATS)}, got {progress!r}")
    return progress


def to_stderr(msg: str) -> None:
    """The default notice: `embed: <msg>` on stderr."""
    print(f"embed: {msg}", file=sys.stderr, flush=True)


def _hms(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class _RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0  # the mean since start, as the plain line says
        return Text(f"{task.completed / elapsed:,.0f} rows/s" if elapsed > 0 else "- rows/s")


class Progress:
    """Rows done out of an estimated total (the total grows if the work does): `start()`,
    `add(n)` from any thread (one batch done), `finish()`. `fmt`: auto or json."""

    def __init__(
        self, label: str, total: int, *, stream: TextIO | None = None, every: float | None = None,
        tty: bool | None = None, fmt: str = AUTO,
    ) -> None:
        self.label = label
        self.total = max(int(total), 0)
        self.stream = stream or sys.stderr
        self.json = wanted(fmt) == JSON
        self.tty = (self.stream.isatty() if tty is None else tty) and not self.json
        self.every = every if every is not None else (0.5 if self.tty else 10.0)
        self.done = 0
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Bar | None = None
        self._task = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(self._task, completed=self.done, total=max(self.total, self.done))
            if self.json and n:
                self._event("batch", rows=n)

    def numbers(self) -> dict[str, float | int | None]:
        """done, total, percent, mean rows/s since start, ETA in seconds (None while unknown)."""
        elapsed = time.monotonic() - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        total = max(self.total, self.done)
        return {"done": self.done, "total": total, "pct": round(100.0 * self.done / total if total else 100.0, 1),
                "rows_per_s": round(rate, 1), "eta_s": round((total - self.done) / rate, 1) if rate > 0 else None,
                "elapsed_s": round(elapsed, 2)}

    def _event(self, event: str, **more: int) -> None:
        self.stream.write(json.dumps({"event": event, "label": self.label, **more, **self.numbers()}) + "\n")
        self.stream.flush()

    def line(self) -> str:
        """The plain line: label, rows done of total, percent, rate, ETA."""
        n = self.numbers()
        eta = _hms(float(n["eta_s"])) if n["eta_s"] is not None else "?"
        return f"{self.label}: {n['done']}/{n['total']} rows ({n['pct']:.1f}%), {n['rows_per_s']:,.0f} rows/s, ETA {eta}"

    def start(self) -> Progress:
        self.t0 = time.monotonic()
        if self.json:
            self._event("start")
        elif self.tty:
            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
                            TaskProgressColumn(), _RowsPerSecond(), TextColumn("ETA"), TimeRemainingColumn(),
                            console=Console(file=self.stream, force_terminal=True),
                            refresh_per_second=max(1.0 / self.every, 0.1))
            self._task = self._bar.add_task(self.label, total=self.total or None)
            self._bar.start()
        else:
            self._write()  # the first line at once: the command is alive and knows how much is ahead
            self._thread = threading.Thread(target=self._lines, name="embed-progress", daemon=True)
            self._thread.start()
        return self

    def _lines(self) -> None:
        while not self._stop.wait(self.every):
            self._write()

    def _write(self) -> None:
        self.stream.write(self.line() + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.json:
            with self._lock:
                self._event("end")
            return
        self._stop.set()
        if self._bar is not None:
            self.add(0)
            self._bar.stop()
            self._bar = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self._write()
