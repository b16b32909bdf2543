"""The harness every bundled trainer shares: exact resume, async checkpoints, stop notices,
metrics and progress. A user's own script can use it the same way (see ``harness.py``)."""

from trainers.common import distributed
from trainers.common.checkpoint import (CheckpointError, CheckpointWriter, find_resume, load_state,
                                        prune, write_checkpoint)
from trainers.common.cli import add_harness_args, run_main
from trainers.common.determinism import enable_determinism, seed_everything
from trainers.common.errors import HarnessError, Preempted, ResumeRefused
from trainers.common.harness import Harness
from trainers.common.metrics import MetricsLog, read_jsonl
from trainers.common.notices import StopNotice
from trainers.common.sampler import ResumableSampler
from trainers.common.state import capture_rng, restore_rng, to_host

__all__ = [
    "CheckpointError", "CheckpointWriter", "Harness", "HarnessError", "MetricsLog", "Preempted",
    "ResumableSampler", "ResumeRefused", "StopNotice", "add_harness_args", "capture_rng",
    "distributed", "enable_determinism", "find_resume", "load_state", "prune", "read_jsonl", "restore_rng",
    "run_main", "seed_everything", "to_host", "write_checkpoint",
]
