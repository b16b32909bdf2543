from __future__ import annotations

import pytest

from launcher.chaos import Drill, drill_due, format_chaos, last_metrics_line, parse_chaos, training_done
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


def test_drills_at_a_pause_point():
    drills = parse_chaos("kill@40%:upload,term@save,kill@10%")
    assert drills == [Drill("term", 0.0, True, "save"), Drill("kill", 0.1, True), Drill("kill", 0.4, True, "upload")]
    assert format_chaos(drills) == "term@save,kill@10%,kill@40%:upload"
    assert parse_chaos(format_chaos(drills)) == drills


@pytest.mark.parametrize("spec", ["kill@20s:save", "kill@40%:boot", "kill@save:save", "kill@:save", "kill@boot"])
def test_bad_pause_points_are_named(spec):
    with pytest.raises(TaskError, match="bad drill"):
        parse_chaos(spec)


def line(step, attempt=None, total=100):
    return {"step": step, "total_steps": total, **({"attempt": attempt} if attempt is not None else {})}


@pytest.mark.parametrize("metrics, attempt, own, due", [
    (line(40, attempt=3), 3, False, True),   # this attempt has taken a step past the share
    (line(40, attempt=2), 3, False, False),  # the previous attempt's progress: not at start-up
    (line(20, attempt=3), 3, False, False),  # not there yet
    (line(40), 3, True, True),               # no attempt field: the caller knows the line is new
    (line(40), 3, False, False),
    (line(100, attempt=3), 3, False, False),  # the training is done: never
    ({"step": 40}, 3, True, False),           # no total: unknown share
    (None, 3, True, False),
])
def test_a_share_drill_is_due_inside_this_attempts_training(metrics, attempt, own, due):
    assert drill_due(Drill("kill", 0.3, True), metrics, attempt, own) is due


def test_training_done_by_the_metrics_or_the_final_checkpoint(tmp_path):
    from launcher import contract

    assert training_done(line(100)) and not training_done(line(99), tmp_path)
    for step, reason in ((10, "periodic"), (20, "final")):
        d = tmp_path / contract.step_dirname(step)
        d.mkdir()
        contract.write_manifest(d, {**contract.build_manifest(d, step=step), "reason": reason})
    assert training_done(None, tmp_path)


def test_last_metrics_line_skips_a_torn_line(tmp_path):
    p = tmp_path / "metrics.jsonl"
    assert last_metrics_line(p) is None
    p.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert last_metrics_line(p) == {"step": 2}
