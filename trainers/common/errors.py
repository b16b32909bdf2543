"""The harness's exceptions, caught once in ``cli.run_main`` and turned into exit codes."""

from __future__ import annotations

from launcher.contract import EXIT_PREEMPTED


class HarnessError(Exception):
    """A problem the user must fix; the message is one line, the exit code says which kind."""

    exit_code = 1


class ResumeRefused(HarnessError):
    """The latest checkpoint was written under another configuration (fingerprint mismatch).
    Exit code 2: a usage error, which the launcher does not retry as it would a crash."""

    exit_code = 2


class Preempted(Exception):
    """Raised after the emergency checkpoint is committed: the run stopped on a preemption
    notice or its deadline and wants to be relaunched (exit code ``EXIT_PREEMPTED``)."""

    exit_code = EXIT_PREEMPTED

    def __init__(self, reason: str, step: int):
        super().__init__(f"stopped at step {step} ({reason})")
        self.reason = reason
        self.step = step
