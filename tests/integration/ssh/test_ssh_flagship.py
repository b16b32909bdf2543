"""The flagship: the quickstart on a two-host SSH pool loses its host mid-epoch, resumes on the
other host from the S3 server, and ends with weights bit-identical to an uninterrupted run.

Host A is killed the hard way (its sshd and every process under it get SIGKILL, nothing is
uploaded on the way out), as soon as the first checkpoint is in the store. Every tensor of the
final checkpoint (model, optimizer, scheduler, RNG states, sampler) is compared with torch.equal.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

from launcher import contract, state as st
from launcher.checkpoints import download_latest
from launcher.store import open_store
from launcher.testing import run_uninterrupted, wait_for
from trainers.common.testing import final_tensors

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
EPOCHS = "1"  # 100 steps, a checkpoint every 25: the kill lands mid-epoch


def uninterrupted(tmp_path: Path) -> Path:
    argv = [sys.executable, "-m", "trainers.quickstart", "--epochs", EPOCHS, "--seed", "0", "--no-plot"]
    return run_uninterrupted(argv, tmp_path / "clean")[0]


def test_quickstart_resumes_on_the_other_host_bit_identical(ssh_lab, s3_server, monkeypatch, launch_cli, tmp_path):
    s3_server.use(monkeypatch)
    a, b = ssh_lab.add_host("host-a"), ssh_lab.add_host("host-b")
    ssh_lab.write_pool("duo", ["host-a", "host-b"])
    bucket = s3_server.make_bucket()
    launch_cli("up", str(REPO / "tasks" / "quickstart.yaml"), "--infra", "ssh/duo", "--env", f"EPOCHS={EPOCHS}",
               "--store", f"s3://{bucket}/runs", "-d")
    job = st.State().jobs()[-1]
    store = open_store(job.store_uri)
    first = wait_for(lambda: [o.key for o in store.list(contract.CKPT_PREFIX) if o.key.endswith(contract.MANIFEST_NAME)],
                     300, "the first checkpoint in the store")
    killed = time.time()
    a.kill()
    print(f"\nhost-a killed after {first[0]} reached the store")
    lost = wait_for(lambda: (x := st.State().attempts(job.id)[0]).ended and x, 30, "attempt 1 to end")
    print(f"kill -> detection: {lost.ended - killed:.1f} s ({lost.reason})")
    assert lost.state == "PREEMPTED" and lost.ended - killed <= 10.0

    final = wait_for(lambda: st.State().job(job.id).terminal and st.State().job(job.id), 600, "the job to end", 1.0)
    assert final.state == "SUCCEEDED", launch_cli.status(job.id)
    assert [x.host for x in st.State().attempts(job.id)] == ["host-a", "host-b"]
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
