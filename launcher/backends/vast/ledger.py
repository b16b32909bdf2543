"""Every Vast.ai instance we ever asked for, in a table of the state database.

``$LAUNCH_HOME/state.db``, table ``vast_instances``: one row per create call, written *before*
the call (state ``creating``, with the unique label the instance will carry), then given the
instance id when the call returns, then closed (``destroyed`` set) when the instance is destroyed
or the call is known to have made nothing. A row that is not closed is an instance that may be
billing: the backend sweeps them (see ``backend.py``), and :meth:`Ledger.leaked` counts them.

The row also keeps the offer, the $/h we pay, the bid (none: on-demand) and why the instance
ended (``outbid``, ``stopped``, ...); the outbids of a job decide when it falls back to
on-demand. Every write is its own short transaction; closing a closed row is quiet.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.state import launch_home, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vast_instances (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    label TEXT NOT NULL,
    instance_id INTEGER,
    offer_id INTEGER,
    offer TEXT NOT NULL DEFAULT '{}',
    price_per_hour REAL NOT NULL DEFAULT 0,
    bid REAL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    destroyed REAL
)
"""
CREATING, CREATED, DESTROYED, NOT_CREATED = "creating", "created", "destroyed", "not created"
OUTBID = "outbid"


@dataclass
class Entry:
    id: int
    job_id: str
    attempt: int
    label: str
    instance_id: int | None
    offer_id: int | None
    offer: dict[str, Any] = field(default_factory=dict)
    price_per_hour: float = 0.0
    bid: float | None = None
    state: str = CREATING
    reason: str = ""
    created: float = 0.0
    destroyed: float | None = None

    @property
    def open(self) -> bool:
        return self.destroyed is None


class Ledger:
    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else launch_home() / "state.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._tx() as c:
            c.execute(_SCHEMA)

    def _tx(self):
        return transaction(self.path)

    def creating(self, job_id: str, attempt: int, label: str, offer: dict[str, Any],
                 price_per_hour: float, bid: float | None) -> int:
        """Record a create call about to be made; returns the row id."""
        with self._tx() as c:
            cur = c.execute("INSERT INTO vast_instances (job_id, attempt, label, offer_id, offer,"
                            " price_per_hour, bid, state, created) VALUES (?,?,?,?,?,?,?,?,?)",
                            (job_id, attempt, label, offer.get("id"), json.dumps(offer), price_per_hour,
                             bid, CREATING, time.time()))
            return int(cur.lastrowid)

    def created(self, row: int, instance_id: int) -> None:
        with self._tx() as c:
            c.execute("UPDATE vast_instances SET instance_id = ?, state = ? WHERE id = ?",
                      (int(instance_id), CREATED, row))

    def note(self, row: int, reason: str) -> None:
        """Why the instance ended (``outbid``, ...); the first reason recorded stays."""
        with self._tx() as c:
            c.execute("UPDATE vast_instances SET reason = ? WHERE id = ? AND reason = ''", (reason, row))

    def close(self, row: int, reason: str = "", *, made: bool = True) -> None:
        """The instance is destroyed (``made``) or was never made; quiet when already closed."""
        with self._tx() as c:
            c.execute("UPDATE vast_instances SET destroyed = ?, state = ?,"
                      " reason = CASE WHEN reason = '' THEN ? ELSE reason END"
                      " WHERE id = ? AND destroyed IS NULL",
                      (time.time(), DESTROYED if made else NOT_CREATED, reason, row))

    def entry(self, row: int) -> Entry | None:
        with self._tx() as c:
            r = c.execute("SELECT * FROM vast_instances WHERE id = ?", (row,)).fetchone()
        return _entry(r) if r else None

    def entries(self, job_id: str | None = None, *, open_only: bool = False) -> list[Entry]:
        sql, args = "SELECT * FROM vast_instances WHERE 1=1", []
        if job_id is not None:
            sql += " AND job_id = ?"
            args.append(job_id)
        if open_only:
            sql += " AND destroyed IS NULL"
        with self._tx() as c:
            rows = c.execute(sql + " ORDER BY id", args).fetchall()
        return [_entry(r) for r in rows]

    def outbids(self, job_id: str) -> int:
        with self._tx() as c:
            return c.execute("SELECT COUNT(*) FROM vast_instances WHERE job_id = ? AND reason = ?",
                             (job_id, OUTBID)).fetchone()[0]

    def machines(self, job_id: str, reason_prefix: str) -> set[int]:
        """The machine ids of the job's instances that ended with a reason starting so (e.g.
        the boxes that did not boot for it)."""
        return {int(e.offer["machine_id"]) for e in self.entries(job_id)
                if e.reason.startswith(reason_prefix) and e.offer.get("machine_id") is not None}

    def leaked(self, job_id: str | None = None) -> list[Entry]:
        """Rows whose instance may still exist (not closed)."""
        return self.entries(job_id, open_only=True)


def _entry(row: sqlite3.Row) -> Entry:
    d = dict(row)
    d["offer"] = json.loads(d["offer"] or "{}")
    return Entry(**d)
