"""The quickstart, stopped mid-epoch by SIGTERM or SIGKILL and resumed, ends bit-identical to a
run that never stopped: every tensor of the final checkpoint, the history and metrics.jsonl."""

from __future__ import annotations

import json
import signal
import time

import torch

from launcher import contract
from trainers.common import load_state
from trainers.common import state as S

# Slow each step down so that a signal lands mid-epoch; the numbers do not change.
SLOW = ("--step-sleep", "0.05")
# Fields that legitimately differ between runs (clock time, which attempt, how long).
VOLATILE = {"time", "wall", "attempt", "epoch_time", "wall_time"}


def flat_tensors(obj, prefix=""):
    """``{path: tensor}`` for every tensor anywhere in a nested state."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        items = obj.items()
    else:
        items = enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    out = {}
    for k, v in items:
        out.update(flat_tensors(v, f"{prefix}/{k}"))
    return out


def stable(rows):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def final_state(run):
    found = contract.latest_checkpoint(run.ckpt)
    assert found is not None, f"no verified checkpoint in {run.ckpt}"
    step, folder, manifest = found
    assert step == run.STEPS and manifest["reason"] == "final"
    return load_state(folder)


def assert_same_run(a, b):
    sa, sb = final_state(a), final_state(b)
    ta, tb = flat_tensors(sa), flat_tensors(sb)
    assert ta.keys() == tb.keys()
    assert len(ta) > 20  # model, optimizer, RNG, ... really are in there
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"tensors differ after resume: {different[:10]}"
    assert stable(sa[S.KEY_HISTORY]) == stable(sb[S.KEY_HISTORY])
    assert sa[S.KEY_BEST] == sb[S.KEY_BEST]
    assert stable(a.metrics()) == stable(b.metrics())
    assert (a.out / "history.csv").read_text().count("\n") == 3  # header + 2 epochs


def test_sigterm_mid_epoch_exits_75_and_resumes_exactly(uninterrupted, quickstart, poll):
    run = quickstart("sigterm")
    p = run.start(*SLOW)
    poll(lambda: 4 in run.committed_steps(), 60, p, "the first periodic checkpoint")
    p.send_signal(signal.SIGTERM)
    res = run.finish(p)
    assert res.returncode == contract.EXIT_PREEMPTED, res.stderr

    found = contract.latest_checkpoint(run.ckpt)
    assert found is not None
    step, folder, manifest = found
    assert manifest["reason"] == "preempted"
    assert step > 4, "the emergency checkpoint must come after the last periodic one"
    assert step % run.STEPS_PER_EPOCH != 0, "the signal was meant to land mid-epoch"
    assert load_state(folder)[S.KEY_LOOP][S.LOOP_BATCH] > 0

    res = run.run()
    assert res.returncode == 0, res.stderr
    assert f"resumed from {folder}" in res.stderr
    assert_same_run(uninterrupted, run)


def test_sigkill_mid_epoch_resumes_from_last_committed_checkpoint(uninterrupted, quickstart, poll):
    run = quickstart("sigkill")
    p = run.start(*SLOW)
    # Past a periodic checkpoint of the second epoch, with lines logged after it.
    poll(lambda: 20 in run.committed_steps() and max(r["step"] for r in run.metrics()) >= 22,
         60, p, "step 22 of the second epoch")
    p.kill()
    p.wait()
    step, folder, manifest = contract.latest_checkpoint(run.ckpt)
    assert step % run.STEPS_PER_EPOCH != 0 and manifest["reason"] == "periodic"
    assert max(r["step"] for r in run.metrics()) > step  # the killed attempt logged past it

    res = run.run()
    assert res.returncode == 0, res.stderr
    assert f"resumed from {folder}" in res.stderr
    steps = [r["step"] for r in run.metrics() if r["kind"] == "train"]
    assert steps == list(range(1, run.STEPS + 1)), "metrics.jsonl was not cut back on resume"
    assert_same_run(uninterrupted, run)


def test_rerun_after_completion_exits_at_once(uninterrupted):
    before_steps = uninterrupted.committed_steps()
    before_metrics = (uninterrupted.out / contract.METRICS_NAME).read_text()
    t0 = time.monotonic()
    res = uninterrupted.run()
    assert res.returncode == 0, res.stderr
    assert "epoch 1/2" not in res.stderr and "step 1/" not in res.stderr  # nothing retrained
    assert uninterrupted.committed_steps() == before_steps
    assert (uninterrupted.out / contract.METRICS_NAME).read_text() == before_metrics
    assert (uninterrupted.out / "results.json").exists()
    assert time.monotonic() - t0 < 60


def test_quickstart_learns_and_draws_its_dashboard(quickstart):
    run = quickstart("plot", plot=True)
    res = run.run()
    assert res.returncode == 0, res.stderr
    assert (run.out / "dashboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((run.out / "results.json").read_text())
    assert results["steps"] == run.STEPS and results["val_acc"] > 0.3  # chance is 0.1
    assert [r["epoch"] for r in results["history"]] == [1, 2]


def test_deadline_stops_with_a_checkpoint_and_exit_75(uninterrupted, quickstart):
    run = quickstart("deadline")
    # 30 steps of 0.5 s cannot finish in 10 s: the run must stop itself, saved, before the deadline.
    deadline = time.time() + 10.0
    res = run.run("--step-sleep", "0.5", env={contract.ENV_DEADLINE: f"{deadline:.3f}"})
    assert res.returncode == contract.EXIT_PREEMPTED, res.stderr
    step, folder, manifest = contract.latest_checkpoint(run.ckpt)
    assert manifest["reason"] == "deadline" and 0 < step < run.STEPS
    assert manifest["created"] <= deadline, "the checkpoint must be committed before the deadline"

    res = run.run()  # the next attempt, without a deadline, finishes the same run
    assert res.returncode == 0, res.stderr
    assert_same_run(uninterrupted, run)
