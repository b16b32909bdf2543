"""Progress on stderr: a live bar with ETA on a terminal, a plain line every N steps otherwise.

Under the launcher, stderr is a log file that is uploaded and tailed; a redrawn bar would fill it
with carriage returns, so off a terminal the progress is one readable line now and then. ``rich``
is optional: without it a terminal gets the plain lines too.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _fmt_seconds(s: float) -> str:
    s = int(max(s, 0))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def _fmt_fields(fields: dict[str, Any]) -> str:
    return " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in fields.items())


class Progress:
    """``update(step, **fields)`` after each step; ``message(text)`` for event lines.

    The ETA uses this attempt's own pace (steps since it started), so the time spent by earlier
    attempts does not distort it.
    """

    def __init__(self, name: str, total_steps: int, every: int = 10, stream: TextIO | None = None,
                 live: bool | None = None):
        self.name = name
        self.total = max(int(total_steps), 1)
        self.every = max(int(every), 1)
        self.stream = stream or sys.stderr
        self._start_step: int | None = None
        self._t0 = time.perf_counter()
        self._rich = None
        if live is None:
            live = bool(getattr(self.stream, "isatty", lambda: False)())
        if live:
            self._rich = self._start_rich()

    def _start_rich(self):
        try:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress,
                                       TextColumn, TimeElapsedColumn, TimeRemainingColumn)
        except ImportError:
            return None
        bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(),
                           MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
                           TimeRemainingColumn(),
                           TextColumn("{task.fields[info]}"),
                           console=Console(file=self.stream), transient=False)
        bar.start()
        self._task = bar.add_task(self.name, total=self.total, info="")
        return bar

    def eta(self, step: int) -> float | None:
        if self._start_step is None or step <= self._start_step:
            return None
        rate = (step - self._start_step) / (time.perf_counter() - self._t0)
        return (self.total - step) / rate if rate > 0 else None

    def update(self, step: int, **fields: Any) -> None:
        if self._start_step is None:  # the first step of this attempt (maybe after a resume)
            self._start_step, self._t0 = step - 1, time.perf_counter()
            if self._rich is not None:  # a jump from 0 must not count as speed in rich's ETA
                self._rich.reset(self._task, completed=step - 1)
        if self._rich is not None:
            self._rich.update(self._task, completed=step, info=_fmt_fields(fields))
            return
        if step % self.every and step != self.total:
            return
        eta = self.eta(step)
        tail = f" | eta {_fmt_seconds(eta)}" if eta is not None else ""
        self.message(f"step {step}/{self.total} {_fmt_fields(fields)}{tail}")

    def message(self, text: str) -> None:
        if self._rich is not None:
            self._rich.console.print(f"[{self.name}] {text}", markup=False, highlight=False)
        else:
            print(f"[{self.name}] {text}", file=self.stream, flush=True)

    def close(self) -> None:
        """Stop the live bar; safe to call twice."""
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
