"""Helpers for testing that a trainer resumes exactly (used by this project's tests; use them
for your own trainer too)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from launcher import contract
from trainers.common.metrics import read_jsonl

# Keys whose values differ between two runs of the same training: wall clock and which attempt
# wrote the checkpoint.
VOLATILE_KEYS = ("attempt", "images_per_s", "throughput")


def assert_states_equal(a: Any, b: Any, path: str = "state") -> None:
    """Every tensor bitwise equal (``torch.equal``, same dtype), every other value equal, in two
    checkpoint states; timing keys (containing "time") and ``VOLATILE_KEYS`` are not compared."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys differ"
        for k in a:
            if "time" in str(k) or k in VOLATILE_KEYS:
                continue
            assert_states_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_states_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def tensors(obj: Any, path: str = "state") -> Iterator[tuple[str, torch.Tensor]]:
    """``(path, tensor)`` for every tensor inside nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from tensors(v, f"{path}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensors(v, f"{path}[{i}]")


def final_tensors(folder: Path) -> tuple[int, dict[str, torch.Tensor]]:
    """The step of the newest verified checkpoint under ``folder`` and every tensor in its
    ``*.pt`` files, keyed by file and path."""
    step, path, _ = contract.latest_checkpoint(folder)
    found: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.pt")):
        found.update(tensors(torch.load(f, map_location="cpu", weights_only=False), f.name))
    return step, found


def torchrun(module: str, nproc: int = 2) -> list[str]:
    """The command line that runs ``python -m module`` under torchrun on this machine alone."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", module]


def torchrun_workers(parent: int) -> dict[int, int]:
    """rank -> pid of the workers torchrun (process ``parent``) started: its children with RANK in
    their environment (Linux ``/proc``). Empty until they are up."""
    out = {}
    try:
        kids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:
        return out
    for pid in map(int, kids):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for kv in env:
            if kv.startswith(b"RANK="):
                out[int(kv[5:])] = pid
    return out


def sigterm_one_rank(argv: list[str], env: dict[str, str], out_dir: Path, at_step: int, *,
                     rank: int = 1, cwd: Path | None = None, timeout: float = 300.0) -> tuple[int, str]:
    """Run the torchrun command ``argv``; once ``metrics.jsonl`` in ``out_dir`` reaches ``at_step``,
    send SIGTERM to rank ``rank`` alone (as a preemption notice that reached one process). Returns
    torchrun's exit code and its output (kept in a file: a pipe nobody reads while waiting would
    block the run once it fills)."""
    metrics = Path(out_dir) / contract.METRICS_NAME
    with tempfile.TemporaryFile("w+") as log:
        run = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + timeout
            while max((r.get("step", 0) for r in read_jsonl(metrics)), default=0) < at_step:
                if run.poll() is not None:
                    log.seek(0)
                    raise AssertionError(f"the run ended ({run.returncode}) before step {at_step}:\n"
                                         f"{log.read()[-3000:]}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out after {timeout} s waiting for step {at_step}")
                time.sleep(0.02)
            pids = torchrun_workers(run.pid)
            assert rank in pids, f"no rank {rank} among torchrun's workers: {pids}"
            os.kill(pids[rank], signal.SIGTERM)
            run.wait(timeout=timeout)
        finally:
            run.kill()
        log.seek(0)
        return run.returncode, log.read()
