"""metrics.jsonl reads as if the run had never stopped: a resume cuts what the killed attempt
logged after its last checkpoint."""

from __future__ import annotations

import json

from trainers.common import MetricsLog, read_jsonl

VOLATILE = {"time", "wall", "attempt"}


def test_truncate_keeps_what_the_checkpoint_had_seen(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for step in range(1, 13):
        log.log({"kind": "train", "step": step})
        if step == 10:
            log.log({"kind": "eval", "step": 10})  # same step, logged after the checkpoint
    log.close()
    with open(path, "a") as f:
        f.write('{"seq": 99, "kind": "tra')  # a kill in the middle of a line

    log = MetricsLog(path)
    dropped = log.truncate(step=10, seq=10)
    assert dropped == 3
    lines = path.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 11))
    log.log({"kind": "eval", "step": 10})
    log.close()
    assert read_jsonl(path)[-1] == {"seq": 11, "kind": "eval", "step": 10}


def test_fresh_start_empties_a_stale_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"seq": 1, "step": 5}\n')
    MetricsLog(path).truncate(0, 0)
    assert path.read_text() == ""


def stable(path):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in read_jsonl(path)]


def test_metrics_after_crash_and_resume_match_an_uninterrupted_run(tmp_path, toy):
    toy(tmp_path / "ref", log_every=1).run()
    crashed = toy(tmp_path / "run", log_every=1, ckpt_every=4)
    try:
        crashed.run(crash_after=7)
    except toy.Crash:
        pass
    logged = read_jsonl(tmp_path / "run" / "out" / "metrics.jsonl")
    assert max(r["step"] for r in logged) == 7  # lines 5..7 come after the step-4 checkpoint
    resumed = toy(tmp_path / "run", log_every=1, ckpt_every=4)
    resumed.run()
    assert stable(tmp_path / "run" / "out" / "metrics.jsonl") == stable(
        tmp_path / "ref" / "out" / "metrics.jsonl")
    assert {r["attempt"] for r in read_jsonl(tmp_path / "run" / "out" / "metrics.jsonl")} == {1, 2}
    history = (tmp_path / "run" / "out" / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,step,train_loss,val_acc") and len(history) == 3


def test_an_epoch_that_straddles_a_crash_counts_whole_in_epoch_time(tmp_path, toy):
    """Seconds per epoch include the part of the epoch before the checkpoint it resumed from."""
    import time as _time

    def slow(h):
        _time.sleep(0.1)

    crashed = toy(tmp_path / "run", ckpt_every=3)  # 5 steps an epoch; checkpoint at step 3
    try:
        crashed.run(crash_after=4, on_step=slow)
    except toy.Crash:
        pass
    resumed = toy(tmp_path / "run", ckpt_every=3)
    resumed.run(on_step=slow)
    first = resumed.h.history[0]
    # 3 steps before the checkpoint + 2 after the resume: 0.4-0.5 s (the clock starts at the first
    # step's boundary); the resumed part alone would be 0.2 s
    assert first["epoch"] == 1 and first["epoch_time"] >= 0.35, resumed.h.history
