"""Fakes and factories for testing launch, and tasks of your own, without a GPU or a cloud.

- ``FakeBackend``: a backend whose attempts end as scripted (``["preempted", "succeeded"]``),
  recording every call, for supervisor and recovery tests that never sleep.
- ``FakeClock``: a clock and a sleep that advance time instantly.
- The toy trainer, ``python -m launcher.testing toy --steps 20``: a standard-library-only script
  that follows the trainer contract (resume from the latest verified checkpoint, a checkpoint every
  step, SIGTERM -> checkpoint and exit 75). Its "weights" are a running hash of the steps, so an
  exactly resumed run ends with the same hash as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher import contract
from launcher.backends.base import (Backend, NoCapacityError, ProvisionRequest, RunSpec, RunState,
                                    RunStatus)


def wait_for(pred, timeout: float = 60.0, what: str = "condition", every: float = 0.1):
    """Poll ``pred()`` until it returns something truthy and return that; AssertionError naming
    ``what`` after ``timeout`` seconds. For tests that wait on real processes: never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class FakeClock:
    now: float = 1_000_000.0
    slept: list[float] = field(default_factory=list)

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


_OUTCOMES = {
    "succeeded": RunStatus(RunState.SUCCEEDED, 0, "run exited 0"),
    "preempted": RunStatus(RunState.PREEMPTED, contract.EXIT_PREEMPTED, "preemption notice"),
    "lost": RunStatus(RunState.PREEMPTED, None, "machine lost"),
    "failed": RunStatus(RunState.FAILED, 1, "exit code 1"),
    "failed_final": RunStatus(RunState.FAILED, 1, "exit code 1", final=True),  # provider retried already
    "preflight": RunStatus(RunState.FAILED, contract.EXIT_PREFLIGHT, "exit code 78"),  # no GPU there
}


class FakeBackend(Backend):
    """Scripted attempts. Each script item is an outcome name (``succeeded``, ``preempted``,
    ``lost``, ``failed``, ``failed_final``, ``no_capacity``, ``hung``, ``preflight``); a run stays RUNNING for
    ``polls_per_run`` polls (a ``hung`` one until it is terminated)."""

    name = "fake"

    def __init__(self, script: list[str], polls_per_run: int = 2, clock: FakeClock | None = None):
        self.script = list(script)
        self.polls_per_run = polls_per_run
        self.calls: list[tuple[str, Any]] = []
        self.live: set[str] = set()  # ids of machines not yet terminated
        self.signals: list[str] = []
        self._n = 0

    def provision(self, req: ProvisionRequest) -> dict[str, Any]:
        self.calls.append(("provision", req))
        outcome = self.script.pop(0) if self.script else "succeeded"
        if outcome == "no_capacity":
            raise NoCapacityError("no offer matches")
        self._n += 1
        hid = f"fake-{self._n}"
        self.live.add(hid)
        return {"host": hid, "outcome": outcome, "polls": 0, "price_per_hour": 1.0}

    def start_run(self, handle: dict[str, Any], spec: RunSpec) -> None:
        self.calls.append(("start_run", spec))

    def poll(self, handle: dict[str, Any]) -> RunStatus:
        handle["polls"] += 1
        if handle["host"] not in self.live:
            return RunStatus(RunState.PREEMPTED, reason="terminated")
        if handle["outcome"] == "hung" and not handle.get("signalled"):
            return RunStatus(RunState.RUNNING)  # alive, never done: only a stall ends it
        if handle["polls"] <= self.polls_per_run and not handle.get("signalled"):
            return RunStatus(RunState.RUNNING)
        return _OUTCOMES[handle["outcome"]]

    def stream_logs(self, handle: dict[str, Any], follow: bool = False) -> Iterator[str]:
        yield f"log of {handle['host']}"

    def signal(self, handle: dict[str, Any], kind: str) -> None:
        self.signals.append(kind)
        handle["signalled"] = True
        handle["outcome"] = "preempted" if kind == "term" else "lost"

    def terminate(self, handle: dict[str, Any]) -> None:
        self.calls.append(("terminate", handle.get("host")))
        self.live.discard(handle.get("host", ""))


# --- test helpers kept next to the tests -------------------------------------------------------

def load_by_path(path: str | os.PathLike, name: str | None = None) -> Any:
    """Import the Python file at ``path`` as module ``name`` (its stem by default), once: tests/
    has no packages, so its helper modules (HTTP fakes, fixtures) are loaded by their path."""
    name = name or Path(path).stem
    if name not in sys.modules:
        import importlib.util

        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# --- the reference run -------------------------------------------------------------------------

def run_uninterrupted(argv: list[str], workdir: Path, *, env: dict[str, str] | None = None,
                      cwd: Path | None = None, timeout: float = 600.0) -> tuple[Path, str]:
    """Run a contract-following trainer once, never interrupted, with its checkpoints in
    ``workdir/ckpt`` and its outputs in ``workdir/out``: the reference a resumed run must equal.
    ``env`` adds variables; a deadline from the caller's environment is dropped. Returns the
    checkpoint folder and the run's stdout."""
    ckpt = Path(workdir) / "ckpt"
    run_env = {k: v for k, v in os.environ.items() if k != contract.ENV_DEADLINE}
    run_env.update({contract.ENV_CHECKPOINT_DIR: str(ckpt), contract.ENV_OUTPUT_DIR: str(Path(workdir) / "out"),
                    **(env or {})})
    out = subprocess.run(argv, env=run_env, cwd=cwd or Path(workdir).parent, check=True, capture_output=True,
                         text=True, timeout=timeout).stdout
    return ckpt, out


def toy_digest(steps: int, workdir: Path) -> str:
    """The toy trainer's final digest after ``steps`` uninterrupted steps."""
    _, out = run_uninterrupted([sys.executable, "-m", "launcher.testing", "toy", "--steps", str(steps),
                                "--step-time", "0"], workdir)
    return out.split("final digest")[-1].split()[0]


# --- the toy trainer ---------------------------------------------------------------------------

def _toy(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m launcher.testing toy",
                                description="A contract-following toy trainer (standard library only).")
    p.add_argument("--steps", type=int, default=20, help="steps to train")
    p.add_argument("--step-time", type=float, default=0.1, help="seconds per step")
    p.add_argument("--fail-at", type=int, default=-1, help="exit 1 at this step (a user error)")
    p.add_argument("--hang-at", type=int, default=-1,
                   help="in attempt 1 only, stop making progress at this step and stay alive (a hung run)")
    args = p.parse_args(argv)
    root = contract.checkpoint_root_from_env() or Path("toy-ckpt")
    root.mkdir(parents=True, exist_ok=True)
    out = Path(os.environ.get(contract.ENV_OUTPUT_DIR, "toy-out"))
    out.mkdir(parents=True, exist_ok=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    step, digest = 0, hashlib.sha256(b"toy").hexdigest()
    latest = contract.latest_checkpoint(root)
    if latest is not None:
        state = json.loads((latest[1] / "state.json").read_text())
        step, digest = state["step"], state["digest"]
        print(f"resumed at step {step}", flush=True)

    def save() -> None:
        d = root / contract.step_dirname(step)
        d.mkdir(exist_ok=True)
        (d / "state.json").write_text(json.dumps({"step": step, "digest": digest}))
        contract.write_manifest(d, contract.build_manifest(d, step=step, metrics={"digest": digest}))

    while step < args.steps:
        if stop:
            save()
            print(f"notice: saved step {step}, exiting {contract.EXIT_PREEMPTED}", flush=True)
            return contract.EXIT_PREEMPTED
        if step == args.fail_at:
            print("failing on purpose", flush=True)
            return 1
        if step == args.hang_at and os.environ.get(contract.ENV_ATTEMPT, "1") == "1":
            print(f"hanging at step {step} on purpose", flush=True)
            while True:  # alive, deaf to the notice, no progress: what a deadlocked loader looks like
                time.sleep(3600)
        time.sleep(args.step_time)
        step += 1
        digest = hashlib.sha256(f"{digest}:{step}".encode()).hexdigest()
        save()
        with open(out / contract.METRICS_NAME, "a") as f:
            f.write(json.dumps({"step": step, "epoch": step // 10, "total_steps": args.steps}) + "\n")
        print(f"step {step} digest {digest[:12]}", flush=True)
    print(f"done: final digest {digest}", flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["toy"]:
        sys.exit(_toy(sys.argv[2:]))
    print("usage: python -m launcher.testing toy [--steps N] [--step-time S] [--fail-at N] [--hang-at N]",
          file=sys.stderr)
    sys.exit(2)
