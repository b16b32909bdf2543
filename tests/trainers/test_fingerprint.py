"""Resuming under another config is refused with one clear line (exit code 2), unless forced."""

from __future__ import annotations

import pytest

from launcher import contract
from trainers.common import ResumeRefused, run_main


def crash_midway(toy, root, lr):
    run = toy(root, config={"lr": lr, "epochs": 2}, ckpt_every=3)
    with pytest.raises(toy.Crash):
        run.run(crash_after=7)
    return run


def test_fingerprint_mismatch_is_refused(tmp_path, toy):
    crash_midway(toy, tmp_path, lr=0.1)
    changed = toy(tmp_path, config={"lr": 0.2, "epochs": 2})
    with pytest.raises(ResumeRefused) as e:
        changed.run()
    msg = str(e.value)
    assert "\n" not in msg
    assert "lr 0.1 -> 0.2" in msg and "--force-resume" in msg and contract.ENV_FORCE_RESUME in msg
    assert e.value.exit_code == 2
    assert changed.h.step == 0  # nothing was loaded


def test_fingerprint_mismatch_forced_by_flag(tmp_path, toy):
    crash_midway(toy, tmp_path, lr=0.1)
    steps = []
    toy(tmp_path, config={"lr": 0.2, "epochs": 2}, force_resume=True).run(
        on_step=lambda h: steps.append(h.step))
    assert steps[0] == 7  # resumed from the step-6 checkpoint
    assert contract.latest_checkpoint(tmp_path / "ckpt")[2]["fingerprint"] == contract.fingerprint(
        {"lr": 0.2, "epochs": 2})


def test_fingerprint_mismatch_forced_by_environment(tmp_path, toy, monkeypatch):
    crash_midway(toy, tmp_path, lr=0.1)
    monkeypatch.setenv(contract.ENV_FORCE_RESUME, "1")
    steps = []
    toy(tmp_path, config={"lr": 0.2, "epochs": 2}).run(on_step=lambda h: steps.append(h.step))
    assert steps[0] == 7


def test_quickstart_refusal_is_one_line_and_exit_2(tmp_path, capsys, restore_torch_determinism):
    from trainers.quickstart.train import main

    common = ["--epochs", "1", "--num-samples", "64", "--batch-size", "16", "--image-size", "8",
              "--width", "4", "--no-plot", "--checkpoint-dir", str(tmp_path / "c"),
              "--output-dir", str(tmp_path / "o")]
    assert run_main(main, common, name="quickstart") == 0
    capsys.readouterr()
    assert run_main(main, [*common, "--lr", "0.1"], name="quickstart") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("quickstart: error: checkpoint ")
    assert "lr 0.05 -> 0.1" in err[0]
    assert run_main(main, [*common, "--lr", "0.1", "--force-resume"], name="quickstart") == 0
