"""The recovery decision: a pure function ``decide(event, history, policy) -> Action``.

The policy is data. ``RULES`` maps how an attempt ended to what happens next; the function only
applies it, so every case is one row of a table in the tests. Sequences it produces, for example:

    attempt 1 preempted (notice)       -> relaunch now on the same option, resume from the store
    attempt 2 preempted again quickly  -> relaunch after 5 s (backoff doubles, capped; a run
                                          of 10 min or more, or one that committed a new
                                          checkpoint, resets it)
    attempts 2-9 preempted, each after
      committing a checkpoint          -> relaunch now each time: progress is not a crash loop
    attempts 2-9 ended by fire drills  -> relaunch now each time: the drill, not the provider,
                                          ended them, and there are only as many as were asked
    attempt 3 no capacity on V100      -> relaunch after 5 s on the next any_of option (A6000)
    attempt 4 stalled (no new step)    -> killed, relaunched like a preemption; failed after 3 in a row
    attempt 4 exit code 1              -> failed (max_restarts_on_errors: 0)
    attempt 4 exit code 1              -> relaunch (max_restarts_on_errors: 2, 1 used so far)
    managed job FAILED (final)         -> failed: SkyPilot already spent max_restarts_on_errors
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Outcome(str, Enum):
    SUCCEEDED = "succeeded"
    PREEMPTED = "preempted"  # notice + exit 75, host lost, outbid, session ended, fire drill
    FAILED = "failed"  # the run exited non-zero: a user error
    NO_CAPACITY = "no_capacity"  # nothing to rent / no free host right now
    SETUP_FAILED = "setup_failed"  # bootstrap or setup could not complete on the machine
    STALLED = "stalled"  # alive but no training progress for the stall time: killed, relaunched


@dataclass(frozen=True)
class Event:
    outcome: Outcome
    exit_code: int | None = None
    reason: str = ""
    option: int = 0  # index of the resources option the attempt ran on
    ran_for: float = 0.0  # seconds the run went on before it ended
    final: bool = False  # no relaunch can help: the provider's own recovery already gave up on it
    # (SkyPilot managed jobs), or the credentials were refused
    final_note: str = "the provider's recovery already gave up"  # appended to the reason, if any
    progressed: bool = False  # the attempt put a newer checkpoint in the store than it started from
    drill: bool = False  # a fire drill (``--chaos``) ended it, not the provider


@dataclass(frozen=True)
class Policy:
    max_restarts_on_errors: int = 0
    recover_on_exit_codes: frozenset[int] = frozenset()
    n_options: int = 1
    eager_failover: bool = False  # EAGER_NEXT_REGION: move to the next option after a preemption
    backoff_initial: float = 5.0
    backoff_factor: float = 2.0
    backoff_max: float = 300.0
    max_setup_failures: int = 3
    productive_run: float = 600.0  # a preemption after a run this long does not add to the back-off
    # (nor does one after an attempt that committed a new checkpoint: ``Event.progressed``)
    max_consecutive_stalls: int = 3  # a run that hangs this many times in a row has failed


@dataclass(frozen=True)
class Action:
    relaunch: bool
    final_state: str = ""  # SUCCEEDED | FAILED when not relaunching
    delay: float = 0.0
    option: int = 0
    reason: str = ""


@dataclass(frozen=True)
class Rule:
    retry: bool
    counts_as_error: bool = False  # bounded by max_restarts_on_errors
    failover: bool = False  # move to the next resources option
    backoff_from: int = 1  # the n-th consecutive such event is the first to wait


RULES: dict[Outcome, Rule] = {
    Outcome.SUCCEEDED: Rule(retry=False),
    Outcome.PREEMPTED: Rule(retry=True, backoff_from=2),
    Outcome.NO_CAPACITY: Rule(retry=True, failover=True, backoff_from=1),
    Outcome.FAILED: Rule(retry=True, counts_as_error=True, backoff_from=1),
    Outcome.SETUP_FAILED: Rule(retry=True, backoff_from=1),
    Outcome.STALLED: Rule(retry=True, backoff_from=2),
}


@dataclass
class History:
    """What the decision needs to know about earlier attempts, oldest first."""

    events: list[Event] = field(default_factory=list)

    def consecutive(self, outcome: Outcome, productive_run: float = float("inf")) -> int:
        """How many events in a row, newest first, ended this way; a run that went on for
        ``productive_run`` seconds or more, or that committed a new checkpoint, breaks the streak
        (it made progress). Fire drills are skipped: they say nothing about the provider."""
        n = 0
        for e in reversed(self.events):
            if e.drill:
                continue
            if e.outcome is not outcome or e.ran_for >= productive_run or e.progressed:
                break
            n += 1
        return n

    def count(self, outcome: Outcome) -> int:
        return sum(e.outcome is outcome for e in self.events)


def decide(event: Event, history: History, policy: Policy) -> Action:
    """What to do after ``event``; ``history`` holds the events before it."""
    rule = RULES[event.outcome]
    if event.outcome is Outcome.SUCCEEDED:
        return Action(relaunch=False, final_state="SUCCEEDED", reason="run exited 0")
    if event.final and event.outcome is not Outcome.PREEMPTED:
        note = f" ({event.final_note})" if event.final_note else ""
        return Action(relaunch=False, final_state="FAILED", reason=f"{event.reason or event.outcome.value}{note}")
    if event.outcome is Outcome.FAILED:
        recoverable = event.exit_code is not None and event.exit_code in policy.recover_on_exit_codes
        used = sum(1 for e in history.events if e.outcome is Outcome.FAILED
                   and (e.exit_code not in policy.recover_on_exit_codes))
        if not recoverable and used >= policy.max_restarts_on_errors:
            return Action(relaunch=False, final_state="FAILED",
                          reason=f"exit code {event.exit_code}; restarts on errors used: "
                                 f"{used}/{policy.max_restarts_on_errors}")
    if event.outcome is Outcome.SETUP_FAILED and \
            history.count(Outcome.SETUP_FAILED) + 1 >= policy.max_setup_failures:
        return Action(relaunch=False, final_state="FAILED",
                      reason=f"setup failed {policy.max_setup_failures} times: {event.reason}")

    if event.outcome is Outcome.STALLED and \
            history.consecutive(Outcome.STALLED) + 1 >= policy.max_consecutive_stalls:
        return Action(relaunch=False, final_state="FAILED",
                      reason=f"stalled {policy.max_consecutive_stalls} times in a row: {event.reason}")
    streak = history.consecutive(event.outcome, policy.productive_run) + 1  # including this event
    if event.ran_for >= policy.productive_run or event.progressed:
        streak = 1
    waits = streak - rule.backoff_from
    delay = 0.0 if waits < 0 or event.drill else min(policy.backoff_max,
                                       policy.backoff_initial * policy.backoff_factor ** waits)
    option = event.option
    if policy.n_options > 1 and (rule.failover or
                                 (event.outcome is Outcome.PREEMPTED and policy.eager_failover)):
        option = (event.option + 1) % policy.n_options
    return Action(relaunch=True, delay=delay, option=option,
                  reason=f"{event.outcome.value}: {event.reason}".rstrip(": "))
