"""End to end on --synthetic data: two architectures in turn, a run stopped during the second
(SIGTERM to its process group, then SIGKILL) resumes to a final checkpoint equal to an
uninterrupted run's bit for bit, every architecture's weights included; and what the run reports
about calibration can be recomputed from its val_predictions_<arch>.csv."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from launcher import contract
from trainers.common import load_state, read_jsonl
from trainers.common import state as S
from trainers.common.testing import assert_states_equal
from trainers.ham10000.data import CLASSES
from trainers.ham10000.report import COMPARISON_NAME, predictions_name, read_predictions

ARCHS = ["resnet18", "densenet121"]  # CPU-cheap; the integration test runs resnet50 + densenet121
# 30 lesions (~90 images, ~70 for training): 5 steps of 16 an epoch, 2 epochs per architecture.
SMALL = ["--synthetic", "--synthetic-lesions", "30", "--archs", ",".join(ARCHS), "--epochs", "2",
         "--image-size", "32", "--batch-size", "16", "--cam-images", "3", "--threads", "1",
         "--log-every", "1", "--ckpt-every", "2"]


class Run:
    """``python -m trainers.ham10000`` as a child in its own process group."""

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
                [sys.executable, "-m", "trainers.ham10000", *SMALL, "--data-dir", str(self.data),
                 "--checkpoint-dir", str(self.ckpt), "--output-dir", str(self.out), *extra],
                cwd=self.root, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        p.log_path = str(log_path)
        return p

    def finish(self, p: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
        p.wait(timeout=timeout)
        return p.returncode, Path(p.log_path).read_text()

    def committed(self) -> list[int]:
        return sorted(s for s, p in contract.local_checkpoints(self.ckpt)
                      if contract.read_manifest(p) is not None)

    def steps_logged(self) -> int:
        return max((r["step"] for r in read_jsonl(self.out / contract.METRICS_NAME)), default=0)


def latest(ckpt: Path):
    found = contract.latest_checkpoint(ckpt)
    assert found is not None, f"no verified checkpoint in {ckpt}"
    return found


def test_interrupted_in_the_second_architecture_resumes_bit_exact(tmp_path, child_env, poll):
    data = tmp_path / "data"
    ref = Run(tmp_path / "reference", data, child_env)
    code, log = ref.finish(ref.start("--workers", "0"))
    assert code == 0, log
    steps = json.loads((ref.out / "results.json").read_text())["steps"]
    per_arch = steps // len(ARCHS)
    check_reports(ref.out)

    # The interrupted run loads with a worker process: results must not depend on it.
    run = Run(tmp_path / "interrupted", data, child_env)
    slow = ("--workers", "1", "--step-sleep", "0.15", "--no-plot")
    p = run.start(*slow)
    poll(lambda: run.steps_logged() >= per_arch + 3, 300, p, "step 3 of the second architecture")
    os.killpg(p.pid, signal.SIGTERM)  # as the launcher forwards a preemption notice
    code, log = run.finish(p)
    assert code == contract.EXIT_PREEMPTED, log
    step, folder, manifest = latest(run.ckpt)
    assert manifest["reason"] == "preempted" and per_arch < step < steps, (step, manifest)
    assert load_state(folder)[S.KEY_EXTRA]["arch_index"] == 1
    stopped = step

    p = run.start(*slow)
    poll(lambda: any(s > stopped + 1 for s in run.committed()) and
         run.steps_logged() >= stopped + 3, 300, p, "two more steps")
    os.killpg(p.pid, signal.SIGKILL)  # the machine vanishes
    p.wait()
    step, folder, manifest = latest(run.ckpt)
    assert manifest["reason"] in ("periodic", "epoch") and stopped < step < steps

    code, log = run.finish(run.start("--workers", "1", "--no-plot"))
    assert code == 0, log
    assert f"resumed from {folder}" in log

    a, b = load_state(latest(ref.ckpt)[1]), load_state(latest(run.ckpt)[1])
    for arch in ARCHS:  # every architecture's final weights
        wa, wb = (s[S.KEY_EXTRA]["finished"][arch]["weights"] for s in (a, b))
        assert len(wa) > 50
        assert_states_equal(wa, wb, f"{arch} weights")
    assert_states_equal(a[S.KEY_MODEL], a[S.KEY_EXTRA]["finished"][ARCHS[-1]]["weights"])
    assert_states_equal(a, b)  # and everything else: optimizer, logits, Grad-CAM maps, history
    assert json.loads((run.out / "results.json").read_text())["attempts"] == 3
    ours = json.loads((run.out / COMPARISON_NAME).read_text())
    theirs = json.loads((ref.out / COMPARISON_NAME).read_text())
    for arch in ARCHS:
        ours["architectures"][arch].pop("train_time")
        theirs["architectures"][arch].pop("train_time")
    assert ours == theirs


def check_reports(out: Path) -> None:
    """Temperature scaling keeps accuracy and does not raise NLL; the reported ECE is
    torchmetrics' (15 bins, L1) on the probabilities in val_predictions_<arch>.csv."""
    comparison = json.loads((out / COMPARISON_NAME).read_text())
    assert comparison["classes"] == list(CLASSES) and CLASSES[0] == "mel"
    ece = MulticlassCalibrationError(num_classes=len(CLASSES), n_bins=15, norm="l1")
    for arch in ARCHS:
        r = comparison["architectures"][arch]
        _, labels, probs, cal = read_predictions(out / predictions_name(arch))
        labels, probs, cal = torch.from_numpy(labels), torch.from_numpy(probs), torch.from_numpy(cal)
        assert torch.equal(probs.argmax(1), cal.argmax(1))
        acc = float((cal.argmax(1) == labels).double().mean())
        assert acc == pytest.approx(r["accuracy"], abs=1e-6)
        assert r["accuracy"] == pytest.approx(r["accuracy_before"], abs=1e-6)
        assert r["nll_after"] <= r["nll_before"] + 1e-12
        picked = lambda p: float(-torch.log(p[torch.arange(len(labels)), labels]).mean())
        assert picked(cal) == pytest.approx(r["nll_after"], abs=1e-5)
        assert picked(probs) == pytest.approx(r["nll_before"], abs=1e-5)
        assert float(ece(probs.float(), labels)) == pytest.approx(r["ece_before"], abs=1e-6)
        assert float(ece(cal.float(), labels)) == pytest.approx(r["ece_after"], abs=1e-6)
        assert r["ece_after"] != r["ece_before"] and r["temperature"] > 0
        assert list(r["sensitivity_at_95_specificity"]) == list(CLASSES)  # melanoma first
        assert len(r["confusion_matrix"]) == len(CLASSES)
        assert sum(map(sum, r["confusion_matrix"])) == len(labels)
        assert r["params"] > 1e6 and r["epochs"] == 2 and r["train_time"] > 0
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 2 * len(ARCHS) and "arch" in history[0].split(",")
    for name in ("training_curves", "reliability", "roc_curves", "confusion_matrices", "gradcam",
                 "comparison_table", "dashboard"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
