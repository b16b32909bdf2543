"""The deadline policy: a pure function ``choose(policy, situation) -> Choice``, beside ``decide``.

Given how far the job is, how long is left before its deadline, whether spot capacity is there
now and what the job runs on, it says what to run on next: spot, on demand, or nothing (wait for
spot). The supervisor calls it before each attempt and while an attempt runs; ``bench/deadline.py``
replays real spot traces through the very same function.

Uniform Progress ("Can't Be Late", Wu et al., NSDI 2024) keeps the job on or ahead of the line of
uniform progress, ``work_total * elapsed / deadline``:

    spot is there                                   -> spot (even when behind the line)
    no spot, behind the line                        -> on demand
    no spot, on or ahead of the line                -> wait for spot (nothing billing)
    on demand, not yet two changeovers ahead        -> stay on demand (hysteresis: no flapping)
    on demand, ahead, no spot                       -> stay on demand: it leaves on demand for spot
                                                       only, never for nothing (coming back would
                                                       cost another changeover)
    time left < work left + two changeovers         -> on demand until the end (safety net)

Greedy takes spot whenever it is there and waits otherwise, until the same safety net; always-spot
never uses on demand; always-on-demand never uses spot. All times are seconds; work is seconds of
computing at the speed of the machine (the same on spot and on demand).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from launcher.errors import TaskError


class Mode(str, Enum):
    SPOT = "spot"
    ON_DEMAND = "on_demand"
    NONE = "none"  # nothing running, nothing billing: waiting for spot


@dataclass(frozen=True)
class Situation:
    elapsed: float  # seconds since the job was submitted
    deadline: float  # seconds from submission to the deadline
    work_done: float  # seconds of work done (kept in the store)
    work_total: float  # seconds of work in all
    changeover: float  # seconds lost each time a machine is started (provision, setup, resume)
    spot_available: bool  # spot capacity can be had now
    current: Mode = Mode.NONE  # what the job runs on now

    @property
    def time_left(self) -> float:
        return self.deadline - self.elapsed

    @property
    def work_left(self) -> float:
        return max(0.0, self.work_total - self.work_done)

    @property
    def expected(self) -> float:
        """Work done by now on the line of uniform progress."""
        if self.deadline <= 0:
            return self.work_total
        return self.work_total * min(1.0, max(0.0, self.elapsed / self.deadline))

    @property
    def in_safety_net(self) -> bool:
        return self.time_left < self.work_left + 2 * self.changeover


@dataclass(frozen=True)
class Choice:
    mode: Mode
    reason: str


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if abs(seconds) >= 3600 else f"{seconds / 60:.0f} min"


def _safety_net(s: Situation) -> Choice:
    return Choice(Mode.ON_DEMAND, f"safety net: {_hours(s.time_left)} left to the deadline, "
                                  f"{_hours(s.work_left)} of work left plus two changeovers")


def _spot_or_wait(s: Situation, why_spot: str, why_wait: str) -> Choice:
    return Choice(Mode.SPOT, why_spot) if s.spot_available else Choice(Mode.NONE, why_wait)


def uniform_progress(s: Situation) -> Choice:
    if s.work_left <= 0:
        return Choice(Mode.NONE, "done")
    if s.in_safety_net:
        return _safety_net(s)
    behind = s.work_done < s.expected
    if s.current is Mode.ON_DEMAND:
        if s.work_done < s.expected + 2 * s.changeover:
            return Choice(Mode.ON_DEMAND, f"on demand until two changeovers ahead of the progress "
                                          f"line ({_hours(s.work_done)} done, line at {_hours(s.expected)})")
        if not s.spot_available:
            return Choice(Mode.ON_DEMAND, "on demand until spot is available again (ahead of the "
                                          "progress line; leaving for nothing would cost a changeover back)")
        return Choice(Mode.SPOT, f"spot is available and the job is two changeovers ahead of the "
                                 f"progress line ({_hours(s.work_done)} done, line at {_hours(s.expected)})")
    if s.spot_available:
        return Choice(Mode.SPOT, "spot is available")
    if behind:
        return Choice(Mode.ON_DEMAND, f"no spot and behind the progress line "
                                      f"({_hours(s.work_done)} done, line at {_hours(s.expected)})")
    return Choice(Mode.NONE, f"no spot; ahead of the progress line ({_hours(s.work_done)} done, "
                             f"line at {_hours(s.expected)}): waiting for spot")


def greedy(s: Situation) -> Choice:
    if s.work_left <= 0:
        return Choice(Mode.NONE, "done")
    if s.in_safety_net:
        return _safety_net(s)
    return _spot_or_wait(s, "spot is available", "no spot: waiting for spot until the safety net")


def always_spot(s: Situation) -> Choice:
    if s.work_left <= 0:
        return Choice(Mode.NONE, "done")
    return _spot_or_wait(s, "spot only", "no spot: waiting (spot only)")


def always_on_demand(s: Situation) -> Choice:
    if s.work_left <= 0:
        return Choice(Mode.NONE, "done")
    return Choice(Mode.ON_DEMAND, "on demand only")


POLICIES: dict[str, Callable[[Situation], Choice]] = {
    "uniform_progress": uniform_progress,
    "greedy": greedy,
    "always_spot": always_spot,
    "always_on_demand": always_on_demand,
}


def choose(policy: str, situation: Situation) -> Choice:
    """What to run on now under ``policy`` (a key of ``POLICIES``)."""
    return POLICIES[policy](situation)


# --- the supervisor's side: a situation from the job's state -----------------------------------

DEFAULT_CHANGEOVER = 360.0  # until attempts have been measured: the paper's order of magnitude
MIN_CHANGEOVER = 60.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, what: str) -> float:
    """``"36h"``, ``"90m"``, ``"2d"`` -> seconds; TaskError naming the flag otherwise."""
    m = _DURATION.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise TaskError(f"{what} {text!r}: expected a duration like 36h, 90m or 2d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_deadline(text: str, now: float) -> float:
    """``--deadline``: a duration from ``now`` (``36h``) or an absolute time (``2026-12-04T17:00``,
    local time unless it names a zone) -> epoch seconds; TaskError when bad or already past."""
    import datetime as dt

    if _DURATION.match(text.strip()):
        return now + parse_duration(text, "--deadline")
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise TaskError(f"--deadline {text!r}: expected a duration (36h, 2d) or a time "
                        "(2026-12-04T17:00, 2026-12-04 17:00+01:00)") from None
    at = when.timestamp()  # a naive time is local time
    if at <= now:
        raise TaskError(f"--deadline {text!r}: that time has passed")
    return at


def mode_of(handle: dict, moving: bool = False) -> Mode:
    """What an attempt ran on; with ``moving``, where the policy was moving it when it stopped it
    (the next attempt goes there, even if the line moved a little during the stop)."""
    if moving and handle.get("deadline_to"):
        return Mode(handle["deadline_to"])
    return Mode(handle.get("mode", Mode.SPOT.value))


class DeadlineKeeper:
    """Builds the policy's ``Situation`` from the job's state (progress, attempts, options), asks
    Uniform Progress, and records the answer in the job's options for ``launch status``."""

    def __init__(self, state, job_id: int, clock: Callable[[], float], *, policy: str = "uniform_progress"):
        self.state, self.job_id, self.clock, self.policy = state, job_id, clock, policy

    @classmethod
    def for_job(cls, state, job, clock: Callable[[], float]) -> DeadlineKeeper | None:
        return cls(state, job.id, clock) if job.options.get("deadline") else None

    def _work(self, job, attempts, now: float) -> tuple[float, float] | None:
        """(seconds done, seconds in all): from the measured seconds per step once steps of a known
        total are done, else against the ``--estimate`` (the running time so far when the metrics
        name no total); None when neither is known."""
        from launcher.progress import fraction_done

        run_s = sum((a.ended or now) - a.run_started for a in attempts if a.run_started is not None)
        done = fraction_done(job.progress or {})
        if done and run_s > 0:
            return run_s, run_s / done
        estimate = job.options.get("estimate")
        if estimate:
            total = float(estimate)
            return (min(run_s, total) if done is None else done * total), total
        return None

    def changeover(self, attempts) -> float:
        """Mean measured time from an attempt's start to its run's start (at least a minute)."""
        measured = [a.run_started - a.started for a in attempts if a.run_started is not None and a.started]
        if not measured:
            return DEFAULT_CHANGEOVER
        return max(MIN_CHANGEOVER, sum(measured) / len(measured))

    def spot_available(self, attempts, now: float, changeover: float) -> bool:
        """Presumed there unless a spot attempt lost it (preempted, no capacity) within the last
        two changeovers; a stop asked by this policy does not count."""
        for a in reversed(attempts):
            if mode_of(a.handle) is not Mode.SPOT or a.handle.get("deadline_stop"):
                continue
            if a.state in ("PREEMPTED", "NO_CAPACITY") and now - (a.ended or now) < 2 * changeover:
                return False
            break
        return True

    def choose(self, current: Mode) -> Choice:
        job = self.state.job(self.job_id)
        attempts = self.state.attempts(self.job_id)
        now = self.clock()
        start, deadline = float(job.options.get("deadline_start", job.created)), float(job.options["deadline"])
        work = self._work(job, attempts, now)
        c = self.changeover(attempts)
        spot = self.spot_available(attempts, now, c)
        if work is None:
            choice = Choice(Mode.SPOT if spot else Mode.NONE,
                            "work left unknown until steps are measured (pass --estimate): spot")
            projected = None
        else:
            s = Situation(now - start, deadline - start, work[0], work[1], c, spot, current)
            choice = choose(self.policy, s)
            projected = now + s.work_left + (0.0 if current is not Mode.NONE else c)
        status = {"mode": choice.mode.value, "reason": choice.reason, "deadline": deadline,
                  "projected_finish": projected, "changeover_s": round(c, 1), "spot_available": spot,
                  "at": now}
        old = job.options.get("deadline_status") or {}
        if (old.get("mode"), old.get("reason")) != (status["mode"], status["reason"]) or now - old.get("at", 0) >= 60:
            self.state.set_job(self.job_id, options={**job.options, "deadline_status": status})
        if old.get("mode") != status["mode"] and choice.reason != "done":
            self.state.event(self.job_id, "deadline", f"{choice.mode.value.replace('_', ' ')}: {choice.reason}")
        return choice


def with_mode(resources: dict, mode: Mode) -> dict:
    """The option's resources on spot or on demand (the same machine, spot on or off)."""
    return {**resources, "use_spot": mode is Mode.SPOT}
