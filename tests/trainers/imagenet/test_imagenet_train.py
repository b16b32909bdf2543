"""The trainer end to end on --synthetic data: the controller holds the target rate, its state is
in the checkpoint, and a run stopped mid-epoch (SIGTERM to its process group, then SIGKILL)
resumes to final weights and controller state equal to an uninterrupted run's, bit for bit."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from launcher import contract
from trainers.common import load_state, read_jsonl
from trainers.common import state as S
from trainers.imagenet.selection import ControllerConfig, PIController
from trainers.imagenet.train import main

# CPU-sized: 16x16 images, 10 classes, ResNet-18, batches of 16.
SMALL = ["--synthetic", "--synthetic-size", "16", "--synthetic-val", "4", "--arch", "resnet18",
         "--batch-size", "16", "--min-crop-scale", "0.35", "--lr", "0.05", "--log-every", "1"]
VOLATILE = {"time", "wall", "attempt", "epoch_time", "wall_time", "train_time", "eval_time",
            "images_per_s", "train_cpu_time"}


def stable(rows):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def flat_tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    items = obj.items() if isinstance(obj, dict) else (
        enumerate(obj) if isinstance(obj, (list, tuple)) else ())
    out = {}
    for k, v in items:
        out.update(flat_tensors(v, f"{prefix}/{k}"))
    return out


def latest(ckpt: Path):
    found = contract.latest_checkpoint(ckpt)
    assert found is not None, f"no verified checkpoint in {ckpt}"
    return found


@pytest.fixture
def one_thread(restore_torch_determinism):
    """In-process runs use one thread (as the children do); put torch's setting back after."""
    before = torch.get_num_threads()
    yield ["--threads", "1"]
    torch.set_num_threads(before)


def test_activation_rate_tracks_target_and_controller_state_is_checkpointed(tmp_path, one_thread):
    # A baseline's results.json as an --ast off run writes it (its timing is made up here; the
    # benchmark measures the real ratio).
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"history": [{"epoch": 1, "train_time": 100.0,
                                                 "val_top1": 0.5, "wall_time": 101.0}]}))
    out = tmp_path / "out"
    results = main([*SMALL, *one_thread, "--data-dir", str(tmp_path / "data"),
                    "--synthetic-train", "48", "--workers", "0", "--epochs", "2",
                    "--ckpt-every", "7", "--keep-last", "20", "--checkpoint-dir",
                    str(tmp_path / "ckpt"), "--output-dir", str(out),
                    "--baseline-results", str(baseline)])
    steps = [r for r in read_jsonl(out / contract.METRICS_NAME) if r["kind"] == "train"]
    assert len(steps) == results["steps"] == 60
    last_half = [r["activation"] for r in steps[30:]]
    assert statistics.mean(last_half) == pytest.approx(0.2, abs=0.05)
    assert all(r["activation"] >= 2 / 16 for r in steps)  # the 10% floor (2 of 16)

    # The controller's state is in every checkpoint and loads back into a controller exactly.
    step, folder, manifest = latest(tmp_path / "ckpt")
    saved = load_state(folder)[S.KEY_EXTRA]["controller"]
    assert saved == results["controller"]
    assert (saved["seen"], saved["updates"]) == (60 * 16, 60)
    again = PIController(ControllerConfig())
    again.load_state_dict(saved)
    assert again.state_dict() == saved
    mid = load_state(folder.parent / contract.step_dirname(49))[S.KEY_EXTRA]["controller"]
    assert mid["updates"] == 49 and mid["thr"] == steps[49]["thr"]  # what step 50 selected with

    # Reports: per-epoch rows, the comparison with the baseline, the six-panel dashboard.
    header = (out / "history.csv").read_text().splitlines()[0].split(",")
    for column in ("train_loss", "train_acc", "val_top1", "val_top5", "activation_rate",
                   "skipped_fraction", "thr", "images_per_s", "train_time", "time_ratio"):
        assert column in header
    first, second = results["history"]
    assert first["time_ratio"] == round(first["train_time"] / 100.0, 4)
    assert "time_ratio" not in second and first["baseline_val_top1"] == 0.5
    assert results["baseline"]["epochs_compared"] == 1
    assert (out / "dashboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class Run:
    """``python -m trainers.imagenet`` as a child in its own process group."""

    def __init__(self, root: Path, data: Path, child_env):
        self.root, self.data, self.env = root, data, child_env
        self.ckpt, self.out = root / "ckpt", root / "out"
        self.n = 0

    def start(self, *extra: str) -> subprocess.Popen:
        self.root.mkdir(parents=True, exist_ok=True)
        self.n += 1
        log_path = self.root / f"attempt-{self.n}.log"
        with open(log_path, "w") as log:
            p = subprocess.Popen(
                [sys.executable, "-m", "trainers.imagenet", *SMALL, "--synthetic-train", "16",
                 "--epochs", "2", "--ckpt-every", "3", "--no-plot", "--threads", "1",
                 "--data-dir", str(self.data),
                 "--checkpoint-dir", str(self.ckpt), "--output-dir", str(self.out), *extra],
                cwd=self.root, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        p.log_path = str(log_path)
        return p

    def finish(self, p: subprocess.Popen, timeout: float = 150) -> tuple[int, str]:
        p.wait(timeout=timeout)
        return p.returncode, Path(p.log_path).read_text()

    def committed(self) -> list[int]:
        return sorted(s for s, p in contract.local_checkpoints(self.ckpt)
                      if contract.read_manifest(p) is not None)

    def max_logged_step(self) -> int:
        return max((r["step"] for r in read_jsonl(self.out / contract.METRICS_NAME)), default=0)


def test_stopped_mid_epoch_twice_resumes_bit_exact(tmp_path, child_env, poll):
    data = tmp_path / "data"
    reference = Run(tmp_path / "reference", data, child_env)
    code, log = reference.finish(reference.start("--workers", "0"))
    assert code == 0, log

    # The interrupted run loads with a worker process: results must not depend on it.
    run = Run(tmp_path / "interrupted", data, child_env)
    slow = ("--workers", "1", "--step-sleep", "0.15")
    p = run.start(*slow)
    poll(lambda: 3 in run.committed(), 90, p, "the checkpoint of step 3")
    os.killpg(p.pid, signal.SIGTERM)  # as the launcher forwards a preemption notice
    code, log = run.finish(p)
    assert code == contract.EXIT_PREEMPTED, log
    step, folder, manifest = latest(run.ckpt)
    assert manifest["reason"] == "preempted" and 3 < step < 10, (step, manifest)

    p = run.start(*slow)
    poll(lambda: 15 in run.committed() and run.max_logged_step() >= 16, 90, p, "step 16")
    os.killpg(p.pid, signal.SIGKILL)  # the machine vanishes
    p.wait()
    step, folder, manifest = latest(run.ckpt)
    assert manifest["reason"] == "periodic" and step % 10 != 0 and step > 10

    code, log = run.finish(run.start("--workers", "1"))
    assert code == 0, log
    assert f"resumed from {folder}" in log

    a, b = load_state(latest(reference.ckpt)[1]), load_state(latest(run.ckpt)[1])
    ta, tb = flat_tensors(a), flat_tensors(b)
    assert ta.keys() == tb.keys() and len(ta) > 100
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"tensors differ after resume: {different[:10]}"
    ca, cb = a[S.KEY_EXTRA]["controller"], b[S.KEY_EXTRA]["controller"]
    assert ca == cb and ca["updates"] == 20
    assert stable(a[S.KEY_HISTORY]) == stable(b[S.KEY_HISTORY])
    metrics_a = read_jsonl(reference.out / contract.METRICS_NAME)
    assert stable(metrics_a) == stable(read_jsonl(run.out / contract.METRICS_NAME))
    assert json.loads((run.out / "results.json").read_text())["attempts"] == 3
