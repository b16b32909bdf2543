"""Fixtures for the trainer tests: a clean contract environment, a toy loop run through the
harness in-process (fast), and the quickstart run as a real subprocess (for signals and kills)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from launcher import contract
from trainers.common import Harness, ResumableSampler

REPO = Path(__file__).resolve().parents[2]

# Quickstart settings small enough for seconds on a CPU: 480 training images, 15 steps an epoch,
# 30 in all, a checkpoint every 4 steps and a metrics line every step.
QS_SMALL = ["--epochs", "2", "--num-samples", "600", "--batch-size", "32", "--image-size", "16",
            "--width", "8", "--ckpt-every", "4", "--log-every", "1"]


@pytest.fixture(autouse=True)
def clean_contract_env(monkeypatch):
    """No LAUNCH_* variable leaks in from the shell that runs the tests."""
    for var in (contract.ENV_JOB_ID, contract.ENV_ATTEMPT, contract.ENV_CHECKPOINT_DIR,
                contract.ENV_CHECKPOINT_URI, contract.ENV_OUTPUT_DIR, contract.ENV_DEADLINE,
                contract.ENV_FORCE_RESUME):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def restore_torch_determinism():
    """For tests that run a trainer in-process: put torch's global mode back afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


class Crash(Exception):
    """A crash between two checkpoints (the loop dies without a stop notice)."""


class Toy:
    """A tiny model trained through the harness in-process, written as a trainer would be.

    ``evals`` gives the val_acc of each epoch (so tests control which epoch is best).
    """

    Crash = Crash

    def __init__(self, root: Path, *, epochs: int = 2, n: int = 40, batch_size: int = 8,
                 seed: int = 0, config: dict | None = None, evals: list[float] | None = None,
                 **harness_kwargs: Any):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = (self.x.sum(1) > 0).long()
        self.model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                         torch.nn.Dropout(0.3), torch.nn.Linear(8, 2))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=3, gamma=0.7)
        self.sampler = ResumableSampler(n, seed=seed)
        self.batch_size = batch_size
        self.evals = evals
        harness_kwargs.setdefault("deadline", None)
        harness_kwargs.setdefault("live_progress", False)
        harness_kwargs.setdefault("plot", False)
        self.h = Harness("toy", config if config is not None else {"seed": seed, "epochs": epochs},
                         total_epochs=epochs, steps_per_epoch=math.ceil(n / batch_size),
                         checkpoint_dir=root / "ckpt", output_dir=root / "out",
                         best=("val_acc", "max"), **harness_kwargs)
        self.h.track(model=self.model, optimizer=self.opt, scheduler=self.sched,
                     sampler=self.sampler)

    def evaluate(self) -> dict[str, float]:
        if self.evals is not None:
            return {"val_acc": self.evals[self.h.epoch]}
        self.model.eval()
        with torch.no_grad():
            acc = (self.model(self.x).argmax(1) == self.y).float().mean().item()
        self.model.train()
        return {"val_acc": acc}

    def run(self, crash_after: int | None = None, on_step: Callable[[Harness], None] | None = None):
        with self.h as h:
            h.resume()
            for _ in h.epochs():
                for idx in self.sampler.batches(self.batch_size):
                    loss = torch.nn.functional.cross_entropy(self.model(self.x[idx]), self.y[idx])
                    self.opt.zero_grad()
                    loss.backward()
                    self.opt.step()
                    self.sched.step()
                    h.step_done(n=len(idx), loss=loss.item())
                    if on_step is not None:
                        on_step(h)
                    if crash_after is not None and h.step == crash_after:
                        raise Crash(f"crash after step {h.step}")
                h.epoch_done(self.evaluate())
            return h.finish()


@pytest.fixture
def toy() -> type[Toy]:
    return Toy


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCH_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # steadier timing on a shared 2-core machine; same for every run
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Quickstart:
    """Runs ``python -m trainers.quickstart`` with QS_SMALL into ``root/ckpt`` and ``root/out``."""

    STEPS = 30
    STEPS_PER_EPOCH = 15

    def __init__(self, root: Path, plot: bool = False):
        self.root = Path(root)
        self.plot = plot
        self.ckpt = self.root / "ckpt"
        self.out = self.root / "out"
        self.runs = 0

    def argv(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "trainers.quickstart", *QS_SMALL, "--checkpoint-dir",
                str(self.ckpt), "--output-dir", str(self.out),
                *([] if self.plot else ["--no-plot"]), *extra]

    def start(self, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a run; its output goes to a file (a pipe nobody reads could block the child)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.runs += 1
        log = open(self.root / f"run-{self.runs}.log", "w")
        p = subprocess.Popen(self.argv(*extra), cwd=self.root, env=subprocess_env(**(env or {})),
                             stdout=log, stderr=subprocess.STDOUT, text=True)
        log.close()
        p.log_path = log.name
        return p

    def finish(self, p: subprocess.Popen, timeout: float = 120) -> subprocess.CompletedProcess:
        """Wait for ``p``; the result's ``stderr`` holds the run's whole output."""
        p.wait(timeout=timeout)
        return subprocess.CompletedProcess(p.args, p.returncode, "", Path(p.log_path).read_text())

    def run(self, *extra: str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        return self.finish(self.start(*extra, env=env), timeout)

    def committed_steps(self) -> list[int]:
        return sorted(s for s, p in contract.local_checkpoints(self.ckpt)
                      if contract.read_manifest(p) is not None)

    def metrics(self) -> list[dict]:
        from trainers.common import read_jsonl

        return read_jsonl(self.out / contract.METRICS_NAME)


@pytest.fixture
def quickstart(tmp_path) -> Callable[..., Quickstart]:
    return lambda name="run", plot=False: Quickstart(tmp_path / name, plot=plot)


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory) -> Quickstart:
    """The reference: the small quickstart run once, start to end, never stopped."""
    run = Quickstart(tmp_path_factory.mktemp("uninterrupted"))
    res = run.run()
    assert res.returncode == 0, res.stderr
    return run


def wait_for(predicate: Callable[[], Any], timeout: float, proc: subprocess.Popen | None = None,
             what: str = "condition") -> Any:
    """Poll ``predicate`` every 5 ms until it is truthy; fail at ``timeout`` or if ``proc`` ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            log = Path(proc.log_path).read_text() if hasattr(proc, "log_path") else ""
            pytest.fail(f"process exited ({proc.returncode}) before {what}:\n{log[-2000:]}")
        time.sleep(0.005)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def child_env() -> Callable[..., dict[str, str]]:
    """The environment for a child Python that imports this repository."""
    return subprocess_env


@pytest.fixture
def poll() -> Callable[..., Any]:
    return wait_for
