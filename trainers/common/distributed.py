"""Many processes, one training: torchrun's environment, the process group, and the few
collectives the harness needs.

Under ``torchrun`` (RANK, WORLD_SIZE, LOCAL_RANK set) ``init()`` joins the process group: NCCL
when the device is a GPU, gloo on CPUs. Without those variables nothing changes: one process,
no group, every collective below a no-op. A trainer calls ``init(args.device)`` first, for its
device (``cuda:LOCAL_RANK`` on a GPU machine), and wraps its model with ``parallel(model)``;
everything else (sharded sample order, one checkpoint written by rank 0 with every rank's RNG,
metrics reduced across ranks, a stop agreed by all) is the harness's business.

A stop must be agreed: a SIGTERM reaches one rank, a deadline comes a few microseconds apart on
each. So every rank puts its own verdict into the all-reduce of the step's numbers, and all of
them stop at the same step boundary, where rank 0 commits the checkpoint and the others wait for it.
"""

from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as tdist

# How long a collective may wait for the other ranks. A rank whose machine vanished leaves the
# others blocked in the next collective; the launcher ends them when it notices the lost node,
# and this bounds the wait where nothing does (torch's own default is 10 to 30 minutes).
ENV_TIMEOUT = "LAUNCH_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0


@dataclass
class World:
    """This process's place: ``rank`` of ``size`` processes, ``local_rank`` on its machine."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # "nccl" / "gloo" once the group is up

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


_WORLD: World | None = None


def _int_env(name: str, default: int) -> int:
    v = os.environ.get(name)
    try:
        return int(v) if v not in (None, "") else default
    except ValueError:
        raise ValueError(f"{name}={v!r} is not an integer (it is set by torchrun)") from None


def from_env() -> World:
    """What torchrun's variables say (one process without them)."""
    size = _int_env("WORLD_SIZE", 1)
    rank, local = _int_env("RANK", 0), _int_env("LOCAL_RANK", 0)
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK={rank} WORLD_SIZE={size}: not a valid torchrun environment")
    return World(rank=rank, size=size, local_rank=local)


def world() -> World:
    """The current process's world: the initialised one, else what the environment says."""
    return _WORLD if _WORLD is not None else from_env()


def init(device: str | torch.device = "auto") -> torch.device:
    """Join the process group when started by torchrun, and return this rank's device.

    ``device``: "auto" (a GPU when there is one), "cpu", "cuda" or "cuda:N". On a GPU each rank
    takes ``cuda:LOCAL_RANK`` (an explicit ``cuda:N`` is honoured only for one process)."""
    global _WORLD
    w = from_env()
    dev = torch.device("cuda" if str(device) == "auto" and torch.cuda.is_available()
                       else "cpu" if str(device) == "auto" else device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda, but no GPU is visible to this process")
        if w.distributed or dev.index is None:
            dev = torch.device("cuda", w.local_rank if w.distributed else 0)
        torch.cuda.set_device(dev)
    if w.distributed and not tdist.is_initialized():
        w.backend = "nccl" if dev.type == "cuda" else "gloo"
        timeout = datetime.timedelta(seconds=float(os.environ.get(ENV_TIMEOUT) or DEFAULT_TIMEOUT_S))
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        tdist.init_process_group(w.backend, timeout=timeout, **kwargs)
        atexit.register(close)
    elif w.distributed:
        w.backend = tdist.get_backend()
    _WORLD = w
    return dev


def close() -> None:
    """Leave the process group (at exit; safe to call twice). The world keeps its rank, so
    only rank 0 goes on writing files; the collectives become no-ops."""
    if tdist.is_available() and tdist.is_initialized():
        try:
            tdist.destroy_process_group()
        except Exception:
            pass


def active() -> bool:
    """Collectives are live: several processes and the group is up."""
    return world().distributed and tdist.is_available() and tdist.is_initialized()


def _comm_device() -> torch.device:
    if world().backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def parallel(model: torch.nn.Module, **ddp_kwargs: Any) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` when there are several processes, else ``model``.
    Keep the bare model for ``Harness.track``: its state_dict has no ``module.`` prefix, so a
    checkpoint loads whatever the number of processes."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    dev = next(model.parameters()).device
    if dev.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [dev.index])
    return DistributedDataParallel(model, **ddp_kwargs)


def all_sum(values: Sequence[float]) -> list[float]:
    """The element-wise sum over every rank (float64), one collective."""
    if not active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t.tolist()


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` (the same shape on each), concatenated in rank order along dim 0."""
    if not active():
        return t
    dev = _comm_device()
    parts = [torch.empty_like(t, device=dev) for _ in range(world().size)]
    tdist.all_gather(parts, t.detach().to(dev).contiguous())
    return torch.cat(parts).to(t.device)


def gather_in_order(local: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n`` rows of a split evaluated in shards (``rank_indices``: rank r holds rows r,
    r+W, r+2W, ...) put back in order on every rank. Shards differ in length by at most one row:
    each is padded to the longest for the all-gather, and the padding dropped."""
    if not active():
        return local
    size = world().size
    rows = -(-n // size)
    if len(local) < rows:
        local = torch.cat([local, local.new_zeros((rows - len(local), *local.shape[1:]))])
    parts = all_gather_cat(local).reshape(size, rows, *local.shape[1:])
    return parts.transpose(0, 1).reshape(size * rows, *local.shape[1:])[:n]


def rank_indices(n: int) -> range:
    """This rank's share of ``n`` items that every rank reads (validation): r, r+W, r+2W, ..."""
    w = world()
    return range(w.rank, n, w.size) if active() else range(n)


def sync_buffers(model: torch.nn.Module, src: int = 0) -> None:
    """Rank ``src``'s buffers (batch norm's running statistics) on every rank. Under DDP each rank
    updates them from its own shard after the last broadcast; before the ranks evaluate shards of
    one split, they must hold the same model. Training is unaffected: DDP broadcasts rank 0's
    buffers at every forward anyway."""
    if not active():
        return
    for b in model.buffers():
        tdist.broadcast(b.data, src=src)


def broadcast(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; for states, not for every step)."""
    if not active():
        return obj
    box = [obj if world().rank == src else None]
    tdist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def gather(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank ``dst`` (None elsewhere)."""
    if not active():
        return [obj]
    w = world()
    out = [None] * w.size if w.rank == dst else None
    tdist.gather_object(obj, out, dst=dst)  # on NCCL through the current device, set by init()
    return out


def barrier() -> None:
    if active():
        if world().backend == "nccl":
            tdist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            tdist.barrier()
