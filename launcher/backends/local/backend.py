"""The embedded default: this machine runs the attempt as a detached local process.

Each attempt gets its own folder ``$LAUNCH_HOME/runs/<job id>/attempt-N/`` holding a copy of the
workdir, the agent's files and a fresh checkpoint folder that the agent fills from the store. So
a relaunch really resumes from the store, exactly as on a rented machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from launcher import agent as agent_files
from launcher import contract
from launcher.backends.base import (Backend, ProvisionRequest, RunSpec, RunState, RunStatus,
                                    SyncStats)
from launcher.state import launch_home
from launcher.workdir import iter_files


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, /proc/PID/stat field 22), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int | None, started: int | None = None, needle: str = "launcher.agent") -> bool:
    """True if ``pid`` runs and is ours (guards against pid reuse): its command line names the
    agent, or, between fork and exec, when it still shows ours, it started when ours did."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except OSError:
        return False
    return needle in cmd or (started is not None and _start_time(pid) == started)


def _store_note(attempt_dir: Path) -> str:
    try:
        return agent_files.store_note((attempt_dir / agent_files.STORE_STATUS_NAME).read_text())
    except OSError:
        return ""


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class LocalBackend(Backend):
    name = "local"
    agent_drills = True
    # This machine is the user's own: a GPU task run here on the CPU (synthetic data, a try-out)
    # is on purpose, so its accelerators are not checked.
    preflight_accelerators = False

    def __init__(self, infra: str = "local", root: Path | None = None):
        if infra != "local":
            raise ValueError(f"the local backend takes infra 'local', not {infra!r}")
        self.root = Path(root) if root else launch_home() / "runs"

    def provision(self, req: ProvisionRequest) -> dict[str, Any]:
        attempt_dir = self.root / req.job_id / f"attempt-{req.attempt}"
        attempt_dir.mkdir(parents=True, exist_ok=True)
        return {"backend": self.name, "host": "localhost", "attempt_dir": str(attempt_dir)}

    def sync_workdir(self, handle: dict[str, Any], workdir: str | None) -> SyncStats:
        stats = SyncStats()
        if not workdir:
            return stats
        dest = Path(handle["attempt_dir"]) / "workdir"
        for rel, src in iter_files(workdir):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
            stats.files_sent += 1
            stats.bytes_sent += src.stat().st_size
        handle["workdir"] = str(dest)
        return stats

    def start_run(self, handle: dict[str, Any], spec: RunSpec) -> None:
        attempt_dir = Path(handle["attempt_dir"])
        spec.workdir = handle.get("workdir") or spec.workdir
        agent_files.write_attempt_files(attempt_dir, spec.public_dict(), spec.secrets)
        # The agent starts with SIGTERM blocked (a child inherits the mask of the thread that
        # starts it): a notice that comes while its interpreter starts waits for the agent's
        # handler, which unblocks it, instead of killing it.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            with open(attempt_dir / "agent.out", "ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "launcher.agent", str(attempt_dir / agent_files.SPEC_NAME)],
                    cwd=str(attempt_dir), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,  # survives the supervisor; its own process group
                )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        handle["agent_pid"], handle["agent_started"] = proc.pid, _start_time(proc.pid)

    def poll(self, handle: dict[str, Any]) -> RunStatus:
        attempt_dir = Path(handle["attempt_dir"])
        code = _read_int(attempt_dir / agent_files.EXIT_CODE_NAME)
        if code is not None:
            return status_from_exit_code(code)
        if _pid_alive(handle.get("agent_pid"), handle.get("agent_started")):  # also before its exec
            return RunStatus(RunState.RUNNING, store=_store_note(attempt_dir))
        # Re-read: the agent may have written its exit code between the two checks.
        code = _read_int(attempt_dir / agent_files.EXIT_CODE_NAME)
        if code is not None:
            return status_from_exit_code(code)
        return RunStatus(RunState.PREEMPTED, reason="machine lost: the agent vanished without an exit code")

    def stream_logs(self, handle: dict[str, Any], follow: bool = False) -> Iterator[str]:
        path = Path(handle["attempt_dir"]) / agent_files.LOG_NAME
        yield from tail_file(path, follow=follow, alive=lambda: not self.poll(handle).done)

    def signal(self, handle: dict[str, Any], kind: str) -> None:
        attempt_dir = Path(handle["attempt_dir"])
        if kind == "term":
            # The file first: just after start_run the agent may not have exec'd yet (its pid
            # still shows this process's command line, so it is not signalled); it reads the
            # file once its handler is in place.
            (attempt_dir / agent_files.NOTICE_NAME).touch()
            pid = handle.get("agent_pid")
            if _pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
        elif kind == "kill":
            # The machine vanishes: the agent and the run die at once, nothing is uploaded.
            agent_files.killpg(handle.get("agent_pid") if _pid_alive(handle.get("agent_pid")) else None, signal.SIGKILL)
            agent_files.killpg(_read_int(attempt_dir / agent_files.RUN_PGID_NAME), signal.SIGKILL)
        else:
            raise ValueError(f"unknown fire drill {kind!r}")

    def terminate(self, handle: dict[str, Any]) -> None:
        attempt_dir = Path(handle.get("attempt_dir", ""))
        if not handle.get("attempt_dir") or not attempt_dir.exists():
            return
        run_pgid = _read_int(attempt_dir / agent_files.RUN_PGID_NAME)
        if _pid_alive(handle.get("agent_pid")):
            agent_files.killpg(handle["agent_pid"], signal.SIGKILL)
        agent_files.killpg(run_pgid, signal.SIGKILL)
        # Keep the log and spec; drop the bulky copies (code, local and queued checkpoints) and the secrets.
        for name in ("workdir", "checkpoints", agent_files.QUEUE_NAME, agent_files.SECRETS_NAME):
            p = attempt_dir / name
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()


def status_from_exit_code(code: int) -> RunStatus:
    """The agent's exit code -> the run's state (shared by every backend that runs the agent)."""
    if code == 0:
        return RunStatus(RunState.SUCCEEDED, 0, "run exited 0")
    if code == contract.EXIT_PREEMPTED:
        return RunStatus(RunState.PREEMPTED, code, "preemption notice: the run saved and stopped")
    return RunStatus(RunState.FAILED, code, f"exit code {code}")


def tail_file(path: Path, follow: bool, alive, poll: float = 0.2) -> Iterator[str]:
    """Lines of ``path``; with ``follow`` keep reading while ``alive()``, like ``tail -F``."""
    pos = 0
    buf = b""
    last_pass = not follow
    while True:
        try:
            with open(path, "rb") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
            continue
        if last_pass:
            if buf:
                yield buf.decode(errors="replace")
            return
        if not alive():
            last_pass = True  # read once more: lines may have come after the last read
            continue
        time.sleep(poll)
