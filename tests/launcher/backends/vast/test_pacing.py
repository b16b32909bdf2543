"""The pacer keeps each kind of call under its rate, and backs off with jitter after a 429."""

from __future__ import annotations

import random

import pytest

from launcher.backends.vast.pacing import MARGIN, Pacer


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def pacer(**kw):
    clock = Clock()
    return Pacer(clock=clock, sleep=clock.sleep, rng=random.Random(1), **kw), clock


def test_calls_of_one_kind_are_spaced_by_its_interval():
    p, clock = pacer()
    sent = []
    for _ in range(3):
        p.wait("create")
        sent.append(clock())
    assert sent == [0.0, 4.5 * MARGIN, 9.0 * MARGIN]


def test_kinds_do_not_wait_for_each_other_and_unknown_kinds_go_at_once():
    p, clock = pacer()
    for name in ("create", "show", "destroy", "list", "attach", "attach"):
        p.wait(name)
    assert clock() == 0.0


def test_search_allows_a_burst_of_ten_a_minute():
    p, clock = pacer()
    for _ in range(10):
        p.wait("search")
    assert clock() == 0.0
    p.wait("search")
    assert clock() == 60 * MARGIN


def test_scale_shrinks_every_interval():
    p, clock = pacer(scale=0.1)
    p.wait("destroy")
    p.wait("destroy")
    assert clock() == pytest.approx(0.3 * MARGIN)


def test_backoff_doubles_with_jitter_and_holds_the_kind_back():
    p, clock = pacer()
    delays = [p.backoff("list", n) for n in (1, 2, 3, 4)]
    for n, d in enumerate(delays):
        base = 1.0 * MARGIN * 2 ** n
        assert 0.5 * base <= d <= 1.5 * base
    p.wait("list")
    assert clock() >= max(delays) * 0.99  # the hold of the longest back-off is waited out


def test_the_next_call_is_spaced_from_the_answer_of_the_last():
    p, clock = pacer()
    p.wait("show")
    clock.sleep(0.5)  # the answer took half a second
    p.done("show")
    p.wait("show")
    assert clock() == pytest.approx(0.5 + 2.0 * MARGIN)
