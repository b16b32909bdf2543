"""The supervisor's side of watching one job: it reads the progress the supervisor already keeps
(the last line of ``metrics.jsonl``) and the machine samples (``gpu.jsonl``) from the store, asks
``alerts.evaluate`` what holds, records each new alert as an event, and hands a stall back to the
supervisor, which relaunches the run like a preemption. It also writes, for ``launch status``, a
small summary (last GPU sample, steps/s, stall time) to ``$LAUNCH_HOME/watch/job-N.json``, and each
attempt's end to ``logs/attempt-N.end.json`` in the store (for ``launch plot``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launcher import contract, state as st
from launcher.errors import TaskError
from launcher.watch.alerts import Alert, Thresholds, changes, evaluate, longest_gap, stall_limit

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
STEP_WINDOW_S = 300.0  # steps/s over about the last five minutes
TAIL_BYTES = 1 << 16  # the samples file's tail that is parsed


def parse_duration(text: str, what: str = "--stall-after") -> float:
    """``"10m"`` -> 600.0; ``"0"`` -> 0.0 (off). Raises TaskError naming the value."""
    m = _DURATION.match(str(text).strip())
    if not m:
        raise TaskError(f"{what} {text!r}: expected a duration like 90s, 10m or 1.5h (0 turns it off)")
    return float(m.group(1)) * _UNIT[m.group(2)]


def summary_path(job_id: int) -> Path:
    return st.launch_home() / "watch" / f"job-{job_id}.json"


def read_summary(job_id: int) -> dict[str, Any]:
    """What the supervisor last wrote for ``launch status`` ({} when nothing yet)."""
    try:
        return json.loads(summary_path(job_id).read_text())
    except (OSError, ValueError):
        return {}


def steps_per_second(steps: list[tuple[float, float]]) -> float | None:
    """Training steps per second over the recent observations ``(seen_at, step)``."""
    firsts: list[tuple[float, float]] = []
    for t, s in steps:  # when each new highest step was first seen
        if not firsts or s > firsts[-1][1]:
            firsts.append((t, s))
    if len(firsts) < 2:
        return None
    t1, s1 = firsts[-1]
    t0, s0 = next(((t, s) for t, s in firsts if t >= t1 - STEP_WINDOW_S), firsts[0])
    if (t0, s0) == (t1, s1):
        t0, s0 = firsts[-2]
    return (s1 - s0) / (t1 - t0) if t1 > t0 else None


class Monitor:
    """One per supervisor. ``tick`` is called at every poll of a running attempt."""

    def __init__(self, state: st.State, job_id: int, clock: Callable[[], float], *,
                 thresholds: Thresholds, open_store: Callable[[str], Any] | None = None,
                 samples_every: float = 60.0):
        self.state, self.job_id, self.clock = state, job_id, clock
        self.th = thresholds
        self.samples_every = samples_every
        self._open_store = open_store
        self._store = None
        self.attempt: int | None = None
        self.gap = 0.0  # the longest quiet gap between new metrics lines in earlier attempts
        self._reset(None, 0.0)

    @classmethod
    def for_job(cls, state: st.State, job: st.Job, clock: Callable[[], float]) -> "Monitor":
        opts = job.options
        th = Thresholds(stall_after=opts.get("stall_after"),
                        **{k: float(opts[k]) for k in ("temp_c", "mem_percent", "idle_s") if k in opts})
        return cls(state, job.id, clock, thresholds=th, samples_every=float(opts.get("samples_every", 60.0)))

    def _reset(self, attempt: int | None, run_started: float) -> None:
        self.attempt = attempt
        self.run_started = run_started
        self.changes: list[tuple[float, float]] = []  # (seen_at, count of metrics lines changes)
        self.steps: list[tuple[float, float]] = []  # (seen_at, step)
        self._last_line: str | None = None
        self._n_changes = 0
        self.samples: list[dict[str, Any]] = []
        self._samples_read = float("-inf")
        self.active: set[str] = set()

    def store(self):
        if self._store is None:
            job = self.state.job(self.job_id)
            if not job.store_uri:
                return None
            if self._open_store is None:
                from launcher.store import open_store

                self._open_store = open_store
            self._store = self._open_store(job.store_uri)
        return self._store

    # --- observations --------------------------------------------------------------------------
    def _observe_progress(self, now: float, progress: dict[str, Any]) -> None:
        line = json.dumps(progress, sort_keys=True)
        if self._last_line is None:
            self._last_line = line  # what the store held when this attempt began
            self.changes.append((now, 0))
        elif line != self._last_line:
            self._last_line = line
            self._n_changes += 1
            self.changes.append((now, self._n_changes))
        if isinstance(progress.get("step"), (int, float)):
            self.steps.append((now, float(progress["step"])))
        cut = now - 2 * STEP_WINDOW_S
        self.steps = [o for o in self.steps if o[0] >= cut] or self.steps[-1:]

    def _read_samples(self, now: float) -> None:
        if now - self._samples_read < self.samples_every:
            return
        self._samples_read = now
        try:
            store = self.store()
            if store is None or not store.exists(contract.SAMPLES_NAME):
                return
            tail = store.get_bytes(contract.SAMPLES_NAME)[-TAIL_BYTES:].decode(errors="replace")
        except Exception:  # samples are informative only
            return
        recs = []
        for line in tail.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # the first line of the tail is cut
            if rec.get("attempt") == self.attempt:
                recs.append(rec)
        self.samples = recs

    # --- the supervisor's calls ----------------------------------------------------------------
    def tick(self, n: int, run_started: float, progress: dict[str, Any]) -> Alert | None:
        """Observe attempt ``n`` now; record new alerts as events; the stall, if the run hangs."""
        now = self.clock()
        if self.attempt != n:
            if self.attempt is not None:
                self.gap = max(self.gap, longest_gap(self.changes))
            self._reset(n, run_started)
        self._observe_progress(now, progress or {})
        self._read_samples(now)
        current = evaluate(self.samples, self.changes, now=now, run_started=run_started, th=self.th,
                           gap=self.gap)
        new, self.active = changes(current, self.active)
        for a in new:
            self.state.event(self.job_id, "alert", f"attempt {n}: {a.message}")
        self._write_summary(n, now)
        return next((a for a in current if a.kind == "stalled"), None)

    def _write_summary(self, n: int, now: float) -> None:
        limit = stall_limit(self.changes, self.th, self.gap)
        doc = {"attempt": n, "updated": now, "steps_per_s": steps_per_second(self.steps),
               "gpu": self.samples[-1] if self.samples else None, "stall_after_s": limit,
               "alerts": sorted(self.active)}
        path = summary_path(self.job_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc))
            tmp.replace(path)
        except OSError:
            pass

    def attempt_ended(self, n: int, state: str, reason: str, exit_code: int | None) -> None:
        """Put how attempt ``n`` ended in the store, so ``launch plot`` needs nothing else."""
        try:
            a = self.state.attempt(self.job_id, n)
            store = self.store()
            if store is None:
                return
            doc = {"attempt": n, "state": state, "reason": reason, "exit_code": exit_code,
                   "host": a.host, "started": a.started, "run_started": a.run_started,
                   "ended": a.ended, "price_per_hour": a.price_per_hour, "cost": round(a.cost(), 6),
                   "last_step": (self.state.job(self.job_id).progress or {}).get("step")}
            store.child(contract.LOGS_PREFIX).put_bytes(f"attempt-{n}.end.json", json.dumps(doc).encode())
        except Exception as e:  # the store may be unreachable; the state still has it all
            self.state.event(self.job_id, "warning", f"attempt {n}: could not record its end in the store: {e}")

    def preflight_reason(self, n: int) -> str:
        """The agent's preflight finding for attempt ``n`` from its start record ('' if none)."""
        try:
            store = self.store()
            doc = json.loads(store.child(contract.LOGS_PREFIX).get_bytes(f"attempt-{n}.json"))
            return str(doc.get("preflight") or "")
        except Exception:
            return ""
