"""Job state in SQLite under ``~/.launch`` (``LAUNCH_HOME`` overrides).

Three tables: ``jobs`` (one per ``launch up``), ``attempts`` (one per machine a job ran on, with
host, start, end, reason and cost), ``events`` (a timeline for ``launch status``). The CLI and the
supervisors are separate processes; WAL mode and short transactions let them share the file.
Secrets are never stored here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from launcher.errors import StateError

# Job states. Terminal ones never change again.
PENDING, STARTING, RUNNING, RECOVERING = "PENDING", "STARTING", "RUNNING", "RECOVERING"
CANCELLING = "CANCELLING"
SUCCEEDED, FAILED, CANCELLED = "SUCCEEDED", "FAILED", "CANCELLED"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT UNIQUE NOT NULL,
    name TEXT NOT NULL,
    task_path TEXT,
    task_yaml TEXT NOT NULL,
    infra TEXT NOT NULL,
    store_uri TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    ended REAL,
    supervisor_pid INTEGER,
    supervisor_beat REAL,
    progress TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS attempts (
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    n INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    host TEXT NOT NULL DEFAULT '',
    handle TEXT NOT NULL DEFAULT '{}',
    exit_code INTEGER,
    started REAL NOT NULL,
    run_started REAL,
    ended REAL,
    price_per_hour REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, n)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
"""


def launch_home() -> Path:
    return Path(os.environ.get("LAUNCH_HOME") or Path.home() / ".launch").expanduser()


@contextmanager
def transaction(path: Path) -> Iterator[sqlite3.Connection]:
    """One short write transaction on the state database (shared by the CLI, the supervisors
    and the backends' own tables): rows as ``sqlite3.Row``, committed on success, rolled back on
    any error, the connection always closed."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()


@dataclass
class Attempt:
    job_id: int
    n: int
    state: str
    reason: str = ""
    host: str = ""
    handle: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    started: float = 0.0
    run_started: float | None = None
    ended: float | None = None
    price_per_hour: float = 0.0

    def cost(self, now: float | None = None) -> float:
        end = self.ended or now or time.time()
        return max(0.0, end - self.started) / 3600.0 * self.price_per_hour

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.n, "state": self.state, "reason": self.reason, "host": self.host,
            "exit_code": self.exit_code, "started": self.started, "ended": self.ended,
            "price_per_hour": self.price_per_hour, "cost": round(self.cost(), 6),
            # Recoveries the provider made on its own inside this attempt (SkyPilot managed jobs).
            "provider_recoveries": int(self.handle.get("recovery_count") or 0),
        }


@dataclass
class Job:
    id: int
    run_id: str
    name: str
    task_path: str | None
    task_yaml: str
    infra: str
    store_uri: str
    options: dict[str, Any]
    state: str
    reason: str
    created: float
    ended: float | None
    supervisor_pid: int | None
    supervisor_beat: float | None
    progress: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


class State:
    """A handle on the state database. Cheap to create; every call is its own transaction."""

    def __init__(self, home: Path | None = None):
        self.home = Path(home) if home else launch_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.path = self.home / "state.db"
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
        finally:
            conn.close()

    def _conn(self):
        return transaction(self.path)

    # --- jobs ----------------------------------------------------------------------------------
    def create_job(self, *, name: str, task_path: str | None, task_yaml: str, infra: str,
                   store_uri: str | None, options: dict[str, Any]) -> Job:
        run_id = f"{name}-{uuid.uuid4().hex[:8]}"
        # The job's prefix in the store is the store root plus the run id (unique across machines).
        prefix = f"{store_uri.rstrip('/')}/{run_id}" if store_uri else ""
        with self._conn() as c:
            cur = c.execute(
                "INSERT INTO jobs (run_id, name, task_path, task_yaml, infra, store_uri, options,"
                " state, created) VALUES (?,?,?,?,?,?,?,?,?)",
                (run_id, name, task_path, task_yaml, infra, prefix, json.dumps(options), PENDING,
                 time.time()),
            )
            job_id = cur.lastrowid
            c.execute("INSERT INTO events (job_id, ts, kind, message) VALUES (?,?,?,?)",
                      (job_id, time.time(), "submitted", f"job {name} submitted on {infra}"))
        return self.job(job_id)

    def job(self, job_id: int | str) -> Job:
        with self._conn() as c:
            row = c.execute("SELECT * FROM jobs WHERE id = ? OR run_id = ? OR name = ?"
                            " ORDER BY id DESC LIMIT 1",
                            (_as_int(job_id), str(job_id), str(job_id))).fetchone()
        if row is None:
            raise StateError(f"No job {job_id!r}. See `launch status` for the list of jobs.")
        return _job(row)

    def jobs(self) -> list[Job]:
        with self._conn() as c:
            rows = c.execute("SELECT * FROM jobs ORDER BY id").fetchall()
        return [_job(r) for r in rows]

    def set_job(self, job_id: int, **fields: Any) -> None:
        for k in ("options", "progress"):
            if k in fields:
                fields[k] = json.dumps(fields[k])
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._conn() as c:
            c.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def set_reason(self, job_id: int, reason: str, only_in: str) -> bool:
        """Change the job's reason while it is in state ``only_in`` (no event); True if changed."""
        with self._conn() as c:
            return c.execute("UPDATE jobs SET reason = ? WHERE id = ? AND state = ?",
                             (reason, job_id, only_in)).rowcount > 0

    def transition(self, job_id: int, state: str, reason: str = "", *, only_from: set[str] | None = None) -> bool:
        """Set the job's state unless it is terminal (or not in ``only_from``); True if changed."""
        with self._conn() as c:
            row = c.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["state"] in TERMINAL:
                return False
            if row["state"] == CANCELLING and state not in TERMINAL:
                return False  # a cancel request is never overwritten by progress
            if only_from is not None and row["state"] not in only_from:
                return False
            ended = time.time() if state in TERMINAL else None
            c.execute("UPDATE jobs SET state = ?, reason = ?, ended = ? WHERE id = ?",
                      (state, reason, ended, job_id))
            c.execute("INSERT INTO events (job_id, ts, kind, message) VALUES (?,?,?,?)",
                      (job_id, time.time(), "state", f"{state}{': ' + reason if reason else ''}"))
        return True

    def beat(self, job_id: int, pid: int) -> None:
        with self._conn() as c:
            c.execute("UPDATE jobs SET supervisor_pid = ?, supervisor_beat = ? WHERE id = ?",
                      (pid, time.time(), job_id))

    # --- attempts ------------------------------------------------------------------------------
    def add_attempt(self, job_id: int, *, host: str = "", handle: dict | None = None,
                    price_per_hour: float = 0.0, started: float | None = None) -> Attempt:
        with self._conn() as c:
            row = c.execute("SELECT COALESCE(MAX(n), 0) + 1 FROM attempts WHERE job_id = ?",
                            (job_id,)).fetchone()
            n = row[0]
            c.execute("INSERT INTO attempts (job_id, n, state, host, handle, started, price_per_hour)"
                      " VALUES (?,?,?,?,?,?,?)",
                      (job_id, n, STARTING, host, json.dumps(handle or {}), started if started is not None else time.time(), price_per_hour))
        return self.attempt(job_id, n)

    def attempt(self, job_id: int, n: int) -> Attempt:
        with self._conn() as c:
            row = c.execute("SELECT * FROM attempts WHERE job_id = ? AND n = ?", (job_id, n)).fetchone()
        if row is None:
            raise StateError(f"Job {job_id} has no attempt {n}.")
        return _attempt(row)

    def attempts(self, job_id: int) -> list[Attempt]:
        with self._conn() as c:
            rows = c.execute("SELECT * FROM attempts WHERE job_id = ? ORDER BY n", (job_id,)).fetchall()
        return [_attempt(r) for r in rows]

    def set_attempt(self, job_id: int, n: int, **fields: Any) -> None:
        if "handle" in fields:
            fields["handle"] = json.dumps(fields["handle"])
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._conn() as c:
            c.execute(f"UPDATE attempts SET {cols} WHERE job_id = ? AND n = ?", (*fields.values(), job_id, n))

    # --- events --------------------------------------------------------------------------------
    def event(self, job_id: int, kind: str, message: str) -> None:
        with self._conn() as c:
            c.execute("INSERT INTO events (job_id, ts, kind, message) VALUES (?,?,?,?)",
                      (job_id, time.time(), kind, message))

    def events(self, job_id: int) -> list[dict[str, Any]]:
        with self._conn() as c:
            rows = c.execute("SELECT ts, kind, message FROM events WHERE job_id = ? ORDER BY id",
                             (job_id,)).fetchall()
        return [dict(r) for r in rows]


def _as_int(v: int | str) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return -1


def _job(row: sqlite3.Row) -> Job:
    d = dict(row)
    d["options"] = json.loads(d["options"] or "{}")
    d["progress"] = json.loads(d.get("progress") or "{}")
    return Job(**d)


def _attempt(row: sqlite3.Row) -> Attempt:
    d = dict(row)
    d["handle"] = json.loads(d["handle"] or "{}")
    return Attempt(**d)
