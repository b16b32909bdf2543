"""The launcher's exception tree, caught once in ``launcher.cli.main``.

A ``LaunchError`` is a user-facing problem: the CLI prints its message on one line and exits 1.
Anything else is a bug and shows a traceback only with ``--debug``.
"""


class LaunchError(Exception):
    """Base of every error the CLI reports as a one-line message (exit 1)."""


class TaskError(LaunchError):
    """The task YAML or a command-line override is invalid."""


class StateError(LaunchError):
    """The job or attempt asked for does not exist, or the state database is unusable."""


class InfraError(LaunchError):
    """The requested infrastructure is unknown, not configured, or its SDK is missing."""
