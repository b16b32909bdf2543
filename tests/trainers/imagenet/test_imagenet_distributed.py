"""ImageNet (AST on, gradient accumulation, a loader worker) under torchrun on two CPU processes:
a SIGTERM to one rank mid-epoch stops both at one step, and the resume ends bit-identical to an
uninterrupted two-process run: weights, optimizer, the controller's shared threshold, history."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from launcher import contract
from launcher.testing import run_uninterrupted
from trainers.common import load_state
from trainers.common import state as S
from trainers.common.testing import assert_states_equal, sigterm_one_rank, torchrun

REPO = Path(__file__).resolve().parents[3]
# 16x16 images of 10 classes (640 training images), 8 per rank and micro-batch, 2 micro-batches a
# step: 20 steps an epoch on two ranks, 40 in all.
ARGS = ["--synthetic", "--synthetic-size", "16", "--synthetic-val", "4", "--arch", "resnet18",
        "--batch-size", "8", "--accum-steps", "2", "--min-crop-scale", "0.35", "--lr", "0.05",
        "--epochs", "2", "--workers", "1", "--threads", "1", "--log-every", "1", "--ckpt-every", "3",
        "--no-plot"]
ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_sigterm_to_one_rank_mid_epoch_resumes_bit_exact(tmp_path):
    argv = [*torchrun("trainers.imagenet"), *ARGS, "--data-dir", str(tmp_path / "data")]
    ref_ckpt, _ = run_uninterrupted(argv, tmp_path / "reference", env=ENV, cwd=REPO)
    ref = json.loads((tmp_path / "reference" / "out" / "results.json").read_text())
    assert ref["world_size"] == 2 and ref["steps"] == 40, ref["steps"]

    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    env = {**os.environ, **ENV, contract.ENV_CHECKPOINT_DIR: str(ckpt), contract.ENV_OUTPUT_DIR: str(out)}
    env.pop(contract.ENV_DEADLINE, None)
    # Step 25, in the middle of the second epoch. One rank only gets the notice: the other learns
    # it in the step's all-reduce.
    code, log = sigterm_one_rank([*argv, "--step-sleep", "0.3"], env, out, 25, cwd=REPO)
    assert code != 0, log[-3000:]
    step, folder, manifest = contract.latest_checkpoint(ckpt)
    assert manifest["reason"] == "preempted" and 25 <= step < 40, (step, manifest, log[-3000:])

    again = subprocess.run(argv, env={**env, contract.ENV_ATTEMPT: "2"}, cwd=REPO, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from {folder}" in again.stderr
    a, b = load_state(contract.latest_checkpoint(ref_ckpt)[1]), load_state(contract.latest_checkpoint(ckpt)[1])
    assert a[S.KEY_EXTRA]["controller"]["updates"] > 0
    for state in (a, b):  # the epoch's clock: its counts are compared, its seconds cannot be
        clock = state[S.KEY_EXTRA]["clock"]
        del clock["seconds"], clock["cpu_seconds"]
    assert_states_equal(a, b)
