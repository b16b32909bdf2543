"""Fire drills: ``--chaos term@20s,kill@45s`` or ``--chaos term@30%,kill@60%:save``.

Each drill fires once, in order. ``term`` is a preemption notice: the run gets SIGTERM, saves and
exits with the preemption code. ``kill`` is a machine that vanishes with no notice: everything of
the attempt is SIGKILLed and the next attempt resumes from the last checkpoint that reached the
store. The relaunch after a drill never backs off (``launcher.recovery``): the drill, not the
provider, ended the attempt. Try your resume before you pay for a GPU.

When a drill fires:

- ``term@20s``: once the job has been *running* (summed over its attempts, not counting
  provisioning or recovery) for that long; the supervisor delivers it through the backend.
- ``kill@60%``: inside the training, one per attempt, once it has reached that share of its
  steps (``step`` / ``total_steps`` of the trainer's metrics), and only after the attempt has
  resumed and logged a step of its own: a drill whose share was passed before the attempt started waits for that first
  step instead of landing on the start-up. Never on a job that is done: where the agent runs the
  attempt, it watches the metrics on the machine (no upload lag), freezes the run, checks that the
  final checkpoint is not written yet, and only then fires.
- ``kill@60%:save`` / ``kill@60%:upload`` (``kill@save`` = at the first one): the same, then in
  the middle of the next checkpoint save (files written, manifest not yet) or upload (files in
  the store, manifest not yet), through the pause points of ``launcher.contract.hook_point``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.errors import TaskError
from launcher.progress import fraction_done

KINDS = ("term", "kill")
PHASES = ("save", "upload")  # the pause points a drill can aim at (contract.HOOK_PHASES)
_WHEN = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|%)?$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_USAGE = ("expected KIND@TIME, KIND@SHARE% or KIND@SHARE%:PHASE with KIND in term/kill, TIME like "
          "20s, 1.5m or 500ms and PHASE save/upload (e.g. term@20s,kill@45s or kill@40%:save)")


@dataclass(frozen=True)
class Drill:
    kind: str
    at: float  # seconds of running time, or with ``progress`` a fraction done (0..1)
    progress: bool = False
    phase: str = ""  # with ``progress``: "" (at a step) or a pause point of PHASES

    def __str__(self) -> str:
        if not self.progress:
            return f"{self.kind}@{self.at:g}s"
        if self.phase and self.at == 0:
            return f"{self.kind}@{self.phase}"
        return f"{self.kind}@{self.at * 100:g}%" + (f":{self.phase}" if self.phase else "")


def parse_drill(item: str) -> Drill:
    """One drill, as ``parse_chaos`` reads it. Raises TaskError naming the item."""
    kind, _, when = item.partition("@")
    when, colon, phase = when.partition(":")
    if when in PHASES and not colon:
        when, phase = "", when
    m = _WHEN.match(when)
    if kind not in KINDS or (phase and phase not in PHASES) or (not m and not (phase and not colon)):
        raise TaskError(f"--chaos: bad drill {item!r}; {_USAGE}")
    if not m:  # kill@save: the first save of an attempt that has taken a step
        return Drill(kind, 0.0, progress=True, phase=phase)
    if m.group(2) == "%":
        if not 0 < float(m.group(1)) < 100:
            raise TaskError(f"--chaos: bad drill {item!r}; a share of the training is between 0% and 100%")
        return Drill(kind, float(m.group(1)) / 100.0, progress=True, phase=phase)
    if phase:
        raise TaskError(f"--chaos: bad drill {item!r}; a phase goes with a share (kill@40%:{phase}), not a time")
    return Drill(kind, float(m.group(1)) * _UNIT[m.group(2)])


def parse_chaos(spec: str | None) -> list[Drill]:
    """``"term@20s,kill@45s"`` -> drills sorted by time (or share). Raises TaskError naming the
    bad item."""
    if not spec:
        return []
    drills = [parse_drill(x.strip()) for x in spec.split(",")]
    if len({d.progress for d in drills}) > 1:
        raise TaskError(f"--chaos {spec!r}: use times (20s) or shares of the training (30%), not both")
    return sorted(drills, key=lambda d: d.at)


def format_chaos(drills: list[Drill]) -> str:
    return ",".join(str(d) for d in drills)


# --- when a drill at a share is due (read on the machine by the agent, or from the store) --------
def last_metrics_line(path: str | os.PathLike) -> dict[str, Any] | None:
    """The last complete JSON line of a metrics.jsonl (reads only its tail); None if none."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().splitlines()
    except OSError:
        return None
    for raw in reversed(lines):
        try:
            rec = json.loads(raw)
        except ValueError:
            continue  # torn while being written, or cut by the tail
        if isinstance(rec, dict):
            return rec
    return None


def share_of(line: dict[str, Any] | None) -> float | None:
    """The share of the training a metrics line says is done (``launcher.progress``); None when
    it does not say."""
    return fraction_done(line) if line else None


def drill_due(drill: Drill, line: dict[str, Any] | None, attempt: int, own_step: bool) -> bool:
    """Whether a drill at a share is due, given the last metrics line. ``own_step``: the line was
    written by this attempt after it resumed (its ``attempt`` field equals ``attempt``; lines
    without one count when the caller knows they are new). A finished training is never due."""
    share = share_of(line)
    if share is None or share >= 1.0:
        return False
    mine = line.get("attempt") == attempt if "attempt" in line else own_step
    return mine and share >= drill.at


def training_done(line: dict[str, Any] | None, ckpt_root: str | os.PathLike | None = None) -> bool:
    """The training has finished: its last metrics line is at the last step, or its newest local
    checkpoint is the final one (``reason: final`` in the manifest)."""
    share = share_of(line)
    if share is not None and share >= 1.0:
        return True
    if ckpt_root is None:
        return False
    from launcher import contract

    for _, path in contract.local_checkpoints(Path(ckpt_root)):
        m = contract.read_manifest(path)
        if m is not None:
            return m.get("reason") == "final"
    return False
