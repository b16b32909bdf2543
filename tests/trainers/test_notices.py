"""Stop notices: SIGTERM only sets a flag; a deadline stops the loop early enough to save."""

from __future__ import annotations

import os
import signal

import pytest

from trainers.common import Preempted, StopNotice


def test_sigterm_sets_a_flag_and_install_is_idempotent():
    n = StopNotice()
    n.install()
    n.install()
    try:
        assert n.reason() is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert n.reason() == "preempted"
    finally:
        n.uninstall()
        n.uninstall()
    assert signal.getsignal(signal.SIGTERM) is not n._on_sigterm


def test_deadline_counts_the_margin():
    now = [1000.0]
    n = StopNotice(deadline=1010.0, clock=lambda: now[0])
    assert n.reason(margin=5) is None
    now[0] = 1006.0
    assert n.reason(margin=3) is None and n.reason(margin=4) == "deadline"


def test_preemption_in_the_loop_saves_then_raises(tmp_path, toy):
    run = toy(tmp_path, ckpt_every=100)
    with pytest.raises(Preempted) as e:
        run.run(on_step=lambda h: h.notice.notify() if h.step == 3 else None)
    assert e.value.step == 4 and e.value.exit_code == 75  # seen at the next step boundary
    from launcher import contract

    step, _, manifest = contract.latest_checkpoint(tmp_path / "ckpt")
    assert (step, manifest["reason"]) == (4, "preempted")
