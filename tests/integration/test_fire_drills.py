"""Fire drills through `launch up` on the local default, against an uninterrupted reference.

- Ten drills at the shares a new user tried (four kills close together, two notices, kills late
  in the run) on a 114-step quickstart: each fires inside the training, after its attempt has
  resumed and taken a step, never after the final checkpoint; no relaunch backs off (a drill,
  not the provider, ended each attempt); the job ends SUCCEEDED with weights bit-identical to the
  reference.
- Twenty kills at random moments (``LAUNCH_DRILL_SEED`` replays a run), about a third in the
  middle of a save (the harness's pause point) and a third in the middle of an upload (the
  agent's): the same weights, and the work recomputed after each kill printed and bounded.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from launcher import contract, state as st
from launcher.testing import run_uninterrupted
from trainers.common.testing import assert_states_equal

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
# 3040 images, 80 % for training, batches of 64: 38 steps an epoch, 114 in three. Small images and
# one thread, so a step is milliseconds even on a loaded machine and an attempt costs its start-up.
TRAIN = "--epochs 3 --num-samples 3040 --image-size 16 --width 8 --no-plot"
ENV = {"OMP_NUM_THREADS": "1"}
TEN_DRILLS = "kill@8%,kill@18%,kill@19%,kill@22%,term@33%,term@36%,kill@40%,kill@74%,kill@86%,kill@91%"
# A metrics line every step, so a drill lands on the step its share names, and paced steps (a
# checkpoint interval of 10 steps is >= 0.3 s), so the agent, which reads the metrics every 0.05 s,
# keeps up with the trainer even on a busy machine: the last drill (91 %) has ten steps to fire in.
# Both tests use these flags, so they share one reference run.
PACED = "--ckpt-every 10 --log-every 1 --step-sleep 0.03"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """``reference(flags)``: the uninterrupted run with those trainer flags (the metrics it logs
    are part of the state), as its final state and its seconds from start-up to the end."""
    runs: dict[str, dict] = {}

    def run(flags: str = "") -> dict:
        if flags not in runs:
            t0 = time.monotonic()
            ckpt, _ = run_uninterrupted([sys.executable, "-m", "trainers.quickstart", *TRAIN.split(), *flags.split()],
                                        tmp_path_factory.mktemp("reference"), env=ENV, cwd=REPO)
            step, path, _ = contract.latest_checkpoint(ckpt)
            assert step == 114
            runs[flags] = {"state": torch.load(path / "state.pt", map_location="cpu", weights_only=True),
                           "seconds": time.monotonic() - t0}
        return runs[flags]
    return run


def task(tmp_path: Path, flags: str = "") -> Path:
    p = tmp_path / "qs.yaml"
    envs = "".join(f"\n  {k}: \"{v}\"" for k, v in ENV.items())
    p.write_text(f"name: qs\nworkdir: {REPO}\nenvs:{envs}\nrun: |\n"
                 f"  python -m trainers.quickstart {TRAIN} {flags}\n")
    return p


def launch(*args, timeout=900):
    r = subprocess.run([sys.executable, "-m", "launcher.cli", *args], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"launch {args} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def drilled_job(t: Path, chaos: str) -> tuple[dict, list[st.Attempt], list[dict], float]:
    t0 = time.monotonic()
    launch("up", str(t), "--name", "drilled", "--chaos", chaos)
    elapsed = time.monotonic() - t0
    job = json.loads(launch("status", "--json").stdout)[0]
    state = st.State()
    return job, state.attempts(job["id"]), state.events(job["id"]), elapsed


def final_state(job: dict) -> dict:
    prefix = Path(job["store"][len("file://"):])
    assert (prefix / contract.DONE_NAME).exists()
    step, path, manifest = contract.latest_checkpoint(prefix / "ckpt")
    assert step == 114 and manifest["reason"] == "final"
    return torch.load(path / "state.pt", map_location="cpu", weights_only=True)


def fired_steps(events: list[dict]) -> dict[int, int]:
    """Attempt number -> the step its drill fired at, from the supervisor's events."""
    out = {}
    for e in events:
        m = re.match(r"fire drill \S+ on attempt (\d+), at step (\d+)", e["message"])
        if e["kind"] == "chaos" and m:
            out[int(m.group(1))] = int(m.group(2))
    return out


def resumed_steps(job: dict, n: int) -> dict[int, int]:
    """Attempt number -> the checkpoint step it resumed from (-1: from scratch), from its log."""
    runs = Path(os.environ["LAUNCH_HOME"]) / "runs" / job["run_id"]
    out = {}
    for i in range(1, n + 1):
        m = re.search(r"resuming from checkpoint step (\d+)", (runs / f"attempt-{i}" / "run.log").read_text())
        out[i] = int(m.group(1)) if m else -1
    return out


def test_ten_drills_fire_inside_training_and_cost_only_their_restarts(tmp_path, reference):
    ref = reference(PACED)
    job, attempts, events, elapsed = drilled_job(task(tmp_path, PACED), TEN_DRILLS)
    assert job["state"] == "SUCCEEDED", job["reason"]
    drills = TEN_DRILLS.split(",")
    assert [a.state for a in attempts] == ["PREEMPTED"] * 10 + ["SUCCEEDED"]
    for a, d in zip(attempts, drills):  # each attempt ended by its own drill, in order
        assert a.reason.startswith(f"fire drill {d}:"), (a.n, a.reason)
    assert all("preemption notice: the run saved" in a.reason for a, d in zip(attempts, drills) if d.startswith("term"))
    # Inside the training: past the attempt's resume point, before the last step.
    fired, resumed = fired_steps(events), resumed_steps(job, 11)
    assert sorted(fired) == list(range(1, 11)), events
    assert all(resumed[n] < fired[n] < 114 for n in fired), (fired, resumed)
    # No back-off: a drill, not the provider, ended each attempt.
    waits = [float(m.group(1)) for e in events if (m := re.search(r"relaunching in (\d+) s", e["message"]))]
    gaps = [b.started - a.ended for a, b in zip(attempts, attempts[1:])]
    run_time = sum(a.ended - a.run_started for a in attempts)
    print(f"\nten drills: job {elapsed:.0f} s (uninterrupted: {ref['seconds']:.0f} s, +"
          f"{(elapsed - ref['seconds']) / 10:.1f} s a drill); attempts ran {run_time:.0f} s; back-off {sum(waits):.0f} s; "
          f"longest gap between attempts {max(gaps):.1f} s; fired at {fired}; resumed from {resumed}")
    assert not waits, waits
    assert max(gaps) < 10, gaps
    assert_states_equal(ref["state"], final_state(job))


def random_kills(seed: int, n: int = 20) -> str:
    """``n`` kills at random shares; about a third in the middle of a save, a third of an upload."""
    rng = random.Random(seed)
    phases = (["save", "upload", ""] * n)[:n]
    rng.shuffle(phases)
    shares = sorted(round(rng.uniform(2, 90), 1) for _ in range(n))
    return ",".join(f"kill@{s:g}%" + (f":{p}" if p else "") for s, p in zip(shares, phases))


def test_twenty_random_kills_mid_save_and_mid_upload_resume_bit_exactly(tmp_path, reference):
    seed = int(os.environ.get("LAUNCH_DRILL_SEED") or time.time())
    chaos, every = random_kills(seed), 10  # PACED: a checkpoint every 10 steps
    # The pacing also lets the agent's look for a checkpoint to upload (every 0.1 s) keep up.
    ref = reference(PACED)
    job, attempts, events, elapsed = drilled_job(task(tmp_path, PACED), chaos)
    assert job["state"] == "SUCCEEDED", job["reason"]
    fired, resumed = fired_steps(events), resumed_steps(job, len(attempts))
    phase = {n: m.group(2) or "" for e in events
             if (m := re.match(r"fire drill \S+ on attempt (\d+), at step \d+(?: mid-(\w+))?$", e["message"]))
             for n in [int(m.group(1))]}
    redo = {n: step - max(resumed[n + 1], 0) for n, step in fired.items()}
    print(f"\n20 random kills (LAUNCH_DRILL_SEED={seed}): {chaos}\njob {elapsed:.0f} s, {len(attempts)} attempts; "
          f"a checkpoint every {every} steps")
    for n in sorted(fired):
        where = f"mid-{phase[n]}" if phase[n] else ""
        print(f"  attempt {n:2d} killed at step {fired[n]:3d} {where:10s} -> attempt {n + 1:2d} resumes from "
              f"step {max(resumed[n + 1], 0):3d}: {redo[n]:2d} steps recomputed")
    within = sum(r <= every for r in redo.values())
    print(f"  at most one interval ({every} steps) recomputed after {within} of {len(redo)} kills; the others lost "
          f"the checkpoint in flight (mid-save, mid-upload, or killed before it was uploaded); worst "
          f"{max(redo.values())} steps")
    assert len(fired) >= 18, (chaos, fired)  # the last ones may find the training finished
    assert list(phase.values()).count("save") >= 3 and list(phase.values()).count("upload") >= 3, phase
    # Every kill cost at most the checkpoint in flight (lost by design in the middle of a save or
    # an upload, or not yet uploaded) and the steps since: nothing older was ever lost.
    assert max(redo.values()) <= 2 * every, (seed, redo)
    assert_states_equal(ref["state"], final_state(job))
