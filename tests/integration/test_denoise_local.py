"""tasks/denoise.yaml through `launch up` on the local default with its synthetic switch: a
plain run ends SUCCEEDED with every method scored in results.json, and a run under fire drills
at 30% and 60% of the training (a notice, then a kill with no notice) ends SUCCEEDED too, with
a final checkpoint bitwise equal to the plain run's. The two jobs run side by side (detached)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher import contract
from launcher.testing import load_by_path
from trainers.common.testing import assert_states_equal

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
_jobs = load_by_path(Path(__file__).with_name("local_jobs.py"))
launch, wait_terminal, final_state = _jobs.launch, _jobs.wait_terminal, _jobs.final_state
TASK = REPO / "tasks" / "denoise.yaml"
# 64 generated training images in batches of 16: 4 steps an epoch, 3 epochs, 12 steps; a coarse
# patch grid keeps a step cheap, and the pace (a second's sleep a step) leaves the drills, read
# from the store's metrics, room to land inside the run.
ENVS = ["SYNTHETIC=1", "EPOCHS=3",
        "EXTRA_ARGS=--synthetic-train 64 --synthetic-test 8 --val-size 8 --stride 4 --threads 1"
        " --ckpt-every 2 --no-plot --no-photos --step-sleep 1"]


def test_synthetic_runs_succeed_and_resume_bit_exactly_under_fire_drills(tmp_path):
    store = f"file://{tmp_path}/store"
    common = ["--infra", "local", "--store", store, "--detach",
              *(x for e in ENVS for x in ("--env", e))]
    launch("up", str(TASK), "--name", "dn-clean", *common)
    launch("up", str(TASK), "--name", "dn-drilled", "--chaos", "term@30%,kill@60%", *common)
    found = wait_terminal(["dn-clean", "dn-drilled"], timeout=600)

    clean, drilled = found["dn-clean"], found["dn-drilled"]
    assert clean["state"] == "SUCCEEDED", clean
    states = [a["state"] for a in drilled["attempts"]]
    assert states[-1] == "SUCCEEDED" and states.count("PREEMPTED") == 2, states
    assert "fire drill term" in drilled["attempts"][0]["reason"]
    assert "fire drill kill" in drilled["attempts"][1]["reason"]
    assert_states_equal(final_state(clean), final_state(drilled))

    for job in (clean, drilled):
        outputs = Path(job["store"][len("file://"):]) / contract.OUTPUTS_PREFIX
        results = json.loads((outputs / "results.json").read_text())
        assert set(results["validation"]) == {"ours", "noisy", "gaussian_blur", "bilateral",
                                              "nl_means"}
        assert results["gain_over_noisy_db"] > 3
