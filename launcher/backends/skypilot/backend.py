"""Any infra that is not ours (``aws``, ``gcp/us-east1``, ``k8s``, ``slurm/<cluster>``, ...) runs
through SkyPilot.

One of our attempts is one SkyPilot launch:

* a task with ``use_spot`` becomes a **managed job**: SkyPilot's jobs controller launches it,
  watches it and, after a preemption, relaunches it (elsewhere if need be) on its own; the trainer
  resumes from the mounted store. We rely on that recovery rather than re-implement it: our
  supervisor sees RUNNING (with SkyPilot's recovery count in the handle) until SkyPilot gives up.
  Example: "spot VM in us-east-1 preempted -> SkyPilot: RECOVERING -> RUNNING in us-east-2,
  resumed at step 4100" is one attempt of ours, ``recovery_count`` 1.
* an on-demand task becomes a **cluster** (``sky.launch`` with autostop and ``down``); a cluster
  lost under a running job is PREEMPTED and our supervisor relaunches.

``provision`` only names the attempt (no cloud call); ``start_run`` submits the launch and returns
with its request id; ``poll`` follows the request, then the job. Every handle is JSON-able:
``{request_id, managed, cluster | name, job_id, recovery_count, ...}``. See ``mapping`` for the
task and the environment, ``client`` for the SDK calls.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator
from typing import Any

from launcher import contract
from launcher.backends.base import (Backend, BackendError, HostLostError, ProvisionRequest, Quote,
                                    RunSpec, RunState, RunStatus, SyncStats)
from launcher.backends.skypilot import mapping
from launcher.backends.skypilot.client import (REQUEST_DONE, ClusterGone, LaunchFailed,
                                               SkyPilotClient)
from launcher.task import Task

# The registry turns a missing SDK into a one-line install hint; check for it without paying for
# the import (about 2.5 s), which happens on the first SDK call.
if importlib.util.find_spec("sky") is None:
    raise ModuleNotFoundError("No module named 'sky'", name="sky")

AUTOSTOP_MINUTES = 10  # an on-demand cluster tears itself down after this long idle

# SkyPilot's managed-job status -> ours. Everything not terminal is RUNNING: SkyPilot is still
# working on it (its own recovery included).
MANAGED_STATES: dict[str, RunState] = {
    "PENDING": RunState.RUNNING, "SUBMITTED": RunState.RUNNING, "STARTING": RunState.RUNNING,
    "RUNNING": RunState.RUNNING, "RECOVERING": RunState.RUNNING, "CANCELLING": RunState.RUNNING,
    "WINDING_DOWN": RunState.RUNNING,
    "SUCCEEDED": RunState.SUCCEEDED,
    "FAILED": RunState.FAILED, "FAILED_SETUP": RunState.FAILED, "FAILED_PRECHECKS": RunState.FAILED,
    "CANCELLED": RunState.FAILED,  # cancelled outside launch (`sky jobs cancel`)
    # SkyPilot gave up on infrastructure, not on the program: ours backs off and relaunches.
    "FAILED_NO_RESOURCE": RunState.PREEMPTED, "FAILED_CONTROLLER": RunState.PREEMPTED,
}
# A job's status on a cluster (sky.JobStatus) -> ours.
CLUSTER_JOB_STATES: dict[str, RunState] = {
    "INIT": RunState.RUNNING, "PENDING": RunState.RUNNING, "SETTING_UP": RunState.RUNNING,
    "RUNNING": RunState.RUNNING,
    "SUCCEEDED": RunState.SUCCEEDED,
    "FAILED": RunState.FAILED, "FAILED_SETUP": RunState.FAILED, "FAILED_DRIVER": RunState.FAILED,
    "CANCELLED": RunState.FAILED,
}


def task_from_state(run_id: str) -> Task | None:
    """The job's task as submitted (its whole ``resources`` block and ``file_mounts``), read from
    the launcher's state; None when the job is not there (a handle made elsewhere)."""
    from launcher import state as st
    from launcher.errors import LaunchError
    from launcher.task import parse_task

    try:
        job = st.State().job(run_id)
        task = parse_task(job.task_yaml, where=job.task_path or job.name)
    except LaunchError:
        return None
    task.path = job.task_path
    return task


class SkyPilotBackend(Backend):
    name = "skypilot"

    def __init__(self, infra: str = "skypilot", client: SkyPilotClient | None = None,
                 task_for: Callable[[str], Task | None] = task_from_state,
                 sleep: Callable[[float], None] = time.sleep, poll_interval: float = 5.0):
        self.infra = infra
        self.client = client or SkyPilotClient()
        self.task_for = task_for
        self.sleep = sleep
        self.poll_interval = poll_interval

    # --- starting ------------------------------------------------------------------------------
    def provision(self, req: ProvisionRequest) -> dict[str, Any]:
        """Names the attempt; SkyPilot rents the machine inside the launch (``start_run``)."""
        name = mapping.sky_name(req.job_id, f"a{req.attempt}")
        return {"backend": self.name, "infra": req.infra, "host": req.infra, "resources": req.resources,
                "num_nodes": req.num_nodes, "cluster": name, "name": name}

    def sync_workdir(self, handle: dict[str, Any], workdir: str | None) -> SyncStats:
        """Recorded only: SkyPilot uploads the workdir as part of the launch."""
        handle["workdir"] = workdir
        return SyncStats()

    def start_run(self, handle: dict[str, Any], spec: RunSpec) -> None:
        """Submit the launch and return with its request id (the launch itself takes minutes)."""
        task = self.task_for(spec.job_id)
        p = mapping.for_attempt(task, spec, option=handle.get("resources") or {}, infra=handle["infra"],
                         num_nodes=int(handle.get("num_nodes") or 1), workdir=handle.get("workdir"),
                         name=mapping.sky_name(task.display_name if task else spec.job_id))
        if p.managed:
            request_id = self.client.launch_managed(p.config, name=handle["name"])
        else:
            request_id = self.client.launch_cluster(p.config, handle["cluster"], AUTOSTOP_MINUTES)
        handle.update(request_id=request_id, managed=p.managed, attempt=spec.attempt,
                      store_uri=spec.store_uri, recovery_count=0)

    # --- watching ------------------------------------------------------------------------------
    def poll(self, handle: dict[str, Any]) -> RunStatus:
        launching = self._launching(handle)
        if launching is not None:
            return launching
        if handle.get("managed"):
            return self._poll_managed(handle)
        return self._poll_cluster(handle)

    def _launching(self, handle: dict[str, Any]) -> RunStatus | None:
        """While the launch request runs: RUNNING. Once done, its job id goes into the handle
        (None returned); a failed launch is the attempt's end."""
        if handle.get("job_id") is not None:
            return None
        if not handle.get("request_id"):
            return RunStatus(RunState.FAILED, reason="never launched")
        status = self.client.request_status(handle["request_id"])
        if status not in REQUEST_DONE and status != "UNKNOWN":
            return RunStatus(RunState.RUNNING, reason=f"SkyPilot is launching ({status.lower()})")
        try:
            handle["job_id"] = self.client.launch_result(handle["request_id"])
        except LaunchFailed as e:
            if e.no_capacity:
                return RunStatus(RunState.PREEMPTED, reason=f"no capacity: {e}")
            return RunStatus(RunState.FAILED, reason=f"SkyPilot launch failed: {e}")
        if handle["job_id"] is None:
            return RunStatus(RunState.FAILED, reason="SkyPilot launched no job")
        return None

    def _poll_managed(self, handle: dict[str, Any]) -> RunStatus:
        job = self.client.managed_job(int(handle["job_id"]))
        if job is None:
            return RunStatus(RunState.FAILED, reason=f"managed job {handle['job_id']} is unknown to SkyPilot")
        handle["recovery_count"] = job.recovery_count
        if job.cluster:
            handle["host"] = handle["current_cluster"] = job.cluster
        if job.cloud and handle.get("priced_at") != [job.cloud, job.region]:
            self._price(handle, job.cloud, job.region)
        state = MANAGED_STATES.get(job.status, RunState.RUNNING)
        recoveries = f", {job.recovery_count} SkyPilot recoveries" if job.recovery_count else ""
        reason = f"managed job {job.job_id} {job.status}{recoveries}"
        if job.failure_reason and state is not RunState.RUNNING:
            reason += f": {job.failure_reason}"
        # SkyPilot's jobs controller applied ``job_recovery`` (restarts on errors included) before
        # it reported FAILED or CANCELLED: a retry of ours would multiply the user's budget.
        return RunStatus(state, job.exit_code if state is RunState.FAILED else
                         (0 if state is RunState.SUCCEEDED else None), reason,
                         final=state is RunState.FAILED)

    def _poll_cluster(self, handle: dict[str, Any]) -> RunStatus:
        cluster, job_id = handle["cluster"], handle["job_id"]
        try:
            status = self.client.cluster_job_status(cluster, int(job_id))
        except ClusterGone as e:
            if self._store_has(handle, contract.DONE_NAME):
                return RunStatus(RunState.SUCCEEDED, 0, "run exited 0 (cluster since torn down)")
            return RunStatus(RunState.PREEMPTED, reason=f"cluster {cluster} lost: {e}")
        if "priced_at" not in handle:
            where = self.client.cluster_location(cluster)
            if where:
                self._price(handle, *where)
        if status is None:
            return RunStatus(RunState.RUNNING, reason=f"job {job_id} not yet on {cluster}")
        state = CLUSTER_JOB_STATES.get(status, RunState.RUNNING)
        if state is RunState.SUCCEEDED:
            return RunStatus(state, 0, f"job {job_id} on {cluster} SUCCEEDED")
        if state is RunState.FAILED:
            code = self._exit_code(handle)
            if code == contract.EXIT_PREEMPTED:
                return RunStatus(RunState.PREEMPTED, code, "preemption notice: the run saved and stopped")
            return RunStatus(state, code, f"job {job_id} on {cluster} {status}"
                             + (f", exit code {code}" if code is not None else ""))
        return RunStatus(state, reason=f"job {job_id} on {cluster} {status}")

    def quote(self, resources: dict[str, Any], num_nodes: int = 1) -> Quote:
        """SkyPilot's catalog price for the option's cloud (and region) in its infra; unknown
        when the infra names no cloud or the catalog has no price."""
        from launcher.backends.skypilot.catalog import hourly_price

        parts = (resources.get("infra") or self.infra or "").split("/")
        cloud, region = parts[0], (parts[1] if len(parts) > 1 else None)
        if cloud in ("", "*", "skypilot", "sky"):
            return Quote(None, True, "SkyPilot picks the cloud: price unknown until it does")
        price = hourly_price(resources, cloud, region, spot=bool(resources.get("use_spot")))
        return Quote(price, True, "SkyPilot's catalog" if price is not None else "no catalog price")

    def _price(self, handle: dict[str, Any], cloud: str, region: str) -> None:
        """$/h of the attempt (all nodes) from SkyPilot's catalog, for where it was placed; a
        managed job is re-priced after each recovery that moves it. Unknown prices stay 0."""
        from launcher.backends.skypilot.catalog import hourly_price

        option = handle.get("resources") or {}
        price = hourly_price(option, cloud, region, spot=bool(option.get("use_spot")))
        handle["priced_at"] = [cloud, region]
        handle["price_per_hour"] = round((price or 0.0) * int(handle.get("num_nodes") or 1), 4)

    def _store_has(self, handle: dict[str, Any], name: str) -> bool:
        return self._store_bytes(handle, name) is not None

    def _store_bytes(self, handle: dict[str, Any], name: str) -> bytes | None:
        """A small file under the job's prefix, or None (no store, not there, unreachable)."""
        if not handle.get("store_uri"):
            return None
        try:
            from launcher.store import open_store

            return open_store(handle["store_uri"]).get_bytes(name)
        except Exception:
            return None

    def _exit_code(self, handle: dict[str, Any]) -> int | None:
        """The exit code the run wrapper wrote next to the attempt's log, when it reached the store."""
        name = f"{contract.LOGS_PREFIX}attempt-{handle.get('attempt')}{mapping.EXIT_CODE_SUFFIX}"
        data = self._store_bytes(handle, name)
        try:
            return int(data.decode().strip()) if data else None
        except ValueError:
            return None

    def stream_logs(self, handle: dict[str, Any], follow: bool = False) -> Iterator[str]:
        """SkyPilot's log of the job (a managed job's log outlives its clusters). While the
        launch is still going: a note, or with ``follow`` a wait for it."""
        while handle.get("job_id") is None:
            status = self._launching(handle)
            if status is None:
                break
            if status.done:
                raise HostLostError(f"the launch ended without a job: {status.reason}")
            if not follow:
                yield f"[launch] {status.reason}; the log starts once the job runs"
                return
            self.sleep(self.poll_interval)
        if handle.get("managed"):
            yield from self.client.managed_logs(int(handle["job_id"]), follow)
        else:
            yield from self.client.cluster_logs(handle["cluster"], int(handle["job_id"]), follow)

    # --- fire drills and teardown --------------------------------------------------------------
    def signal(self, handle: dict[str, Any], kind: str) -> None:
        """``kill``: the machine vanishes (its cluster is torn down under the run; a managed job
        is then recovered by SkyPilot, a cluster job ends PREEMPTED). ``term`` is not offered:
        SkyPilot has no call that delivers a signal to a run."""
        if kind == "kill":
            self.poll(handle)  # learn the job id and the managed job's current cluster
            cluster = handle.get("current_cluster") if handle.get("managed") else handle["cluster"]
            if cluster:
                self.client.down(cluster)
        elif kind == "term":
            raise BackendError("fire drill 'term' is not available on SkyPilot; use 'kill'")
        else:
            raise ValueError(f"unknown fire drill {kind!r}")

    def terminate(self, handle: dict[str, Any]) -> None:
        """Cancel the launch if it is still going, then cancel the managed job (SkyPilot tears
        its cluster down) or tear the cluster down. Gone counts as done; safe to call twice."""
        if handle.get("terminated"):
            return
        request_id = handle.get("request_id")
        if request_id and handle.get("job_id") is None:
            self.client.cancel_request(request_id)
            try:
                handle["job_id"] = self.client.launch_result(request_id)
            except LaunchFailed:
                pass  # cancelled before it made a job
        if handle.get("managed"):
            if handle.get("job_id") is not None:
                self.client.cancel_managed(int(handle["job_id"]))
        elif request_id:
            self.client.down(handle["cluster"])
        handle["terminated"] = True
