"""The recovery decision over a table of cases: one row per rule of the policy."""

from __future__ import annotations

import pytest

from launcher.recovery import Event, History, Outcome, Policy, decide

P, F, S, N, X = Outcome.PREEMPTED, Outcome.FAILED, Outcome.SUCCEEDED, Outcome.NO_CAPACITY, Outcome.SETUP_FAILED


def ev(o, code=None, option=0):
    return Event(o, code, "", option)


CASES = [
    # (event, history, policy, relaunch, final_state, delay, option)
    ("success finishes", ev(S, 0), [], Policy(), False, "SUCCEEDED", 0, 0),
    ("first preemption relaunches at once", ev(P, 75), [], Policy(), True, "", 0, 0),
    ("second preemption in a row backs off", ev(P, 75), [ev(P)], Policy(), True, "", 5, 0),
    ("fourth preemption backs off more", ev(P, 75), [ev(P)] * 3, Policy(), True, "", 20, 0),
    ("preemptions never run out", ev(P, 75), [ev(P)] * 50, Policy(), True, "", 300, 0),
    ("a long run before the preemption resets the back-off", Event(P, 75, "", 0, 3600.0), [ev(P)] * 5,
     Policy(), True, "", 0, 0),
    ("a long run earlier in the streak breaks it", ev(P, 75), [ev(P), Event(P, 75, "", 0, 3600.0), ev(P)],
     Policy(), True, "", 5, 0),
    ("a preemption after an attempt that committed a checkpoint relaunches at once",
     Event(P, 75, "", 0, 20.0, progressed=True), [Event(P, 75, "", 0, 20.0, progressed=True)] * 8,
     Policy(), True, "", 0, 0),
    ("a committed checkpoint earlier in the streak breaks it", ev(P, 75),
     [ev(P), ev(P), Event(P, 75, "", 0, 20.0, progressed=True), ev(P)], Policy(), True, "", 5, 0),
    ("preemptions without progress still back off", ev(P, 75), [ev(P)] * 3, Policy(), True, "", 20, 0),
    ("a fire drill relaunches at once, however many came before", Event(P, None, "", 0, 2.0, drill=True),
     [Event(P, None, "", 0, 2.0, drill=True)] * 9, Policy(), True, "", 0, 0),
    ("fire drills in a streak of preemptions are not counted", ev(P, 75),
     [ev(P), Event(P, None, "", 0, 2.0, drill=True), Event(P, 75, "", 0, 2.0, drill=True)], Policy(), True, "", 5, 0),
    ("preemption after a success-less error resets streak", ev(P), [ev(P), ev(F, 1)],
     Policy(max_restarts_on_errors=5), True, "", 0, 0),
    ("error with no restarts fails", ev(F, 1), [], Policy(), False, "FAILED", 0, 0),
    ("error within the restart budget relaunches", ev(F, 1), [ev(F, 1)], Policy(max_restarts_on_errors=2),
     True, "", 10, 0),
    ("error past the restart budget fails", ev(F, 1), [ev(F, 1), ev(F, 1)],
     Policy(max_restarts_on_errors=2), False, "FAILED", 0, 0),
    ("preemptions do not use the error budget", ev(F, 1), [ev(P)] * 5, Policy(max_restarts_on_errors=1),
     True, "", 5, 0),
    ("recoverable exit code always relaunches", ev(F, 33), [ev(F, 33)] * 3,
     Policy(recover_on_exit_codes=frozenset({33})), True, "", 40, 0),
    ("no capacity fails over to the next option", ev(N, option=0), [], Policy(n_options=2), True, "", 5, 1),
    ("no capacity wraps around the options", ev(N, option=1), [ev(N)], Policy(n_options=2), True, "", 10, 0),
    ("preemption stays on its option", ev(P, option=1), [], Policy(n_options=3), True, "", 0, 1),
    ("EAGER_NEXT_REGION moves on after a preemption", ev(P, option=1), [],
     Policy(n_options=3, eager_failover=True), True, "", 0, 2),
    ("setup failure retries", ev(X), [], Policy(), True, "", 5, 0),
    ("third setup failure fails", ev(X), [ev(X), ev(X)], Policy(), False, "FAILED", 0, 0),
    ("an error the provider already retried fails", Event(F, 1, "", 0, 0.0, True), [],
     Policy(max_restarts_on_errors=3), False, "FAILED", 0, 0),
    ("a final preemption still relaunches", Event(P, None, "", 0, 0.0, True), [], Policy(), True, "", 0, 0),
]


@pytest.mark.parametrize("name,event,history,policy,relaunch,final,delay,option", CASES, ids=[c[0] for c in CASES])
def test_decide(name, event, history, policy, relaunch, final, delay, option):
    a = decide(event, History(list(history)), policy)
    assert a.relaunch is relaunch
    assert a.final_state == final
    assert a.delay == delay
    assert a.option == option
