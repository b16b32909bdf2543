"""The run's outputs: ``metrics.jsonl`` as it goes, ``history.csv`` per epoch, a results JSON.

``metrics.jsonl`` is append-only while a run goes, and the launcher uploads it as it grows. An
attempt killed after its last checkpoint has logged steps that the next attempt will log again;
so a resume first cuts the file back to what the checkpoint had seen, and the final file reads as
if the run had never stopped.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step (readers see the old or the new file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON object line of ``path``; a torn last line (a kill mid-write) is
    dropped. A missing file reads as empty."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


class MetricsLog:
    """Appends one JSON object per line; each line carries ``seq``, its 1-based sequence number.

    ``seq`` lets a resume cut exactly at the checkpoint, even between two lines that share a step
    (the last training step of an epoch and that epoch's evaluation).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.seq = 0
        self._file = None

    def truncate(self, step: int, seq: int) -> int:
        """Keep the lines with ``step <= step`` and ``seq <= seq`` (what the checkpoint had
        seen); returns how many lines were dropped. A fresh start passes ``0, 0``."""
        self.close()
        records = read_jsonl(self.path)
        kept = [r for r in records if r.get("step", 0) <= step and r.get("seq", 0) <= seq]
        if self.path.exists():  # rewritten even when nothing is dropped: a torn last line goes
            write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        # Numbering goes on from the checkpoint's, as in a run that never stopped (even when
        # the file came down from the store shorter than what the checkpoint had seen).
        self.seq = seq
        return len(records) - len(kept)

    def log(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a")
        self.seq += 1
        self._file.write(json.dumps({"seq": self.seq, **record}) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def history_csv(rows: Iterable[dict[str, Any]]) -> str:
    """One row per epoch; the columns are every key in order of first appearance."""
    rows = list(rows)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_history(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_atomic(path, history_csv(rows))


def write_results(path: Path, results: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(results, indent=1, sort_keys=True, default=str) + "\n")
