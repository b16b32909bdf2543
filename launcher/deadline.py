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

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


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
    return f"{seconds / 3600:.1f} h"


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
