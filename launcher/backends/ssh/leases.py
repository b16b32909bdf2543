"""Which job holds which SSH host: one job at a time per host.

A lease is recorded twice. Here, in a small table of the state database
(``$LAUNCH_HOME/state.db``, table ``ssh_leases``), so that supervisors of this machine never pick
the same host; and on the host, as ``<remote root>/lease.json`` (see ``backend.py``), so that
launchers on other machines leave it alone too. This module is the local half.

A host that was lost under an attempt cannot be cleaned up then: the attempt's folder (with its
0600 ``secrets.json``) is recorded in ``ssh_leftovers`` and cleared the next time the backend
provisions and the host answers (``SSHBackend.sweep_leftovers``), or when the host is leased again.

A host whose preflight failed (it lacks the GPUs the task asked for, or its driver cannot use
them) is set aside until a time (``ssh_set_aside``): no job leases it before then.

A lease whose job has ended (or that the state no longer knows) is stale and may be taken over.
Acquiring is a compare-and-set in one transaction, so two supervisors racing for one host get it
once. ``acquire`` for a lease already held by the same job and attempt succeeds again, and
``release`` of a lease not held is quiet: both are safe to call twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from launcher.state import launch_home, transaction

LEFTOVER_TTL = 7 * 86400.0

_SCHEMA = ("""
CREATE TABLE IF NOT EXISTS ssh_leases (
    host TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    since REAL NOT NULL
)""", """
CREATE TABLE IF NOT EXISTS ssh_leftovers (
    host TEXT NOT NULL,
    attempt_dir TEXT NOT NULL,
    node TEXT NOT NULL,
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (host, attempt_dir)
)""", """
CREATE TABLE IF NOT EXISTS ssh_set_aside (
    host TEXT PRIMARY KEY,
    until REAL NOT NULL,
    reason TEXT NOT NULL
)""")


@dataclass(frozen=True)
class Lease:
    host: str
    job_id: str
    attempt: int
    since: float


def job_ended(job_id: str) -> bool:
    """True when the state says the job is over, or does not know it: its leases are stale."""
    from launcher import state as st
    from launcher.errors import StateError

    try:
        return st.State().job(job_id).terminal
    except StateError:
        return True


class Leases:
    def __init__(self, path: Path | None = None, is_stale: Callable[[str], bool] = job_ended):
        self.path = Path(path) if path else launch_home() / "state.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.is_stale = is_stale
        with self._tx() as c:
            for table in _SCHEMA:
                c.execute(table)

    def _tx(self):
        return transaction(self.path)

    def holder(self, host: str) -> Lease | None:
        with self._tx() as c:
            row = c.execute("SELECT host, job_id, attempt, since FROM ssh_leases WHERE host = ?",
                            (host,)).fetchone()
        return Lease(*row) if row else None

    def all(self) -> list[Lease]:
        with self._tx() as c:
            rows = c.execute("SELECT host, job_id, attempt, since FROM ssh_leases ORDER BY host").fetchall()
        return [Lease(*r) for r in rows]

    def acquire(self, host: str, job_id: str, attempt: int) -> bool:
        """Take ``host`` for (job, attempt); False when another live job holds it."""
        current = self.holder(host)
        if current is not None and current.job_id != job_id and not self.is_stale(current.job_id):
            return False
        with self._tx() as c:
            if current is None:
                cur = c.execute("INSERT OR IGNORE INTO ssh_leases (host, job_id, attempt, since)"
                                " VALUES (?,?,?,?)", (host, job_id, attempt, time.time()))
            else:  # compare-and-set against what we read: a racing supervisor wins at most once
                cur = c.execute("UPDATE ssh_leases SET job_id = ?, attempt = ?, since = ? WHERE host = ?"
                                " AND job_id = ? AND attempt = ?",
                                (job_id, attempt, time.time(), host, current.job_id, current.attempt))
            return cur.rowcount == 1

    def release(self, host: str, job_id: str, attempt: int) -> None:
        """Drop the lease if (job, attempt) holds it; quiet otherwise."""
        with self._tx() as c:
            c.execute("DELETE FROM ssh_leases WHERE host = ? AND job_id = ? AND attempt = ?",
                      (host, job_id, attempt))

    # --- what lost hosts still hold ------------------------------------------------------------
    def add_leftover(self, node: dict, job_id: str, attempt: int) -> None:
        """``node`` (a handle's node: address and ``attempt_dir``) could not be cleaned up."""
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO ssh_leftovers (host, attempt_dir, node, job_id, attempt, since)"
                      " VALUES (?,?,?,?,?,?)", (node["key"], node["attempt_dir"], json.dumps(node), job_id,
                                                attempt, time.time()))

    def leftovers(self, max_age: float = LEFTOVER_TTL) -> list[tuple[dict, str, int]]:
        """``(node, job_id, attempt)`` of every attempt folder still to clean, oldest first. A
        host away for longer than ``max_age`` is forgotten (retired, or reinstalled)."""
        with self._tx() as c:
            c.execute("DELETE FROM ssh_leftovers WHERE since < ?", (time.time() - max_age,))
            rows = c.execute("SELECT node, job_id, attempt FROM ssh_leftovers ORDER BY since").fetchall()
        return [(json.loads(n), j, a) for n, j, a in rows]

    def drop_leftover(self, host: str, attempt_dir: str) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM ssh_leftovers WHERE host = ? AND attempt_dir = ?", (host, attempt_dir))

    # --- hosts set aside --------------------------------------------------------------------------
    def set_aside(self, host: str, until: float, reason: str) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO ssh_set_aside (host, until, reason) VALUES (?,?,?)",
                      (host, until, reason))

    def aside(self, host: str, now: float) -> tuple[float, str] | None:
        """``(until, reason)`` while ``host`` is set aside, else None."""
        with self._tx() as c:
            row = c.execute("SELECT until, reason FROM ssh_set_aside WHERE host = ? AND until > ?",
                            (host, now)).fetchone()
        return (row[0], row[1]) if row else None
