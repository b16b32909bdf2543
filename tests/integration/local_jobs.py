"""Helpers shared by the trainer tests that run a task through ``launch up --infra local``:
the CLI as a child process, the jobs' states, and the final checkpoint a job left in its store."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from launcher import contract

REPO = Path(__file__).resolve().parents[2]


def launch(*args, timeout=300) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "launcher.cli", *args], capture_output=True,
                       text=True, timeout=timeout, cwd=REPO)
    assert r.returncode == 0, f"launch {args} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def jobs() -> dict[str, dict]:
    return {j["name"]: j for j in json.loads(launch("status", "--json").stdout)}


def wait_terminal(names: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = jobs()
        if all(found.get(n, {}).get("state") in ("SUCCEEDED", "FAILED", "CANCELLED")
               for n in names):
            return found
        time.sleep(2)
    raise AssertionError(f"jobs {names} not finished after {timeout} s: "
                         f"{[(n, j.get('state')) for n, j in jobs().items()]}")


def store_prefix(job: dict) -> Path:
    return Path(job["store"][len("file://"):])


def final_state(job: dict) -> dict:
    prefix = store_prefix(job)
    assert (prefix / contract.DONE_NAME).exists()
    step, path, _ = contract.latest_checkpoint(prefix / "ckpt")
    return torch.load(path / "state.pt", map_location="cpu", weights_only=True)
