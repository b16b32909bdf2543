"""The dbn trainer end to end on --synthetic data written as real CIFAR-10 batches: the
pseudo-likelihood rises at every timestep and sampled codes are closer to real codes than coin
flips are; a kill inside a timestep resumes bit-exact, persistent chains included; bad data and
foreign checkpoints are one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from launcher import contract
from trainers.common import load_state, read_jsonl, write_checkpoint
from trainers.common import state as S
from trainers.common.testing import assert_states_equal
from trainers.dbn import sample
from trainers.dbn.train import main

# CPU-sized: 256 training and 64 held-out images of the class, 64-bit codes, 4 timesteps of 8
# epochs (8 steps each). The linear schedule ends at a flip probability of 0.41: with the cosine
# schedule the last RBM's condition is independent of its data, and that data nearly noise.
RISES = ["--synthetic", "--synthetic-train", "256", "--synthetic-test", "64", "--ae-epochs",
         "25", "--ae-width", "16", "--code-channels", "4", "--hidden", "32", "--timesteps", "4",
         "--epochs-per-timestep", "8", "--batch-size", "32", "--schedule", "linear",
         "--beta-start", "0.02", "--beta-end", "0.3", "--threads", "1", "--log-every", "5"]
# Smaller still for the kill: 64 images, 4 steps an epoch; 3 autoencoder epochs (steps 1-12),
# then 3 timesteps of 4 epochs (steps 13-28, 29-44, 45-60); a checkpoint every 3 steps.
SMALL = ["--synthetic", "--synthetic-train", "64", "--synthetic-test", "16", "--ae-epochs", "3",
         "--ae-width", "8", "--code-channels", "2", "--hidden", "16", "--timesteps", "3",
         "--epochs-per-timestep", "4", "--batch-size", "16", "--threads", "1", "--log-every",
         "1", "--ckpt-every", "3", "--no-plot", "--keep-last", "100"]


@pytest.fixture
def one_thread(restore_torch_determinism):
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_pll_rises_at_every_timestep_and_samples_beat_random_codes(tmp_path, one_thread):
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    res = main([*RISES, "--data-dir", str(tmp_path / "data"), "--output-dir", str(out),
                "--checkpoint-dir", str(ckpt)])
    assert res["autoencoder"]["ae_psnr"] > 15 and res["autoencoder"]["active_bits"] > 32
    table = res["timesteps"]
    assert [r["timestep"] for r in table] == [1, 2, 3, 4]
    for r in table:
        assert r["pll_train"] > r["pll_start_train"], r
        assert r["pll_heldout"] > r["pll_start_heldout"], r
    assert res["pll_rises_at_every_timestep"] is True
    check = res["sample_check"]
    assert check["sampled"] < check["random"] and check["sampled"] < check["random_marginals"]
    assert check["heldout"] < check["random"] and res["samples_closer_than_random"] is True
    assert res["schedule"]["flip_prob_at_T"] == pytest.approx(0.4129, abs=1e-3)
    assert json.loads((out / "results.json").read_text())["timesteps"] == table
    rbm_rows = [r for r in res["history"] if r.get("stage") == "rbm"]
    assert len(rbm_rows) == 4 * 8 and {"pll_train", "pll_heldout", "fe_gap"} <= set(rbm_rows[0])
    train = [r for r in read_jsonl(out / contract.METRICS_NAME) if r["kind"] == "train"]
    assert {"loss"} <= set(train[0]) and {"free_energy"} <= set(train[-1])
    for name in ("pll.png", "reconstructions.png", "samples.png", "dashboard.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name

    # The sampling command on this checkpoint gives the run's own sample check.
    assert sample.main(["--checkpoint", str(ckpt), "--n", "64", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


class Run:
    def __init__(self, root: Path, data: Path, child_env):
        self.root, self.data, self.env, self.n = root, data, child_env, 0
        self.ckpt, self.out = root / "ckpt", root / "out"

    def start(self, *extra: str) -> subprocess.Popen:
        self.root.mkdir(parents=True, exist_ok=True)
        self.n += 1
        with open(self.root / f"run-{self.n}.log", "w") as log:
            p = subprocess.Popen([sys.executable, "-m", "trainers.dbn", *SMALL, "--data-dir",
                                  str(self.data), "--checkpoint-dir", str(self.ckpt),
                                  "--output-dir", str(self.out), *extra], env=self.env(),
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        p.log_path = str(self.root / f"run-{self.n}.log")
        return p

    def finish(self, p: subprocess.Popen) -> str:
        p.wait(timeout=300)
        log = Path(p.log_path).read_text()
        assert p.returncode == 0, log
        return log

    def committed(self) -> dict[int, Path]:
        return {s: f for s, f in contract.local_checkpoints(self.ckpt)
                if contract.read_manifest(f) is not None}


def test_killed_inside_a_timestep_resumes_bit_exact_chains_included(tmp_path, child_env, poll):
    data = tmp_path / "data"
    ref = Run(tmp_path / "ref", data, child_env)
    ref.finish(ref.start())

    run = Run(tmp_path / "killed", data, child_env)
    p = run.start("--step-sleep", "0.2")
    poll(lambda: 33 in run.committed(), 300, p, "the checkpoint of step 33")
    os.killpg(p.pid, signal.SIGKILL)  # no notice: the machine vanishes
    p.wait()
    step, folder, manifest = contract.latest_checkpoint(run.ckpt)
    state = load_state(folder)
    # Inside timestep 2 (steps 29-44), in the middle of an epoch, with chains that have run.
    assert manifest["reason"] == "periodic" and 33 <= step < 44, (step, manifest)
    assert state[S.KEY_EXTRA]["timestep"] == 2
    assert 0 < state[S.KEY_SAMPLER]["position"] < 64
    chains = state[S.KEY_MODEL]["chains"]
    assert chains.abs().sum() > 0
    assert_states_equal(load_state(ref.committed()[step]), state)  # the same state, chains too

    log = run.finish(run.start())
    assert f"resumed from {folder}" in log
    a, b = load_state(contract.latest_checkpoint(ref.ckpt)[1]), load_state(
        contract.latest_checkpoint(run.ckpt)[1])
    assert a[S.KEY_LOOP][S.LOOP_STEP] == 60 and a[S.KEY_LOOP][S.LOOP_DONE]
    assert_states_equal(a, b)
    ra, rb = (json.loads((r.out / "results.json").read_text()) for r in (ref, run))
    assert ra["sample_check"] == rb["sample_check"] and ra["timesteps"] == rb["timesteps"]
    assert rb["attempts"] == 2


def run_cli(argv, child_env, module="trainers.dbn"):
    return subprocess.run([sys.executable, "-m", module, *argv], env=child_env(),
                          capture_output=True, text=True, timeout=300)


def one_line_error(r, *needles: str) -> None:
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr


def test_bad_data_and_foreign_checkpoints_are_one_line_errors(tmp_path, child_env):
    out = tmp_path / "out"
    r = run_cli(["--data-dir", str(tmp_path / "nowhere"), "--output-dir", str(out),
                 "--checkpoint-dir", str(tmp_path / "ckpt")], child_env)
    one_line_error(r, "nowhere", "cifar-10-batches-py")
    r = run_cli(["--synthetic", "--class", "spaceship", "--data-dir", str(tmp_path / "data"),
                 "--output-dir", str(out), "--checkpoint-dir", str(tmp_path / "ckpt")], child_env)
    one_line_error(r, "'spaceship'", "airplane")
    assert not out.exists() and not (tmp_path / "ckpt").exists()  # nothing left behind

    other = tmp_path / "other"  # a checkpoint another trainer wrote
    write_checkpoint(other, {"model": {}, "extra": {"arch_index": 0},
                             "config": {"archs": ["resnet50"]}}, step=3, epoch=1.0, metrics={},
                     fingerprint="x", best=None, reason="final")
    r = run_cli([*SMALL, "--data-dir", str(tmp_path / "data"), "--output-dir", str(out),
                 "--checkpoint-dir", str(other)], child_env)
    one_line_error(r, str(other / "step-00000003"), "not a checkpoint of the dbn trainer")
    r = run_cli(["--checkpoint", str(other), str(tmp_path / "s.png")], child_env,
                "trainers.dbn.sample")
    one_line_error(r, "not a checkpoint of the dbn trainer")
    r = run_cli(["--checkpoint", str(tmp_path / "missing"), str(tmp_path / "s.png")], child_env,
                "trainers.dbn.sample")
    one_line_error(r, "missing")
    assert not (tmp_path / "s.png").exists()
