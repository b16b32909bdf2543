"""HAM10000 under torchrun (gloo, two processes on the CPU): each rank trains on its shard of the
order one process would use, augmented the same way; a SIGTERM to one rank in the second
architecture stops both, and the resume ends equal to an uninterrupted two-process run bit for
bit, every architecture's weights, logits and Grad-CAM maps included."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import torch

from launcher import contract
from launcher.testing import run_uninterrupted
from trainers.common import load_state
from trainers.common import state as S
from trainers.common.testing import assert_states_equal, sigterm_one_rank, torchrun
from trainers.ham10000.data import CLASSES, SPLIT_NAME, ArchSampler, EpochBatches
from trainers.ham10000.report import COMPARISON_NAME, predictions_name, read_predictions

REPO = Path(__file__).resolve().parents[3]
ARCHS = ["resnet18", "densenet121"]  # as the one-process test; the switch between them is the point
# 30 lesions (~90 training images), 8 per rank and step: 6 steps an epoch, 12 per architecture.
ARGS = ["--synthetic", "--synthetic-lesions", "30", "--archs", ",".join(ARCHS), "--epochs", "2",
        "--image-size", "32", "--batch-size", "8", "--cam-images", "3", "--threads", "1",
        "--log-every", "1", "--ckpt-every", "2", "--workers", "0", "--no-plot"]
ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_two_ranks_split_the_one_process_order_with_the_same_augmentation():
    weights = torch.rand(23, dtype=torch.float64)  # class-balanced draws shard the same way
    for w in (None, weights):
        one = ArchSampler(23, seed=5, epochs_per_arch=2, weights=w)
        ranks = [ArchSampler(23, seed=5, epochs_per_arch=2, weights=w) for _ in range(2)]
        for r, s in enumerate(ranks):
            s.rank, s.world_size = r, 2
        for s in (one, *ranks):
            s.set_epoch(3)  # epoch 1 of the second architecture: the same order as epoch 1
        alone = [item for batch in EpochBatches(one, 4, seed=1) for item in batch]
        shards = [[item for batch in EpochBatches(s, 2, seed=1) for item in batch] for s in ranks]
        assert len(shards[0]) == len(shards[1]) == 12  # 23 padded to 24
        together = [shards[k % 2][k // 2] for k in range(24)]  # rank r holds positions r, r+2, ...
        assert together[:23] == alone and together[23] == alone[0]
        one.set_epoch(1)
        assert [i for b in EpochBatches(one, 4, seed=1) for i in b] == alone


def test_sigterm_to_one_rank_in_the_second_architecture_resumes_bit_exact(tmp_path):
    data = tmp_path / "data"
    argv = [*torchrun("trainers.ham10000"), *ARGS, "--data-dir", str(data)]
    ref_ckpt, _ = run_uninterrupted(argv, tmp_path / "reference", env=ENV, cwd=REPO)
    ref_out = tmp_path / "reference" / "out"
    results = json.loads((ref_out / "results.json").read_text())
    steps, per_arch = results["steps"], results["steps"] // len(ARCHS)
    assert results["world_size"] == 2 and per_arch >= 6, results["steps"]
    # Each rank evaluated its share of the validation split; the gathered rows are back in order.
    with open(ref_out / SPLIT_NAME, newline="") as f:
        val = [(r["image_id"], r["dx"]) for r in csv.DictReader(f) if r["split"] == "val"]
    for arch in ARCHS:
        ids, labels, probs, _ = read_predictions(ref_out / predictions_name(arch))
        assert list(zip(ids, (CLASSES[k] for k in labels))) == val and len(set(map(tuple, probs))) > 1

    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    env = {**os.environ, **ENV, contract.ENV_CHECKPOINT_DIR: str(ckpt), contract.ENV_OUTPUT_DIR: str(out)}
    env.pop(contract.ENV_DEADLINE, None)
    # Step 2 of the second architecture. One rank only gets the notice: the other learns it in
    # the step's all-reduce.
    code, log = sigterm_one_rank([*argv, "--step-sleep", "0.3"], env, out, per_arch + 2, cwd=REPO)
    assert code != 0, log[-3000:]
    step, folder, manifest = contract.latest_checkpoint(ckpt)
    assert manifest["reason"] == "preempted" and per_arch < step < steps, (step, manifest, log[-3000:])
    assert contract.rank_rng_name(1) in manifest["files"]
    assert load_state(folder)[S.KEY_EXTRA]["arch_index"] == 1

    again = subprocess.run(argv, env={**env, contract.ENV_ATTEMPT: "2"}, cwd=REPO, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from {folder}" in again.stderr
    a, b = load_state(contract.latest_checkpoint(ref_ckpt)[1]), load_state(contract.latest_checkpoint(ckpt)[1])
    for arch in ARCHS:
        assert len(b[S.KEY_EXTRA]["finished"][arch]["weights"]) > 50
    assert_states_equal(a, b)  # weights of both, optimizer, logits, Grad-CAM maps, history
    ours, theirs = (json.loads((o / COMPARISON_NAME).read_text()) for o in (out, ref_out))
    for doc in (ours, theirs):
        for arch in ARCHS:
            doc["architectures"][arch].pop("train_time")
    assert ours == theirs
    assert json.loads((out / "results.json").read_text())["attempts"] == 2
