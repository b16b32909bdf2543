"""Fire drills: ``--chaos term@20s,kill@45s`` or ``--chaos term@30%,kill@60%``.

Each drill fires once, in order, when the job has been *running* (summed over its attempts, not
counting provisioning or recovery) for the given time, or, with ``%``, when its progress (the last
``step``/``total_steps`` of its metrics in the store) reaches that share: a drill that lands at the
same point of the training on a fast machine and on a slow one. ``term`` is a preemption notice: the run
gets SIGTERM, saves and exits with the preemption code. ``kill`` is a machine that vanishes with no
notice: everything of the attempt is SIGKILLed and the next attempt resumes from the last
checkpoint that reached the store. Try your resume before you pay for a GPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from launcher.errors import TaskError

KINDS = ("term", "kill")
_ITEM = re.compile(r"^(term|kill)@(\d+(?:\.\d+)?)(ms|s|m|h|%)?$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


@dataclass(frozen=True)
class Drill:
    kind: str
    at: float  # seconds of running time, or with ``progress`` a fraction done (0..1)
    progress: bool = False

    def __str__(self) -> str:
        return f"{self.kind}@{self.at * 100:g}%" if self.progress else f"{self.kind}@{self.at:g}s"


def parse_chaos(spec: str | None) -> list[Drill]:
    """``"term@20s,kill@45s"`` -> drills sorted by time. Raises TaskError naming the bad item."""
    if not spec:
        return []
    drills = []
    for item in (x.strip() for x in spec.split(",")):
        m = _ITEM.match(item)
        if not m:
            raise TaskError(f"--chaos: bad drill {item!r}; expected KIND@TIME with KIND in "
                            f"{'/'.join(KINDS)} and TIME like 20s, 1.5m or 500ms (e.g. term@20s,kill@45s)")
        if m.group(3) == "%":
            if not 0 < float(m.group(2)) < 100:
                raise TaskError(f"--chaos: bad drill {item!r}; a share of the training is between 0% and 100%")
            drills.append(Drill(m.group(1), float(m.group(2)) / 100.0, progress=True))
        else:
            drills.append(Drill(m.group(1), float(m.group(2)) * _UNIT[m.group(3)]))
    if len({d.progress for d in drills}) > 1:
        raise TaskError(f"--chaos {spec!r}: use times (20s) or shares of the training (30%), not both")
    return sorted(drills, key=lambda d: d.at)


def format_chaos(drills: list[Drill]) -> str:
    return ",".join(str(d) for d in drills)
