"""The command-line side of the trainer contract: the shared flags and the exit codes.

Every trainer takes the same checkpoint/output flags, so a task YAML can switch trainers without
learning new names, and ``run_main`` is the one place where exceptions become exit codes: 0 done,
75 (``EXIT_PREEMPTED``) stopped with state saved, 2 refused to resume, 1 any other user error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from launcher import contract
from trainers.common.errors import HarnessError, Preempted


def add_harness_args(parser: argparse.ArgumentParser, *, ckpt_every: int,
                     log_every: int = 10) -> None:
    """Add the flags that ``Harness.from_args`` reads. Flags win over the launcher's environment."""
    g = parser.add_argument_group("checkpoints, outputs and resume (the trainer contract)")
    g.add_argument("--checkpoint-dir", metavar="DIR",
                   help=f"folder of step-* checkpoints (default: ${contract.ENV_CHECKPOINT_DIR}, "
                        f"else a file:// ${contract.ENV_CHECKPOINT_URI}, else ./checkpoints)")
    g.add_argument("--output-dir", metavar="DIR",
                   help=f"folder for metrics.jsonl, history.csv, results.json and the dashboard "
                        f"(default: ${contract.ENV_OUTPUT_DIR}, else ./outputs)")
    g.add_argument("--ckpt-every", type=int, default=ckpt_every, metavar="STEPS",
                   help="steps between periodic checkpoints; every epoch end saves one too; "
                        "0 = only at epoch ends (default: %(default)s)")
    g.add_argument("--log-every", type=int, default=log_every, metavar="STEPS",
                   help="steps between metrics.jsonl lines and plain progress lines "
                        "(default: %(default)s)")
    g.add_argument("--keep-last", type=int, default=2, metavar="N",
                   help="committed checkpoints kept on the local disk, the best one besides "
                        "(default: %(default)s)")
    g.add_argument("--force-resume", action="store_true",
                   help=f"resume even if the checkpoint was written under another config "
                        f"(same as {contract.ENV_FORCE_RESUME}=1)")
    g.add_argument("--no-plot", action="store_true", help="do not draw the dashboard PNG")
    g.add_argument("--step-sleep", type=float, default=0.0, metavar="SECONDS",
                   help="sleep after every step, to slow a demo down enough to inject a "
                        "preemption mid-epoch; results are unchanged (default: %(default)s)")


def run_main(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None,
             name: str = "trainer") -> int:
    """Run ``main(argv)`` and return the process exit code (see the module docstring)."""
    try:
        main(argv)
    except Preempted as p:
        print(f"[{name}] {p}: state saved, exiting {contract.EXIT_PREEMPTED} to be resumed",
              file=sys.stderr, flush=True)
        return contract.EXIT_PREEMPTED
    except HarnessError as e:
        print(f"{name}: error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    return 0
