"""The spine's promise, end to end through `launch up` on the local default: the quickstart
trainer preempted twice mid-epoch (a notice, then a kill with no notice) ends with a final
checkpoint whose every tensor is bitwise equal to an uninterrupted run's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from launcher import contract
from trainers.common.testing import assert_states_equal

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def task(tmp_path: Path) -> Path:
    # ~30 steps an epoch, a checkpoint every 10 steps; --step-sleep paces the steps so that the
    # drills (in running time) land mid-epoch whether the machine is idle or busy.
    p = tmp_path / "qs.yaml"
    p.write_text(f"""\
name: qs
workdir: {REPO}
envs:
  EPOCHS: "3"
run: |
  python -m trainers.quickstart --epochs "$EPOCHS" --num-samples 2400 --batch-size 64 \\
    --ckpt-every 10 --step-sleep 0.25 --no-plot
""")
    return p


def launch(*args, timeout=600):
    r = subprocess.run([sys.executable, "-m", "launcher.cli", *args], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"launch {args} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def final_state(store_root: Path, job: dict) -> dict:
    prefix = Path(job["store"][len("file://"):])
    step, path, manifest = contract.latest_checkpoint(prefix / "ckpt")
    assert (prefix / contract.DONE_NAME).exists()
    return torch.load(path / "state.pt", map_location="cpu", weights_only=True)


def test_two_preemptions_resume_bit_exactly(tmp_path):
    t = task(tmp_path)
    launch("up", str(t), "--name", "clean")
    launch("up", str(t), "--name", "drilled", "--chaos", "term@10s,kill@22s")
    jobs = {j["name"]: j for j in json.loads(launch("status", "--json").stdout)}
    drilled = jobs["drilled"]
    states = [a["state"] for a in drilled["attempts"]]
    assert states[-1] == "SUCCEEDED" and states.count("PREEMPTED") == 2, states
    assert "fire drill term" in drilled["attempts"][0]["reason"]
    assert "fire drill kill" in drilled["attempts"][1]["reason"]
    logs = launch("logs", str(drilled["id"])).stdout
    assert logs.count("resuming from checkpoint step") >= 1, logs[-2000:]
    a, b = final_state(tmp_path, jobs["clean"]), final_state(tmp_path, drilled)
    assert_states_equal(a["model"], b["model"], "model")
    assert_states_equal(a["optimizer"], b["optimizer"], "optimizer")
    assert_states_equal(a, b)
