"""tasks/ham10000.yaml through `launch up` on the local default with synthetic data: two
architectures (ResNet-50, then DenseNet-121) run to SUCCEEDED, and under fire drills at 30% and
60% of the training (a notice, then a kill with no notice) end with a final checkpoint whose
every tensor, each architecture's final weights included, is bitwise equal to an uninterrupted
run's. The two jobs run side by side (detached), to keep the wall time down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher import contract
from launcher.testing import load_by_path
from trainers.common.testing import assert_states_equal

pytestmark = pytest.mark.integration
_jobs = load_by_path(Path(__file__).with_name("local_jobs.py"))
launch, final_state, wait_terminal = _jobs.launch, _jobs.final_state, _jobs.wait_terminal
TASK = _jobs.REPO / "tasks" / "ham10000.yaml"
ARCHS = ["resnet50", "densenet121"]
# 32x32 images, ~85 training images in batches of 16: 6 steps an epoch, one epoch per
# architecture, 12 steps; the pace (a second's sleep a step) leaves the drills, read from the
# store's metrics (synced every few seconds), room to land inside the run.
ENVS = ["SYNTHETIC=1", f"ARCHS={','.join(ARCHS)}", "IMAGE_SIZE=32", "EPOCHS=1", "BATCH_SIZE=16",
        "EXTRA_ARGS=--synthetic-lesions 30 --no-plot --step-sleep 1"]


def test_two_architectures_resume_bit_exactly_after_a_notice_and_a_kill(tmp_path):
    store = f"file://{tmp_path}/store"
    common = ["--infra", "local", "--store", store, "--detach",
              *(x for e in ENVS for x in ("--env", e))]
    launch("up", str(TASK), "--name", "clean", *common)
    launch("up", str(TASK), "--name", "drilled", "--chaos", "term@30%,kill@60%", *common)
    found = wait_terminal(["clean", "drilled"], timeout=900)

    clean, drilled = found["clean"], found["drilled"]
    assert clean["state"] == "SUCCEEDED", clean
    states = [a["state"] for a in drilled["attempts"]]
    assert states[-1] == "SUCCEEDED" and states.count("PREEMPTED") == 2, states
    assert "fire drill term" in drilled["attempts"][0]["reason"]
    assert "fire drill kill" in drilled["attempts"][1]["reason"]

    a, b = final_state(clean), final_state(drilled)
    for arch in ARCHS:
        assert_states_equal(a["extra"]["finished"][arch]["weights"],
                            b["extra"]["finished"][arch]["weights"], f"{arch} weights")
    assert_states_equal(a, b)

    # The last attempt began after ResNet-50 was done, yet the outputs cover both (redrawn
    # from the checkpoint's record).
    outputs = Path(drilled["store"][len("file://"):]) / contract.OUTPUTS_PREFIX
    comparison = json.loads((outputs / "comparison_results.json").read_text())
    assert list(comparison["architectures"]) == ARCHS
    for arch in ARCHS:
        assert (outputs / f"val_predictions_{arch}.csv").is_file()
    assert (outputs / "split.csv").is_file()
