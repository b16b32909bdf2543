"""`num_nodes: 2` on an SSH pool, for real: torchrun on two sshd hosts forms one DDP process group
from SkyPilot's variables alone, survives the loss of both machines (SIGKILL to every process of
the attempt, once a checkpoint is in the store), and resumes on both nodes
from the store, bit-identical to an uninterrupted two-rank run.

The trainer is ``ddp_toy.py`` (gloo on the CPU), synced with the task's workdir. Everything else is
the product: ``launch up`` on the command line, the supervisor, the agents (rank 0 uploads the
checkpoints; each rank downloads the newest one and uploads its own log), SeaweedFS over HTTP.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

import pytest

from launcher import checkpoints
from launcher import state as st
from launcher.store import open_store
from launcher.testing import run_uninterrupted, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
TOY = Path(__file__).with_name("ddp_toy.py")
ARGS = "--steps 60 --every 5 --step-time 0.25"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reference_digest(tmp_path: Path) -> str:
    """The same two ranks on this machine, never interrupted."""
    (tmp_path / "ref-tmp").mkdir()
    run_uninterrupted([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                       str(TOY), *ARGS.replace("0.25", "0").split()], tmp_path / "ref",
                      env={"PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path / "ref-tmp")}, timeout=300)
    digests = json.loads((tmp_path / "ref/out/result.json").read_text())["digests"]
    assert len(set(digests)) == 1
    return digests[0]


@pytest.mark.timeout(900)
def test_torchrun_on_two_hosts_resumes_after_a_kill_bit_identical(ssh_lab, s3_server, monkeypatch, launch_cli,
                                                                  tmp_path):
    s3_server.use(monkeypatch)
    ssh_lab.add_host("node-a"), ssh_lab.add_host("node-b")
    ssh_lab.write_pool("pair", ["node-a", "node-b"])
    bucket = s3_server.make_bucket()
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(TOY, work / TOY.name)
    (tmp_path / "node-tmp").mkdir()  # torchrun's rendezvous folders; a killed one leaves its own
    task = tmp_path / "ddp.yaml"
    task.write_text(f"""\
name: ddp
num_nodes: 2
workdir: {work}
envs:
  TMPDIR: {tmp_path / "node-tmp"}
run: |
  python -m torch.distributed.run --nnodes "$SKYPILOT_NUM_NODES" --node_rank "$SKYPILOT_NODE_RANK" \\
    --nproc_per_node 1 --master_addr "$(echo "$SKYPILOT_NODE_IPS" | head -n1)" \\
    --master_port $(( {free_port()} + LAUNCH_ATTEMPT )) {TOY.name} {ARGS}
""")
    launch_cli("up", str(task), "--infra", "ssh/pair", "--store", f"s3://{bucket}/runs", "-d")
    job = st.State().jobs()[-1]
    store = open_store(job.store_uri)

    def committed() -> int:
        latest = checkpoints.latest_checkpoint(store)
        return latest.step if latest else 0

    # Once a checkpoint is in the store, the machines vanish: SIGKILL to every process of the
    # attempt on both hosts (agents, torchrun, ranks), no notice.
    wait_for(lambda: committed() >= 10, 300, "a checkpoint in the store")
    pids = ssh_lab.job_pids(job.run_id)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert committed() < 60, "the run ended before the kill: make the steps slower"
    wait_for(lambda: st.State().job(job.id).terminal, 600, "the job to end")

    attempts = st.State().attempts(job.id)
    assert [a.state for a in attempts] == ["PREEMPTED", "SUCCEEDED"], [(a.state, a.reason) for a in attempts]
    assert attempts[1].host == "node-a,node-b"  # both hosts again, rank 0 first
    head = store.get_bytes("logs/attempt-2.log").decode(errors="replace")
    worker = store.get_bytes("logs/attempt-2.rank-1.log").decode(errors="replace")
    resumed = [line.split("resumed from step ")[1].split()[0] for line in head.splitlines() if "resumed from" in line]
    assert resumed and int(resumed[0]) > 0, head[-3000:]
    assert f"rank 1: resumed from step {resumed[0]}" in worker, worker[-3000:]  # each node got the checkpoint
    result = json.loads(store.get_bytes("outputs/result.json"))
    assert result["steps"] == 60 and len(set(result["digests"])) == 1  # the ranks agree
    assert result["digests"][0] == reference_digest(tmp_path)  # and match a run never interrupted
