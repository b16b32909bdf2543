"""Which Kaggle secrets are attached to which kernel, as far as launch has seen.

A Kaggle user secret can be read only by a notebook it was attached to in the web editor
(Add-ons > Secrets); no API call or metadata field attaches one, and a new kernel has none. So
launch keeps one kernel per task name and user (``<user>/launch-<task name>``, each attempt a new
version of it) and remembers here, per kernel, the secret names a session could read. Before it
pushes a GPU session of a kernel whose secrets it has not seen, it pushes a *check*: a CPU
version that only reads the names (seconds, no GPU quota). When the check fails, the user is told
once, with the kernel's URL, which secrets to attach; the job waits (no capacity) and checks
again every ``secrets_recheck`` seconds.

The record is ``<work dir>/kernels.json``: ``{kernel: {"attached": [names], "missing": [names],
"checked_at": t, "url": ..., "told": bool}}``. It holds names, never values.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class Attachments:
    def __init__(self, path: Path):
        self.path = path

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def _save(self, doc: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
        tmp.replace(self.path)  # atomic: two supervisors of one task may write

    def get(self, kernel: str) -> dict[str, Any]:
        return self._load().get(kernel, {})

    def covers(self, kernel: str, names: list[str]) -> bool:
        """Whether a session of ``kernel`` could read every one of ``names`` last time we looked."""
        return set(names) <= set(self.get(kernel).get("attached", []))

    def update(self, kernel: str, **fields: Any) -> dict[str, Any]:
        doc = self._load()
        rec = {**doc.get(kernel, {}), **fields}
        doc[kernel] = rec
        self._save(doc)
        return rec

    def passed(self, kernel: str, names: list[str], now: float) -> None:
        self.update(kernel, attached=sorted(set(names)), missing=[], checked_at=now, told=False)

    def failed(self, kernel: str, names: list[str], now: float, url: str) -> bool:
        """Record a failed check; True the first time (the user has not been told yet)."""
        first = not self.get(kernel).get("told")
        self.update(kernel, attached=[], missing=sorted(set(names)), checked_at=now, url=url, told=True)
        return first

    def forget(self, kernel: str) -> None:
        """The kernel was deleted: its attachments went with it."""
        doc = self._load()
        if doc.pop(kernel, None) is not None:
            self._save(doc)

    def waiting(self, kernel: str, now: float, recheck: float) -> str | None:
        """The wait message while a failed check is fresher than ``recheck`` seconds, else None."""
        rec = self.get(kernel)
        if not rec.get("missing") or now - float(rec.get("checked_at", 0)) >= recheck:
            return None
        when = time.strftime("%H:%M UTC", time.gmtime(float(rec["checked_at"]) + recheck))
        return (f"waiting for Kaggle secrets {', '.join(rec['missing'])} to be attached to the kernel "
                f"{rec.get('url') or kernel} (Add-ons > Secrets); launch looks again at {when}")


def instructions(kernel: str, url: str, names: list[str]) -> str:
    """What the user must do once, in one line (the first time a check fails)."""
    return (f"the Kaggle kernel {kernel} cannot read the secrets {', '.join(names)}: open {url}, "
            "Edit > Add-ons > Secrets, add each with the value it has where you run launch, tick "
            "'attach' for this notebook (once: later versions keep them), or set "
            "LAUNCH_KAGGLE_CREDENTIALS=temporary; launch checks again on its own, without a GPU session")
