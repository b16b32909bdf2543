"""Starting supervisors detached, and restarting the ones that died.

A supervisor holds an exclusive ``flock`` on ``$LAUNCH_HOME/locks/job-N.lock`` for as long as it
lives; the kernel drops the lock when the process dies, however it dies. So "is job N supervised?"
is "can I take its lock?", with no pid files that go stale, and two `launch` commands racing to
restart the same supervisor start at most one that stays.

Test hook: ``LAUNCH_TEST_KILL_AT=PHASE[,PHASE...]`` makes a supervisor SIGKILL itself when it
reaches a named phase of a job's life (``kill_point``), once per job and phase (the job's
``test-kill`` events remember which fired), so a test goes through every phase deterministically
and the next `launch` command restarts it. Phases: ``vast:before-create`` (ledger row written,
create not called), ``vast:after-create`` (instance made, not yet in the ledger),
``provisioned`` (the machine's handle recorded, before it is reached and set up), ``running``
(the first poll that finds the run going), ``attempt-ended:<state>`` (the attempt's end recorded,
its machine not yet torn down; e.g. ``attempt-ended:preempted``), ``backoff`` (waiting before a
relaunch), ``cancel:teardown`` (``launch down`` seen, the attempt not yet torn down). Only a
supervisor process (``arm_kill_points``) obeys it; never set it outside tests.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
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


KILL_AT_ENV = "LAUNCH_TEST_KILL_AT"
KILL_EVENT = "test-kill"
_armed = False


def arm_kill_points() -> None:
    """Let ``kill_point`` fire in this process (the supervisor's ``main`` calls it)."""
    global _armed
    _armed = True


def kill_point(phase: str, job: int | str) -> None:
    """The test hook (module docstring): SIGKILL this process at ``phase`` of ``job`` (its id or
    run id) when ``LAUNCH_TEST_KILL_AT`` names the phase and it has not fired for the job yet.
    A no-op unless armed; the event is written before the kill, so it fires once."""
    wanted = os.environ.get(KILL_AT_ENV, "")
    if not _armed or phase not in {p.strip() for p in wanted.split(",")}:
        return
    state = st.State()
    job_id = state.job(job).id
    message = f"{KILL_AT_ENV}: SIGKILL at {phase}"
    if any(e["kind"] == KILL_EVENT and e["message"] == message for e in state.events(job_id)):
        return
    state.event(job_id, KILL_EVENT, message)
    os.kill(os.getpid(), signal.SIGKILL)


def spawn_supervisor(job_id: int, secrets: dict[str, str] | None = None) -> int:
    """Start ``python -m launcher.supervisor JOB`` detached (own session, no terminal).

    The job's secret values reach it through a pipe on its standard input, read once at start:
    not its command line (``ps``) and not its environment (``/proc/PID/environ`` keeps a process's
    first environment even after it unsets a variable). They are never stored. A supervisor
    restarted later takes them from the restarting command's environment. The task's secret
    variables are left out of the environment it inherits (the store's keys stay: it uses them)."""
    return _spawn(job_id, secrets).pid


def _spawn(job_id: int, secrets: dict[str, str] | None = None) -> subprocess.Popen:
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
    return proc


def read_secrets(stream) -> dict[str, str]:
    """The secrets ``spawn_supervisor`` wrote to the supervisor's standard input (none from a
    terminal: a supervisor started by hand is not waited on for input)."""
    if stream is None or stream.isatty():
        return {}
    text = stream.read()
    return json.loads(text) if text.strip() else {}


def ensure_supervisors(state: st.State, timeout: float = 30.0) -> list[int]:
    """Restart the supervisor of every unfinished job that has none; returns their ids. Returns
    once each holds its job's lock (or has exited), so the command that restarted them (e.g.
    `launch down`) does not take a supervisor that is still starting for a dead one."""
    started = {}
    for job in state.jobs():
        if not job.terminal and not is_supervised(job.id):
            state.event(job.id, "supervisor", "supervisor was not running: restarted")
            started[job.id] = _spawn(job.id)
    deadline = time.monotonic() + timeout
    for job_id, proc in started.items():
        while proc.poll() is None and not is_supervised(job_id) and time.monotonic() < deadline:
            time.sleep(0.05)
    return list(started)
