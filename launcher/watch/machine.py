"""The agent's side of watching: the sampling thread and the attempt's start record.

The agent calls ``start_record`` once it synced down, starts a ``SampleLoop`` around the run, and
uploads ``gpu.jsonl`` with the metrics. Kept out of ``launcher.agent`` so that file stays about
running one attempt.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launcher import contract
from launcher.watch.sampler import Sampler


def start_name(attempt: int) -> str:
    return f"attempt-{attempt}.json"


def end_name(attempt: int) -> str:
    return f"attempt-{attempt}.end.json"


def count_lines(path: Path) -> tuple[int, int | None]:
    """Lines in a metrics file and the highest ``step`` among them (None without any)."""
    n, top = 0, None
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                n += 1
                try:
                    step = json.loads(line).get("step")
                except (ValueError, AttributeError):
                    continue
                if isinstance(step, (int, float)):
                    top = step if top is None else max(top, step)
    except OSError:
        pass
    return n, top


def start_record(attempt: int, host: str, resumed_step: int | None, metrics: Path,
                 now: float | None = None) -> dict[str, Any]:
    """What the plot needs to split the metrics by attempt and count recomputed work: the
    step this attempt resumed from, and how many metrics lines (up to which step) were there."""
    lines, top = count_lines(metrics)
    return {"attempt": attempt, "host": host, "started": round(now or time.time(), 3),
            "resumed_step": resumed_step, "metrics_lines": lines, "metrics_top_step": top}


class SampleLoop:
    """Appends one sample every ``interval`` seconds to ``path`` from a daemon thread."""

    def __init__(self, path: Path, attempt: int, interval: float, say: Callable[[str], None],
                 pgid: Callable[[], int | None], nvml: Any | None = None):
        self.path = path
        self.interval = interval
        self.pgid = pgid
        self.sampler = Sampler(attempt, nvml=nvml)
        if self.sampler.no_gpu_reason:
            say(f"no GPU samples: {self.sampler.no_gpu_reason}; sampling CPU and RAM only")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sampler")

    def start(self) -> "SampleLoop":
        self._thread.start()
        return self

    def sample_once(self) -> None:
        rec = self.sampler.sample(self.pgid())
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def _loop(self) -> None:
        while True:
            try:
                self.sample_once()
            except Exception:  # a sample is informative only; never disturb the run
                pass
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.sampler.close()



# --- the agent's hooks ---------------------------------------------------------------------------

def _put_start(agent, record: dict[str, Any]) -> None:
    logs = agent.store.child(contract.LOGS_PREFIX)
    logs.put_bytes(start_name(int(agent.spec["attempt"])), json.dumps(record).encode())


def record_start(agent, resumed_step: int | None) -> None:
    """Download the job's samples so far (this attempt appends to them) and put the attempt's
    start record in the store."""
    samples = agent.dir / contract.SAMPLES_NAME
    if agent.store.exists(contract.SAMPLES_NAME) and not samples.exists():
        agent.store.get_file(contract.SAMPLES_NAME, str(samples))
    agent.start_record = start_record(int(agent.spec["attempt"]), os.uname().nodename, resumed_step,
                                      agent.out_dir / contract.METRICS_NAME)
    _put_start(agent, agent.start_record)


def start_sampling(agent, nvml: Any | None = None) -> SampleLoop:
    """Start sampling the machine every ``spec["sample_interval"]`` seconds (10 by default)."""
    def pgid() -> int | None:
        return agent.proc.pid if agent.proc is not None else None

    interval = float(agent.spec.get("sample_interval", 10.0))
    return SampleLoop(agent.dir / contract.SAMPLES_NAME, int(agent.spec["attempt"]), interval,
                      agent.say, pgid, nvml=nvml).start()


def preflight(agent, env: dict[str, str]) -> str:
    """Check the task's accelerators on this machine before anything runs; the problem found
    (said in the log and kept in the attempt's start record), or "" when all is well."""
    from launcher.watch.preflight import check

    wanted = agent.spec.get("accelerators")
    if not wanted:
        return ""
    problem = check(wanted, env)
    if problem:
        agent.say(f"preflight failed: {problem}")
        if agent.store is not None and agent.rank == 0:
            try:
                _put_start(agent, {**getattr(agent, "start_record", {}), "preflight": problem})
            except Exception as e:
                agent.say(f"could not record the preflight failure in the store: {e}")
    else:
        agent.say(f"preflight: {', '.join(f'{k}:{v}' for k, v in wanted.items())} present")
    return problem
