"""tasks/xr2text.yaml through `launch up` on the local default with synthetic data: a clean run
ends SUCCEEDED, and so does one under fire drills at 30% and 60% of its optimizer steps (a
notice, then a kill with no notice), with a final checkpoint bitwise equal to the clean run's
and the same predictions.csv. The two jobs run side by side (detached), to keep the time down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher import contract
from launcher.testing import load_by_path
from trainers.common.testing import assert_states_equal

pytestmark = pytest.mark.integration
_jobs = load_by_path(Path(__file__).with_name("local_jobs.py"))
TASK = _jobs.REPO / "tasks" / "xr2text.yaml"
# 60 studies (48 for training) on 32-pixel views, a one-layer decoder; four epochs, one per
# stage, two micro-batches per optimizer step: about 13 steps. Two seconds' sleep a step leaves
# the drills, read from the store's metrics (synced every few seconds), room to land inside the
# run, however fast the machine.
TINY = ("--synthetic-studies 60 --image-size 32 --d-model 32 --layers 1 --heads 2 --ff 64 "
        "--beam-size 1 --accum-steps 2 --ckpt-every 1 --log-every 1 --meteor off --no-plot "
        "--step-sleep 2")
ENVS = ["SYNTHETIC=1", "EPOCHS=4", "STAGE_ENDS=1,2,3", f"EXTRA_ARGS={TINY}"]


def test_synthetic_run_succeeds_and_resumes_bit_exactly_after_a_notice_and_a_kill(tmp_path):
    store = f"file://{tmp_path}/store"
    common = ["--infra", "local", "--store", store, "--detach",
              *(x for e in ENVS for x in ("--env", e))]
    _jobs.launch("up", str(TASK), "--name", "clean", *common)
    _jobs.launch("up", str(TASK), "--name", "drilled", "--chaos", "term@30%,kill@60%", *common)
    found = _jobs.wait_terminal(["clean", "drilled"], timeout=600)

    clean, drilled = found["clean"], found["drilled"]
    assert clean["state"] == "SUCCEEDED", clean
    states = [a["state"] for a in drilled["attempts"]]
    assert states[-1] == "SUCCEEDED" and states.count("PREEMPTED") == 2, states
    assert "fire drill term" in drilled["attempts"][0]["reason"]
    assert "fire drill kill" in drilled["attempts"][1]["reason"]
    assert_states_equal(_jobs.final_state(clean), _jobs.final_state(drilled))

    outputs = [_jobs.store_folder(j) / contract.OUTPUTS_PREFIX for j in (clean, drilled)]
    assert (outputs[0] / "predictions.csv").read_text() == \
           (outputs[1] / "predictions.csv").read_text()
    results = json.loads((outputs[1] / "results.json").read_text())
    assert results["attempts"] == 3
    assert [c["stage"] for c in results["curriculum"]] == ["normal", "single", "multi", "all"]
    assert set(results["scores"]) >= {"ours", "most_common_report", "published"}
    assert (outputs[1] / "training_history.csv").is_file()
