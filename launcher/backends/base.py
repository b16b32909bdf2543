"""The one interface every provider implements.

A backend puts one *attempt* of a job on one machine (or one set of machines): it rents or leases
the machine, makes it ready, copies the code, starts the run detached, and answers polls about it.
The supervisor (``launcher.supervisor``) drives a backend through these calls in order::

    handle = provision(request)      # returns quickly; the handle is persisted at once
    wait_reachable(handle, timeout)
    bootstrap(handle)
    sync_workdir(handle, workdir)
    start_run(handle, spec)
    poll(handle) ...                 # until not RUNNING
    terminate(handle)                # always, also after success

Every handle is a JSON-able dict so that a restarted supervisor can pick an attempt up from the
state database and keep polling it. Every method may be called by a supervisor that did not make
the handle.

On the machine, the run is always wrapped by ``python -m launcher.agent SPEC`` (see
``launcher.agent``): the agent syncs checkpoints down before ``run`` and up as they are committed,
uploads the log and metrics as they grow, forwards a preemption notice (SIGTERM) to the run, and
records the exit code in ``<attempt dir>/exit_code``.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from launcher.errors import LaunchError


class BackendError(LaunchError):
    """A provider call failed in a way that is neither a preemption nor a user error."""


class NoCapacityError(BackendError):
    """No machine matching the request can be had right now (no offer, no free host, quota).
    The supervisor backs off and tries again, or fails over to the next ``any_of`` option."""


class HostLostError(BackendError):
    """The machine went away (unreachable past the grace period, destroyed, outbid). Counts as a
    preemption: the supervisor relaunches."""


class CredentialsError(BackendError):
    """The provider refused our credentials (a wrong, expired or revoked key): no retry can help,
    so the job fails at once with this message instead of waiting for capacity."""


class MissingDependencyError(BackendError):
    """An optional SDK is not installed; the message carries the install hint."""


class RunState(str, enum.Enum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"  # non-zero exit other than the preemption code: a user error
    PREEMPTED = "PREEMPTED"  # preemption notice, preemption exit code, host lost, outbid, timeout


@dataclass(frozen=True)
class RunStatus:
    state: RunState
    exit_code: int | None = None
    reason: str = ""
    # The provider already applied the job's own recovery policy to this attempt (a SkyPilot managed
    # job ends FAILED only after its ``max_restarts_on_errors``): our policy must not retry on top.
    final: bool = False
    # While the run goes: what the agent says of a store it cannot reach ('' when it can).
    store: str = ""

    @property
    def done(self) -> bool:
        return self.state is not RunState.RUNNING


@dataclass
class ProvisionRequest:
    """What the supervisor asks a backend for: one attempt of one job."""

    job_id: str  # the stable run id (also LAUNCH_JOB_ID)
    attempt: int
    infra: str  # e.g. "local", "ssh/mypool", "vast", "kaggle", "aws"
    resources: dict[str, Any] = field(default_factory=dict)  # one resolved resources option
    num_nodes: int = 1


@dataclass
class RunSpec:
    """Everything the agent on the machine needs to run one attempt. Serialised to JSON and
    copied to the machine; secrets travel separately (see ``secrets``)."""

    job_id: str
    attempt: int
    run: str
    setup: str | None = None
    workdir: str | None = None  # where the code is on the machine (set by the backend)
    envs: dict[str, str] = field(default_factory=dict)
    # Secret values (task secrets, store credentials). Never written into the spec file: a backend
    # writes them to an env file with mode 0600 next to it and passes its path to the agent.
    secrets: dict[str, str] = field(default_factory=dict)
    store_uri: str = ""  # the job's prefix in the object store
    keep_last: int = 3  # checkpoint retention in the store (the best is kept too)
    deadline: float | None = None  # unix time by which the run must checkpoint and stop
    sync_interval: float = 5.0  # seconds between log/metrics uploads
    stop_grace: float = 300.0  # after the notice, how long the run may take to checkpoint and exit
    drill: str = ""  # a fire drill at a share of the training for the agent to fire (launcher.chaos)
    accelerators: Any = None  # the option's accelerators, checked on the machine before the run
    sample_interval: float = 10.0  # seconds between machine samples (gpu.jsonl)

    def public_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("secrets")
        return d


@dataclass(frozen=True)
class Quote:
    """What one resources option would cost here now, and whether it can be had: for
    ``launch plan`` and the cheapest-first order of ``any_of`` options."""

    price_per_hour: float | None  # expected $/h of one node; None when unknown
    usable: bool = True
    why: str = ""


@dataclass
class SyncStats:
    files_sent: int = 0
    bytes_sent: int = 0
    files_skipped: int = 0


class Backend(ABC):
    """A provider. Implementations live in ``launcher/backends/<name>/backend.py``."""

    name: str = "base"
    # The agent on this backend's machines fires drills at a share of the training itself
    # (``RunSpec.drill``), reading the progress where it is written; otherwise the supervisor
    # fires them through ``signal`` from the metrics in the store (a few seconds behind).
    agent_drills: bool = False

    # The agent checks on the machine, before the run, that it has the task's accelerators
    # (``launcher.watch.preflight``); a machine without them ends the attempt as a setup failure.
    preflight_accelerators: bool = True

    @abstractmethod
    def provision(self, req: ProvisionRequest) -> dict[str, Any]:
        """Rent, lease or pick a machine and return its handle quickly; reachability is awaited
        separately. Raises NoCapacityError when none can be had. A half-created machine is
        released before the error is raised."""

    def wait_reachable(self, handle: dict[str, Any], timeout: float) -> None:
        """Block until the machine answers (SSH up, instance running). Raises HostLostError if
        it does not within ``timeout`` seconds."""

    def bootstrap(self, handle: dict[str, Any]) -> None:
        """Make the machine able to run the agent and the trainers (venv, pinned packages).
        Idempotent: a machine already bootstrapped with the same script is skipped quickly."""

    def sync_workdir(self, handle: dict[str, Any], workdir: str | None) -> SyncStats:
        """Copy the task's workdir to the machine, skipping files that are unchanged there and
        those ignored by ``.gitignore``/``.skyignore``."""
        return SyncStats()

    @abstractmethod
    def start_run(self, handle: dict[str, Any], spec: RunSpec) -> None:
        """Start ``python -m launcher.agent`` detached from our connection and return at once.
        The handle may be updated in place (pids, paths); the supervisor persists it after."""

    @abstractmethod
    def poll(self, handle: dict[str, Any]) -> RunStatus:
        """The run's state now. A machine that is gone or unreachable past the grace period is
        PREEMPTED with a reason; it never raises for that."""

    @abstractmethod
    def stream_logs(self, handle: dict[str, Any], follow: bool = False) -> Iterator[str]:
        """The attempt's log lines from the machine; with ``follow`` keep yielding until the run
        ends. Raises HostLostError when the machine is gone (the caller then reads the store)."""

    @abstractmethod
    def signal(self, handle: dict[str, Any], kind: str) -> None:
        """Fire drill: ``"term"`` delivers a preemption notice (SIGTERM) to the run, ``"kill"``
        makes the machine vanish without notice (SIGKILL to everything of the attempt)."""

    @abstractmethod
    def terminate(self, handle: dict[str, Any]) -> None:
        """Stop everything of the attempt and release the machine. A machine that is already
        gone counts as success; always safe to call twice."""

    def quote(self, resources: dict[str, Any], num_nodes: int = 1) -> Quote:
        """Expected $/h of one node for ``resources`` now and whether one can be had, without
        renting anything. By default: machines we do not pay for by the hour."""
        return Quote(0.0, True, "no hourly price")

    def set_aside(self, handle: dict[str, Any], reason: str) -> None:
        """The machine failed its preflight (``reason``): keep it out of the next provisions for
        a while. Called before ``terminate``; a rented machine is destroyed by that anyway, so the
        default does nothing."""

    def cost_per_hour(self, handle: dict[str, Any]) -> float:
        """$/h of the machine behind the handle (0 for machines we do not pay for by the hour)."""
        return float(handle.get("price_per_hour", 0.0) or 0.0)
