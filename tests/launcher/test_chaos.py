from __future__ import annotations

import pytest

from launcher.chaos import Drill, format_chaos, parse_chaos
from launcher.errors import TaskError


def test_parse_sorts_and_converts_units():
    assert parse_chaos("kill@1.5m,term@20s,term@500ms") == [Drill("term", 0.5), Drill("term", 20), Drill("kill", 90)]
    assert format_chaos(parse_chaos("term@20s,kill@45")) == "term@20s,kill@45s"


@pytest.mark.parametrize("spec", ["boom@1s", "term", "term@", "term@-1s", "term@1d"])
def test_bad_drill_is_named(spec):
    with pytest.raises(TaskError, match="bad drill"):
        parse_chaos(spec)


def test_empty():
    assert parse_chaos(None) == [] and parse_chaos("") == []


def test_drills_at_a_share_of_the_training():
    drills = parse_chaos("kill@60%,term@30%")
    assert drills == [Drill("term", 0.3, progress=True), Drill("kill", 0.6, progress=True)]
    assert format_chaos(drills) == "term@30%,kill@60%"


@pytest.mark.parametrize("spec, match", [("term@0%", "between 0% and 100%"), ("kill@100%", "between"),
                                         ("term@20s,kill@50%", "not both")])
def test_shares_are_checked(spec, match):
    with pytest.raises(TaskError, match=match):
        parse_chaos(spec)
