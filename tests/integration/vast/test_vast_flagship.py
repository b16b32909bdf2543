"""The quickstart on Vast.ai (the HTTP fake renting sshd hosts): its interruptible instance is outbid
mid-epoch, the job rents the next offer, resumes from the S3 server, and ends with weights
bit-identical to an uninterrupted run (every tensor of the final checkpoint, torch.equal).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from launcher import contract, state as st
from launcher.backends.vast.ledger import Ledger
from launcher.checkpoints import download_latest
from launcher.store import open_store
from launcher.testing import run_uninterrupted, wait_for
from trainers.common.testing import final_tensors

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
EPOCHS = "1"  # 100 steps, a checkpoint every 25: the outbid lands mid-epoch


def uninterrupted(tmp_path: Path) -> Path:
    argv = [sys.executable, "-m", "trainers.quickstart", "--epochs", EPOCHS, "--seed", "0", "--no-plot"]
    return run_uninterrupted(argv, tmp_path / "clean")[0]


def test_quickstart_outbid_resumes_on_another_offer_bit_identical(vast, tmp_path):
    vast.add_host("host-a", min_bid=0.10)
    b = vast.add_host("host-b", min_bid=0.20)
    task = tmp_path / "quickstart.yaml"
    task.write_text((REPO / "tasks" / "quickstart.yaml").read_text().replace(
        "resources:\n  cpus: 2+\n", "resources:\n  cpus: 2+\n  accelerators: RTX4090:1\n  use_spot: true\n")
        .replace("workdir: .\n", f"workdir: {REPO / 'tasks'}\n"))
    assert "use_spot: true" in task.read_text()
    vast.launch("up", str(task), "--infra", "vast", "--env", f"EPOCHS={EPOCHS}", "--store", vast.store, "-d")
    job = st.State().jobs()[-1]
    store = open_store(job.store_uri)
    first = wait_for(lambda: [o.key for o in store.list(contract.CKPT_PREFIX)
                              if o.key.endswith(contract.MANIFEST_NAME)], 300, "the first checkpoint in the store")
    [iid] = vast.api.live()
    vast.api.outbid(iid)
    print(f"\ninstance {iid} outbid after {first[0]} reached the store")

    final = vast.wait_state(job.id, ("SUCCEEDED", "FAILED", "CANCELLED"), 600)
    assert final["state"] == "SUCCEEDED", final
    assert len(final["attempts"]) == 2 and final["attempts"][0]["reason"].startswith("outbid")
    log2 = (b.root / "attempts" / job.run_id / "attempt-2" / "run.log").read_text()
    assert "resuming from checkpoint step" in log2

    got = tmp_path / "from-store"
    download_latest(store, got)
    step, resumed = final_tensors(got)
    clean_step, clean = final_tensors(uninterrupted(tmp_path))
    assert step == clean_step
    assert resumed.keys() == clean.keys() and len(clean) > 10
    different = [k for k in clean if not torch.equal(clean[k], resumed[k])]
    assert different == [], f"tensors differ after resume: {different[:10]}"
    assert Ledger().leaked() == [] and vast.api.live() == []
