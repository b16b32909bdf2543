"""A DDP trainer for the multi-node test, started by torchrun on every node (gloo on the CPU).

A linear model learns a fixed random map. Each rank draws its batch from a generator seeded by
(rank, step), so the gradients DDP averages at a step do not depend on when the run was
interrupted. Rank 0 commits a checkpoint (model, optimizer, step) every ``--every`` steps through
the contract's manifest; every rank resumes from the newest one in ``LAUNCH_CHECKPOINT_DIR`` (the
agent syncs it down on each node). At the end each rank prints the digest of its parameters; rank 0
writes it to ``LAUNCH_OUTPUT_DIR/result.json``.

    torchrun --nnodes 2 --node_rank R --nproc_per_node 1 --master_addr A --master_port P \\
        ddp_toy.py --steps 60 --every 5 --step-time 0.1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from launcher import contract


def digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for t in model.state_dict().values():
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--step-time", type=float, default=0.0)
    args = p.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    target = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    root = contract.checkpoint_root_from_env() or Path("ddp-ckpt")
    out = Path(os.environ.get(contract.ENV_OUTPUT_DIR, "ddp-out"))
    step = 0
    latest = contract.latest_checkpoint(root)
    if latest is not None:
        state = torch.load(latest[1] / "state.pt", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        print(f"rank {rank}: resumed from step {step}", flush=True)
    ddp = DistributedDataParallel(model)
    while step < args.steps:
        g = torch.Generator().manual_seed(1000 * step + rank)
        x = torch.randn(32, 16, generator=g)
        loss = ((ddp(x) - x @ target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if rank == 0 and step % args.every == 0:
            d = root / contract.step_dirname(step)
            d.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, d / "state.pt")
            contract.write_manifest(d, contract.build_manifest(d, step=step, metrics={"loss": loss.item()}))
            print(f"rank 0: step {step} loss {loss.item():.5f} committed", flush=True)
        time.sleep(args.step_time)
    mine = digest(model)
    digests = [None] * world
    dist.all_gather_object(digests, mine)
    print(f"rank {rank}: final digest {mine} (world {world}: {' '.join(digests)})", flush=True)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps({"digests": digests, "steps": step}))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
