"""A job's logs, attempt after attempt, each under a header line.

A running attempt is read live from its machine (the backend's ``stream_logs``); an attempt whose
machine is gone is read from the copy the agent uploaded to the store (``logs/attempt-N.log``), so
logs outlive the machine. With ``follow``, lines keep coming until the job ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from launcher import contract, state as st
from launcher.backends.base import BackendError


def _store_lines(job: st.Job, n: int) -> list[str] | None:
    if not job.store_uri:
        return None
    try:
        from launcher.store import open_store

        data = open_store(job.store_uri).child(contract.LOGS_PREFIX).get_bytes(contract.log_name(n))
    except Exception:
        return None
    return data.decode(errors="replace").splitlines()


def header(a: st.Attempt) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a.started))
    reason = f" ({a.reason})" if a.reason and a.state not in (st.STARTING, st.RUNNING) else ""
    host = f" on {a.host}" if a.host else ""
    return f"===== attempt {a.n}{host}, started {when}: {a.state}{reason} ====="


def attempt_lines(state: st.State, job: st.Job, a: st.Attempt, follow: bool,
                  backend_for: Callable | None = None) -> Iterator[str]:
    """One attempt's lines: live while it runs, else from the store (falling back to the machine)."""
    from launcher.backends import get_backend

    backend_for = backend_for or get_backend
    live = a.state == st.RUNNING
    if not live:
        lines = _store_lines(job, a.n)
        if lines is not None:
            yield from lines
            return
    sent = 0
    try:
        backend = backend_for(a.handle.get("infra") or job.infra)
        for line in backend.stream_logs(a.handle, follow=follow and live):
            sent += 1
            yield line
        return
    except (BackendError, OSError, KeyError) as e:
        if live:
            yield f"[launch] the machine of attempt {a.n} is gone ({e}); the rest is from the store"
    lines = _store_lines(job, a.n)
    if lines is None:
        if sent == 0:
            yield "[launch] (no log: the machine is gone and nothing reached the store)"
        return
    yield from lines[sent:]


def job_lines(state: st.State, job_id: int, *, attempt: int | None = None, follow: bool = False,
              poll: float = 0.5, backend_for: Callable | None = None) -> Iterator[str]:
    """Every attempt's lines (or only ``attempt``), with ``follow`` until the job ends."""
    job = state.job(job_id)
    if attempt is not None:
        a = state.attempt(job.id, attempt)
        yield header(a)
        yield from attempt_lines(state, job, a, follow, backend_for)
        return
    n = 1
    while True:
        attempts = {a.n: a for a in state.attempts(job.id)}
        job = state.job(job.id)
        a = attempts.get(n)
        if a is None or (a.state == st.STARTING and follow):
            if not follow or (job.terminal and a is None):
                return
            time.sleep(poll)
            continue
        yield header(a)
        yield from attempt_lines(state, job, a, follow, backend_for)
        n += 1
