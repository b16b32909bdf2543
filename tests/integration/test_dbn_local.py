"""tasks/dbn.yaml through `launch up` on the local default with synthetic data: a clean job and
one under fire drills at 30% and 60% of its steps (a notice, then a kill with no notice) both
end SUCCEEDED, and the drilled job's final checkpoint (autoencoder, every RBM, the chains, the
codes, the history) is bitwise equal to the clean one's. The two jobs run side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher import contract
from launcher.testing import load_by_path
from trainers.common.testing import assert_states_equal

pytestmark = pytest.mark.integration
local_jobs = load_by_path(Path(__file__).with_name("local_jobs.py"))
TASK = local_jobs.REPO / "tasks" / "dbn.yaml"
# 64 images in batches of 16: 4 steps an epoch; 2 autoencoder epochs, then 2 timesteps of 3
# epochs: 32 steps, paced so that the drills (read from the store's metrics, synced every few
# seconds) land inside the run, the kill inside a timestep.
ENVS = ["SYNTHETIC=1", "TIMESTEPS=2", "EPOCHS_PER_TIMESTEP=3", "AE_EPOCHS=2",
        "EXTRA_ARGS=--synthetic-train 64 --synthetic-test 16 --batch-size 16 --ckpt-every 5 "
        "--no-plot --step-sleep 0.6"]


def test_dbn_resumes_bit_exactly_after_a_notice_and_a_kill(tmp_path):
    store = f"file://{tmp_path}/store"
    common = ["--infra", "local", "--store", store, "--detach",
              *(x for e in ENVS for x in ("--env", e))]
    local_jobs.launch("up", str(TASK), "--name", "clean", *common)
    local_jobs.launch("up", str(TASK), "--name", "drilled", "--chaos", "term@30%,kill@60%",
                      *common)
    found = local_jobs.wait_terminal(["clean", "drilled"], timeout=600)

    clean, drilled = found["clean"], found["drilled"]
    assert clean["state"] == "SUCCEEDED", clean
    states = [a["state"] for a in drilled["attempts"]]
    assert states[-1] == "SUCCEEDED" and states.count("PREEMPTED") == 2, states
    assert "fire drill term" in drilled["attempts"][0]["reason"]
    assert "fire drill kill" in drilled["attempts"][1]["reason"]

    a, b = local_jobs.final_state(clean), local_jobs.final_state(drilled)
    assert a["loop"]["step"] == 32 and len(a["extra"]["pll_start"]) == 2
    assert_states_equal(a, b)
    results = [json.loads((local_jobs.store_folder(j) / contract.OUTPUTS_PREFIX /
                           "results.json").read_text()) for j in (clean, drilled)]
    assert results[0]["sample_check"] == results[1]["sample_check"]
    assert results[0]["timesteps"] == results[1]["timesteps"]
    assert results[1]["attempts"] == 3
