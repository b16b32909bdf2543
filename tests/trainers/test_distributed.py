"""The distributed harness: sharded sample order, and the quickstart under torchrun (gloo, two
processes on the CPU) stopped by a SIGTERM to one rank, then resumed, bit-identical to an
uninterrupted two-process run; a two-process checkpoint resumed on one process goes on, saying so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from launcher import contract
from launcher.testing import run_uninterrupted
from trainers.common import ResumableSampler
from trainers.common.loading import EpochBatches
from trainers.common.testing import assert_states_equal, sigterm_one_rank
from trainers.common.testing import torchrun as torchrun_cmd

REPO = Path(__file__).resolve().parents[2]
# 1600 training images, 32 per rank and step: 25 steps an epoch on two ranks, 75 in all.
TRAIN = ["--epochs", "3", "--num-samples", "2000", "--batch-size", "32", "--image-size", "16",
         "--width", "8", "--no-plot", "--ckpt-every", "5", "--log-every", "1"]
ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def torchrun(nproc: int = 2) -> list[str]:
    return torchrun_cmd("trainers.quickstart", nproc)


# --- the sampler ---------------------------------------------------------------------------------

def test_ranks_share_one_global_order_padded_to_the_world():
    one = ResumableSampler(10, seed=3, rank=0, world_size=1)
    shards = [ResumableSampler(10, seed=3, rank=r, world_size=4) for r in range(4)]
    assert shards[0].epoch_size == 12 and one.epoch_size == 10
    order = one.order()
    got = [torch.cat(list(s.batches(2))) for s in shards]
    assert all(len(g) == 3 for g in got)  # as many samples on every rank
    interleaved = torch.stack(got, 1).flatten()  # rank r holds positions r, r+4, r+8
    assert torch.equal(interleaved[:10], order) and torch.equal(interleaved[10:], order[:2])
    assert all(s.position == 12 for s in shards)


def test_a_position_saved_by_two_ranks_resumes_on_three_at_a_boundary():
    two = ResumableSampler(100, seed=0, rank=0, world_size=2)
    two.set_epoch(1, 46)
    three = ResumableSampler(100, seed=0, rank=2, world_size=3)
    three.load_state_dict(two.state_dict())
    assert three.resharded and three.epoch == 1 and three.position == 45  # one sample seen twice
    batches = EpochBatches(three, 4, seed=0)
    first = next(iter(batches))  # the rest of that step, then whole steps of 3 x 4
    assert [i for i, _ in first] == three.padded_order()[45 + 2:48:3].tolist()
    same = ResumableSampler(100, seed=0, rank=0, world_size=2)
    same.load_state_dict(two.state_dict())
    assert not same.resharded and same.position == 46


# --- the collectives of a sharded evaluation, on two real processes -------------------------------

COLLECTIVES = """
import torch
from trainers.common import distributed
from trainers.common.loading import eval_batches

distributed.init("cpu")
w = distributed.world()
assert distributed.active() and w.size == 2
mine = list(distributed.rank_indices(5))
assert mine == [[0, 2, 4], [1, 3]][w.rank]
assert [i for b in eval_batches(5, 2) for i in b] == mine
rows = torch.tensor([[float(i), -float(i)] for i in mine])
got = distributed.gather_in_order(rows, 5)  # shards of 3 and 2 rows
assert torch.equal(got, torch.tensor([[float(i), -float(i)] for i in range(5)])), got
bn = torch.nn.BatchNorm1d(3)
bn.running_mean.fill_(float(w.rank + 1)); bn.num_batches_tracked.fill_(10 * w.rank + 7)
distributed.sync_buffers(bn)
assert torch.equal(bn.running_mean, torch.ones(3)) and int(bn.num_batches_tracked) == 7
print(f"rank {w.rank} ok", flush=True)
"""


def test_shards_of_an_evaluation_come_back_in_order_with_rank_0s_statistics(tmp_path):
    script = tmp_path / "collectives.py"
    script.write_text(COLLECTIVES)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    done = subprocess.run(cmd, env={**os.environ, **ENV}, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0 ok" in done.stdout and "rank 1 ok" in done.stdout


# --- the quickstart under torchrun ---------------------------------------------------------------

def final(ckpt: Path) -> dict:
    step, path, manifest = contract.latest_checkpoint(ckpt)
    assert step == 75 and manifest["reason"] == "final"
    assert contract.rank_rng_name(1) in manifest["files"]  # rank 1's RNG state, listed
    return {f.name: torch.load(f, map_location="cpu", weights_only=True) for f in sorted(path.glob("*.pt"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    ckpt, _ = run_uninterrupted([*torchrun(), *TRAIN], tmp_path_factory.mktemp("ref"), env=ENV, cwd=REPO)
    return final(ckpt)


def test_sigterm_to_one_rank_stops_both_and_the_resume_is_bit_identical(tmp_path, reference):
    ckpt, out, hooks = tmp_path / "ckpt", tmp_path / "out", tmp_path / "hooks"
    env = {**os.environ, **ENV, contract.ENV_CHECKPOINT_DIR: str(ckpt), contract.ENV_OUTPUT_DIR: str(out),
           contract.ENV_HOOK_DIR: str(hooks)}
    env.pop(contract.ENV_DEADLINE, None)
    # Paced steps, so the notice lands in the middle of the first epoch; one rank only gets it,
    # the other learns it in the next all-reduce.
    code, log = sigterm_one_rank([*torchrun(), *TRAIN, "--step-sleep", "0.05"], env, out, 12, cwd=REPO)
    assert code != 0, log[-3000:]  # torchrun says 1 whatever its workers said
    step, path, manifest = contract.latest_checkpoint(ckpt)
    assert manifest["reason"] == "preempted" and 12 <= step < 25, (step, log[-3000:])
    assert json.loads((hooks / contract.STOPPED_NAME).read_text())["step"] == step  # for the agent
    assert sorted(p.name for p in path.glob("*.pt")) == [contract.rank_rng_name(1), "state.pt"]
    # The second attempt: both ranks resume from rank 0's checkpoint and finish.
    again = subprocess.run([*torchrun(), *TRAIN], env={**env, contract.ENV_ATTEMPT: "2"}, cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"(step {step}," in again.stderr
    got = final(ckpt)
    assert set(got) == set(reference)
    for name in reference:
        assert_states_equal(reference[name], got[name], name)
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and results["steps"] == 75


def test_a_two_process_checkpoint_goes_on_in_one_process_with_a_notice(tmp_path):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    env = {**os.environ, **ENV, contract.ENV_CHECKPOINT_DIR: str(ckpt), contract.ENV_OUTPUT_DIR: str(out)}
    env.pop(contract.ENV_DEADLINE, None)
    short = [*TRAIN]
    short[short.index("--epochs") + 1] = "1"
    # Two processes stop at a deadline in the middle of the epoch (25 s of steps, after a
    # start-up of a few seconds): both ranks stop at the same step, the one they agreed on.
    two = subprocess.run([*torchrun(), *short, "--step-sleep", "1"], cwd=REPO, capture_output=True,
                         text=True, timeout=300, env={**env, contract.ENV_DEADLINE: str(time.time() + 15)})
    step, _, manifest = contract.latest_checkpoint(ckpt)
    assert manifest["reason"] == "deadline" and 0 < step < 25, (step, manifest["reason"], two.stderr[-3000:])
    one = subprocess.run([sys.executable, "-m", "trainers.quickstart", *short], cwd=REPO, capture_output=True,
                         text=True, timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    assert "written by 2 process(es), this run has 1" in one.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == 1 and "world_size" not in results


def test_a_trainer_that_never_joined_the_group_is_refused_under_torchrun(monkeypatch, tmp_path):
    from trainers.common import Harness, HarnessError, distributed

    # A trainer run in this process earlier (the in-process tests) leaves its one-process world.
    monkeypatch.setattr(distributed, "_WORLD", None)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(HarnessError, match="never joined the process group"):
        Harness("x", {}, total_epochs=1, steps_per_epoch=1, checkpoint_dir=tmp_path / "c", output_dir=tmp_path / "o")
