"""When to stop: a preemption notice (SIGTERM) or the attempt's deadline coming close.

The signal handler only sets a flag. Writing a checkpoint from inside a handler would interrupt
the training step at an arbitrary bytecode, with half-updated parameters; the harness instead looks
at the flag at the next step boundary, where the state is consistent.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Callable

REASON_PREEMPTED = "preempted"
REASON_DEADLINE = "deadline"


class StopNotice:
    """Answers "should the loop stop now, and why?".

    ``install()``/``uninstall()`` are safe to call twice. The handler is installed only from the
    main thread (Python delivers signals there), so a harness built in a worker thread still works,
    just without SIGTERM handling.
    """

    def __init__(self, deadline: float | None = None, clock: Callable[[], float] = time.time):
        self.deadline = deadline
        self.clock = clock
        self._flag = threading.Event()
        self._previous = None
        self._installed = False

    def install(self) -> None:
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous or signal.SIG_DFL)
            self._installed = False

    def _on_sigterm(self, signum, frame) -> None:
        self._flag.set()

    def notify(self) -> None:
        """Ask for a stop as SIGTERM would (for callers that learn of a preemption otherwise)."""
        self._flag.set()

    @property
    def preempted(self) -> bool:
        return self._flag.is_set()

    def seconds_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.clock()

    def reason(self, margin: float = 0.0) -> str | None:
        """``"preempted"``, ``"deadline"`` when ``now + margin >= deadline``, or None.

        ``margin`` is the caller's estimate of what continuing costs before it can stop again
        (one more step plus writing a checkpoint), so the stop comes early enough to finish.
        """
        if self._flag.is_set():
            return REASON_PREEMPTED
        if self.deadline is not None and self.clock() + margin >= self.deadline:
            return REASON_DEADLINE
        return None
