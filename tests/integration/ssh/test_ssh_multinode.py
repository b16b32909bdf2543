"""`num_nodes: 2` on an SSH pool, for real: ``tasks/quickstart.yaml`` runs torchrun on two sshd
hosts, which form one DDP process group (gloo) from SkyPilot's variables alone and train through
the distributed harness (``trainers.common.distributed``). One host is killed in the middle of an
epoch (SIGKILL to every process of the attempt on it, no notice); the job relaunches on both
hosts, resumes from the store, and ends bit-identical to an uninterrupted two-process run.

Everything is the product: ``launch up`` on the command line, the supervisor, the agents (rank 0
uploads the checkpoints, each node uploads its own log), the harness, SeaweedFS over HTTP.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pytest
import torch
import yaml

from launcher import checkpoints, contract
from launcher import state as st
from launcher.store import open_store
from launcher.testing import run_uninterrupted, wait_for
from trainers.common.testing import assert_states_equal

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
# 2400 images, 80 % for training, 32 per rank and step: 30 steps an epoch on two ranks, 60 in two.
TRAIN = {"EPOCHS": "2", "NUM_SAMPLES": "2400", "NPROC": "1", "OMP_NUM_THREADS": "1"}
FLAGS = "--batch-size 32 --image-size 16 --width 8 --no-plot --ckpt-every 5 --log-every 1"


def task_file(tmp_path: Path) -> Path:
    """tasks/quickstart.yaml as it is, on two nodes, with smaller settings and paced steps."""
    doc = yaml.safe_load((REPO / "tasks" / "quickstart.yaml").read_text())
    doc["num_nodes"], doc["workdir"] = 2, str(REPO)
    doc["envs"].update(TRAIN, TMPDIR=str(tmp_path / "node-tmp"))  # torchrun's rendezvous folders
    doc["run"] = doc["run"].replace('--num-samples "$NUM_SAMPLES"', f'--num-samples "$NUM_SAMPLES" {FLAGS} --step-sleep 0.2')
    assert FLAGS in doc["run"]
    (tmp_path / "node-tmp").mkdir()
    p = tmp_path / "qs2.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def reference(tmp_path: Path) -> dict:
    """The same two processes on this machine, never interrupted."""
    ckpt, _ = run_uninterrupted([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                                 "-m", "trainers.quickstart", "--epochs", "2", "--num-samples", "2400", *FLAGS.split()],
                                tmp_path / "ref", env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}, cwd=REPO,
                                timeout=300)
    step, path, _ = contract.latest_checkpoint(ckpt)
    assert step == 60
    return {f.name: torch.load(f, map_location="cpu", weights_only=True) for f in sorted(path.glob("*.pt"))}


@pytest.mark.timeout(900)
def test_torchrun_on_two_hosts_one_killed_mid_epoch_resumes_bit_identical(ssh_lab, s3_server, monkeypatch,
                                                                           launch_cli, tmp_path):
    s3_server.use(monkeypatch)
    ssh_lab.add_host("node-a")
    b = ssh_lab.add_host("node-b")
    ssh_lab.write_pool("pair", ["node-a", "node-b"])
    bucket = s3_server.make_bucket()
    launch_cli("up", str(task_file(tmp_path)), "--infra", "ssh/pair", "--store", f"s3://{bucket}/runs", "-d")
    job = st.State().jobs()[-1]
    store = open_store(job.store_uri)

    def committed() -> int:
        latest = checkpoints.latest_checkpoint(store)
        return latest.step if latest else 0

    # Once a checkpoint of the first epoch is in the store, node-b vanishes: SIGKILL to every
    # process of the attempt on it (its agent, torchrun, rank 1), no notice. node-a is untouched.
    wait_for(lambda: committed() >= 10, 300, "a checkpoint in the store")
    on_b = ssh_lab.job_pids(job.run_id, host=b)
    assert on_b, "no process of the job on node-b"
    for pid in on_b:
        os.kill(pid, signal.SIGKILL)
    assert committed() < 30, "the first epoch ended before the kill: make the steps slower"
    wait_for(lambda: st.State().job(job.id).terminal, 600, "the job to end")

    attempts = st.State().attempts(job.id)
    assert [a.state for a in attempts] == ["PREEMPTED", "SUCCEEDED"], [(x.state, x.reason) for x in attempts]
    assert "node-b" in attempts[0].reason, attempts[0].reason  # the lost host is named
    assert attempts[1].host == "node-a,node-b"  # both hosts again, rank 0 first
    head = store.get_bytes("logs/attempt-2.log").decode(errors="replace")
    resumed = re.search(r"resumed from \S+ \(step (\d+),", head)
    assert resumed and 10 <= int(resumed.group(1)) < 30, head[-3000:]
    assert store.get_bytes("logs/attempt-2.rank-1.log")  # node-b's own log
    final = checkpoints.latest_checkpoint(store)
    assert final.step == 60
    folder = checkpoints.download_checkpoint(store, 60, tmp_path / "final")
    got = {f.name: torch.load(f, map_location="cpu", weights_only=True) for f in sorted(Path(folder).glob("*.pt"))}
    ref = reference(tmp_path)
    assert set(got) == set(ref) == {"state.pt", contract.rank_rng_name(1)}
    for name in ref:
        assert_states_equal(ref[name], got[name], name)
