"""Options across providers: each option's infra, any_of cheapest first, failover on outbids."""

from __future__ import annotations

import pytest

from launcher import state as st
from launcher.backends.base import Quote
from launcher.jobs import prepare
from launcher.placement import OptionQuote, after_outbids, option_infras, order, quote_options
from launcher.recovery import Action, Event, History, Outcome
from launcher.supervisor import Supervisor
from launcher.task import parse_task
from launcher.testing import FakeBackend, FakeClock

MIXED = """\
name: t
resources:
  accelerators: RTX4090:1
  {key}:
    - infra: kaggle
      accelerators: T4:1
    - infra: vast
      use_spot: true
    - infra: vast
    - infra: aws
run: echo hi
"""


def quotes(task, prices):
    return [OptionQuote(i, "x", o, q) for i, (o, q) in enumerate(zip(task.resources.options(), prices))]


def test_any_of_is_cheapest_first_with_what_cannot_be_had_last():
    task = parse_task(MIXED.format(key="any_of"), where="t.yaml")
    q = quotes(task, [Quote(0.0, False, "quota used up"), Quote(0.2), Quote(0.5), Quote(None)])
    assert order(task, q) == [1, 2, 3, 0]


def test_ordered_keeps_the_users_order():
    task = parse_task(MIXED.format(key="ordered"), where="t.yaml")
    q = quotes(task, [Quote(0.0, False, "quota used up"), Quote(0.9), Quote(0.5), Quote(0.1)])
    assert order(task, q) == [0, 1, 2, 3]


def test_each_option_names_its_infra_unless_the_command_line_does():
    task = parse_task(MIXED.format(key="ordered"), where="t.yaml")
    assert option_infras(task, "local") == ["kaggle", "vast", "vast", "aws"]
    assert option_infras(task, "local", forced="ssh/lab") == ["ssh/lab"] * 4


def test_prepare_keeps_each_options_infra(tmp_path):
    t = tmp_path / "t.yaml"
    t.write_text(MIXED.format(key="ordered"))
    sub = prepare(str(t))
    assert sub.infra == "kaggle,vast,aws" and sub.option_infras == ["kaggle", "vast", "vast", "aws"]


def test_a_backend_that_cannot_be_made_makes_its_options_unusable():
    from launcher.errors import InfraError

    task = parse_task(MIXED.format(key="any_of"), where="t.yaml")

    def backend_for(infra):
        if infra == "kaggle":
            raise InfraError("infra 'kaggle' needs the Python package 'kaggle'")
        return FakeBackend([])

    q = quote_options(task, option_infras(task, "local"), backend_for)
    assert [x.quote.usable for x in q] == [False, True, True, True]
    assert q[0].to_dict()["why"] == "infra 'kaggle' needs the Python package 'kaggle'"
    assert q[0].to_dict()["provider"] == "kaggle" and q[3].to_dict()["provider"] == "skypilot"


def outbid(option):
    return Event(Outcome.PREEMPTED, reason="outbid (instance stopped)", option=option)


@pytest.mark.parametrize("before,moves", [([], False), ([outbid(1)], True),
                                          ([outbid(1), Event(Outcome.PREEMPTED, reason="lost", option=1)], False),
                                          ([outbid(0)], False)])
def test_two_outbids_in_a_row_on_an_option_move_to_the_next(before, moves):
    action = Action(relaunch=True, option=1, reason="preempted: outbid")
    got = after_outbids(action, outbid(1), History(list(before)), n_options=3, limit=2)
    assert got.option == (2 if moves else 1)
    assert after_outbids(action, outbid(1), History(list(before)), n_options=1, limit=2).option == 1


def test_each_attempt_runs_on_its_options_backend():
    state = st.State()
    yaml = "name: t\nresources:\n  ordered:\n    - infra: kaggle\n    - infra: vast\nrun: echo hi\n"
    job = state.create_job(name="t", task_path=None, task_yaml=yaml, infra="kaggle,vast", store_uri="",
                           options={"option_infras": ["kaggle", "vast"]})
    backends = {"kaggle": FakeBackend(["no_capacity"]), "vast": FakeBackend(["preempted", "succeeded"])}
    clock = FakeClock()
    sup = Supervisor(state, job.id, backend_for=backends.__getitem__, clock=clock.time, sleep=clock.sleep)
    assert sup.run() == st.SUCCEEDED
    attempts = state.attempts(job.id)
    assert [(a.state, a.handle["infra"]) for a in attempts] == [
        ("NO_CAPACITY", "kaggle"), ("PREEMPTED", "vast"), ("SUCCEEDED", "vast")]
    assert [c[1].infra for c in backends["vast"].calls if c[0] == "provision"] == ["vast", "vast"]
    assert backends["vast"].live == set()


def test_the_stored_order_is_the_order_tried():
    state = st.State()
    yaml = "name: t\nresources:\n  any_of:\n    - infra: kaggle\n    - infra: vast\nrun: echo hi\n"
    job = state.create_job(name="t", task_path=None, task_yaml=yaml, infra="kaggle,vast", store_uri="",
                           options={"option_infras": ["kaggle", "vast"], "option_order": [1, 0]})
    backends = {"kaggle": FakeBackend(["succeeded"]), "vast": FakeBackend(["no_capacity"])}
    clock = FakeClock()
    sup = Supervisor(state, job.id, backend_for=backends.__getitem__, clock=clock.time, sleep=clock.sleep)
    assert sup.run() == st.SUCCEEDED
    assert [a.handle["infra"] for a in state.attempts(job.id)] == ["vast", "kaggle"]


def test_plan_lists_each_option_with_provider_price_and_why(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from launcher.commands.plan import plan

    from launcher.backends.kaggle.client import KaggleAPIError, KaggleClient

    def unanswered(self):
        raise KaggleAPIError("Kaggle's quota view did not answer")

    monkeypatch.setattr(KaggleClient, "quota", unanswered)  # launch's own count decides then
    monkeypatch.setenv("LAUNCH_KAGGLE_WEEKLY_GPU_HOURS", "0.001")  # the quota is used up at once
    t = tmp_path / "t.yaml"
    t.write_text("name: t\nresources:\n  any_of:\n    - infra: kaggle\n      accelerators: T4:1\n"
                 "    - infra: local\nrun: echo hi\n")
    r = CliRunner().invoke(plan, [str(t), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [(x["option"], x["provider"], x["usable"]) for x in rows] == [(2, "local", True), (1, "kaggle", False)]
    assert rows[1]["price_per_hour"] == 0.0 and "weekly GPU quota" in rows[1]["why"]
    r = CliRunner().invoke(plan, [str(t)])
    assert r.exit_code == 0 and r.stdout.splitlines()[0].split() == [
        "OPTION", "PROVIDER", "INFRA", "ACCELERATORS", "SPOT", "$/H", "EST.", "1", "H", "USABLE", "WHY"]


def test_an_option_without_infra_takes_the_one_the_others_name(tmp_path):
    t = tmp_path / "t.yaml"
    t.write_text("name: t\nresources:\n  any_of:\n    - infra: vast\n      use_spot: true\n"
                 "    - accelerators: A100:1\nrun: echo hi\n")
    sub = prepare(str(t))
    assert sub.infra == "vast" and sub.option_infras == ["vast", "vast"]
