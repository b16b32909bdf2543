"""Keep Vast.ai API calls under the service's per-IP rate limits, and back off when over them.

The API answers 429, without Retry-After, when calls of one kind come faster than its limits
(``RATES``: create about one per 4.5 s, show one per 2 s, destroy one per 3 s, list one per 1 s,
search about 10 a minute). The SDK's own retries of a 429 come within about 0.4 s and are refused
too, so the backend turns them off and paces here instead: ``wait(name)`` blocks until a call of
that kind may go, and ``done(name)`` says its answer is in (the next call is spaced from then:
the service saw it somewhere in between). After a 429 (another process on this IP was faster)
``backoff(name, tries)`` says how long to wait, doubling with jitter, and holds every call of
that kind back meanwhile.

The clock, the sleep and the random source are injected, so tests never wait in real time.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict, deque
from collections.abc import Callable

# call kind -> (calls, per seconds), as documented for the service
RATES: dict[str, tuple[int, float]] = {
    "create": (1, 4.5), "show": (1, 2.0), "destroy": (1, 3.0), "list": (1, 1.0), "search": (10, 60.0),
}
MARGIN = 1.05  # our clock and the service's do not tick together: keep a little further apart
MAX_BACKOFF = 60.0


class Pacer:
    """Spaces calls per kind; kinds not in ``rates`` go at once (until a 429 says otherwise).
    ``scale`` multiplies every interval (tests run a fake whose limits are scaled the same)."""

    def __init__(self, rates: dict[str, tuple[int, float]] | None = None, *, scale: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None):
        self.rates = {k: (n, w * scale * MARGIN) for k, (n, w) in (RATES if rates is None else rates).items()}
        self.scale = scale
        self.clock, self.sleep = clock, sleep
        self.rng = rng or random.Random()
        self._sent: dict[str, deque[float]] = defaultdict(deque)
        self._hold: dict[str, float] = {}  # kind -> no call of it before this time (after a 429)

    def interval(self, name: str) -> float:
        """The average spacing of calls of this kind (0 when not limited)."""
        n, window = self.rates.get(name, (1, 0.0))
        return window / n

    def wait(self, name: str) -> float:
        """Block until a call of kind ``name`` may go and count it as sent; returns the seconds
        waited."""
        waited = 0.0
        while True:
            now = self.clock()
            delay = self._hold.get(name, now) - now
            n, window = self.rates.get(name, (0, 0.0))
            sent = self._sent[name]
            while sent and sent[0] <= now - window:
                sent.popleft()
            if n and len(sent) >= n:
                delay = max(delay, sent[0] + window - now)
            if delay <= 0:
                sent.append(now)
                return waited
            self.sleep(delay)
            waited += delay

    def done(self, name: str) -> None:
        """The call counted by the last ``wait(name)`` has its answer: count it from now, since
        the service saw it somewhere between the send and the answer."""
        sent = self._sent.get(name)
        if sent:
            sent[-1] = max(sent[-1], self.clock())

    def backoff(self, name: str, tries: int) -> float:
        """After the ``tries``-th 429 in a row on ``name``: the seconds to wait (the kind's
        interval, at least a second, doubled per try, with jitter, capped); calls of this kind
        are held back that long."""
        base = max(self.interval(name), 1.0 * self.scale)
        delay = min(MAX_BACKOFF, base * 2 ** max(0, tries - 1)) * self.rng.uniform(0.5, 1.5)
        self._hold[name] = max(self._hold.get(name, 0.0), self.clock() + delay)
        return delay
