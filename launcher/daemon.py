"""Starting supervisors detached, and restarting the ones that died.

A supervisor holds an exclusive ``flock`` on ``$LAUNCH_HOME/locks/job-N.lock`` for as long as it
lives; the kernel drops the lock when the process dies, however it dies. So "is job N supervised?"
is "can I take its lock?", with no pid files that go stale, and two `launch` commands racing to
restart the same supervisor start at most one that stays.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from typing import IO

from launcher import state as st


def _lock_path(job_id: int):
    d = st.launch_home() / "locks"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"job-{job_id}.lock"


def acquire_lock(job_id: int, wait: float = 0.0) -> IO | None:
    """Take the job's supervisor lock; None if another process still holds it after ``wait``
    seconds (a `launch` command checking liveness holds it only for an instant). Keep the file
    open for as long as the lock is wanted."""
    f = open(_lock_path(job_id), "a")
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.monotonic() >= deadline:
                f.close()
                return None
            time.sleep(0.05)


def is_supervised(job_id: int) -> bool:
    f = acquire_lock(job_id)
    if f is None:
        return True
    f.close()
    return False


def spawn_supervisor(job_id: int, secrets: dict[str, str] | None = None) -> int:
    """Start ``python -m launcher.supervisor JOB`` detached (own session, no terminal).

    The job's secret values reach it through a pipe on its standard input, read once at start:
    not its command line (``ps``) and not its environment (``/proc/PID/environ`` keeps a process's
    first environment even after it unsets a variable). They are never stored. A supervisor
    restarted later takes them from the restarting command's environment. The task's secret
    variables are left out of the environment it inherits (the store's keys stay: it uses them)."""
    from launcher.supervisor import STORE_CREDENTIAL_VARS

    logs = st.launch_home() / "supervisors"
    logs.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in (secrets or {}) or k in STORE_CREDENTIAL_VARS}
    with open(logs / f"job-{job_id}.log", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "launcher.supervisor", str(job_id)],
                                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=str(st.launch_home()), env=env)
    try:
        proc.stdin.write(json.dumps(secrets or {}).encode())
        proc.stdin.close()
    except BrokenPipeError:  # it exited at once (another supervisor holds the job)
        pass
    return proc.pid


def read_secrets(stream) -> dict[str, str]:
    """The secrets ``spawn_supervisor`` wrote to the supervisor's standard input (none from a
    terminal: a supervisor started by hand is not waited on for input)."""
    if stream is None or stream.isatty():
        return {}
    text = stream.read()
    return json.loads(text) if text.strip() else {}


def ensure_supervisors(state: st.State) -> list[int]:
    """Restart the supervisor of every unfinished job that has none; returns their ids."""
    restarted = []
    for job in state.jobs():
        if not job.terminal and not is_supervised(job.id):
            state.event(job.id, "supervisor", "supervisor was not running: restarted")
            spawn_supervisor(job.id)
            restarted.append(job.id)
    return restarted
