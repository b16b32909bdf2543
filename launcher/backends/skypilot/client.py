"""SkyPilot's SDK, wrapped so that callers see plain values.

SkyPilot's SDK is asynchronous: every call sends a request to its API server (started locally on
first use) and returns a *request id*; ``sky.get(id)`` waits for the result and
``sky.stream_and_get(id)`` also streams the request's log. Launches are left asynchronous here
(a launch takes minutes: the caller keeps the request id and asks again later); every other
call waits for its result and returns plain data (status strings, ints, lines).

``sky`` is imported on first use only. Errors come out as ours: ``ClusterGone`` (a
``HostLostError``) when a cluster no longer exists or is not up, ``LaunchFailed`` when a launch
request ended in an error, ``BackendError`` for the rest.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from launcher.backends.base import BackendError, HostLostError

# SkyPilot's request states (sky.server.requests.requests.RequestStatus), as strings.
REQUEST_DONE = ("SUCCEEDED", "FAILED", "CANCELLED")
_EXIT_CODE_RE = re.compile(r"exit code (\d+)")


class ClusterGone(HostLostError):
    """The cluster does not exist (any more) or is not up."""


class LaunchFailed(BackendError):
    """A launch request ended in an error. ``no_capacity``: no resources could be had."""

    def __init__(self, message: str, no_capacity: bool = False):
        super().__init__(message)
        self.no_capacity = no_capacity


@dataclass(frozen=True)
class ManagedJob:
    """One managed job as SkyPilot's jobs controller sees it."""

    job_id: int
    status: str  # sky.jobs.ManagedJobStatus value: PENDING, STARTING, RUNNING, RECOVERING, ...
    recovery_count: int = 0
    failure_reason: str = ""
    cluster: str = ""  # the cluster it runs on now (changes with every recovery)
    region: str = ""
    cloud: str = ""  # where that cluster is, e.g. "AWS", "Slurm"; "" before it is placed

    @property
    def exit_code(self) -> int | None:
        """The user program's exit code, when the controller reported one."""
        m = _EXIT_CODE_RE.search(self.failure_reason or "")
        return int(m.group(1)) if m else None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class SkyPilotClient:
    """The calls the SkyPilot backend needs, each a thin wrapper of one SDK call."""

    def __init__(self) -> None:
        self._sky = None

    @property
    def sky(self):
        if self._sky is None:
            import sky

            self._sky = sky
        return self._sky

    def _exceptions(self):
        from sky import exceptions

        return exceptions

    def _get(self, request_id: str) -> Any:
        try:
            return self.sky.get(request_id)
        except (BackendError, KeyboardInterrupt):
            raise
        except Exception as e:
            raise self._ours(e) from e

    def _ours(self, e: Exception) -> BackendError:
        exc = self._exceptions()
        if isinstance(e, (exc.ClusterDoesNotExist, exc.ClusterNotUpError)):
            return ClusterGone(_one_line(e))
        return BackendError(_one_line(e))

    # --- launches (asynchronous: they return the request id) -----------------------------------
    def launch_managed(self, config: dict[str, Any], name: str) -> str:
        """Submit a managed job; SkyPilot's controller launches, watches and recovers it."""
        from launcher.backends.skypilot.mapping import to_sky_task

        task = to_sky_task(config)
        return self._submit(lambda: self.sky.jobs.launch(task, name=name))

    def launch_cluster(self, config: dict[str, Any], cluster: str, idle_minutes: int) -> str:
        """Launch a cluster and run the task on it; it tears itself down after ``idle_minutes``."""
        from launcher.backends.skypilot.mapping import to_sky_task

        task = to_sky_task(config)
        return self._submit(lambda: self.sky.launch(task, cluster_name=cluster,
                                                    idle_minutes_to_autostop=idle_minutes, down=True))

    def _submit(self, call) -> str:
        try:
            return str(call())
        except Exception as e:
            raise BackendError(f"SkyPilot refused the launch: {_one_line(e)}") from e

    def request_status(self, request_id: str) -> str:
        """PENDING, WAITING, RUNNING, SUCCEEDED, FAILED, CANCELLED, or UNKNOWN (the API server
        forgot it or is not running)."""
        try:
            found = self.sky.api_status([request_id])
        except Exception:
            return "UNKNOWN"
        for r in found or []:
            status = getattr(r, "status", None) or (r.get("status") if isinstance(r, dict) else None)
            if status:
                return str(getattr(status, "value", status)).upper()
        return "UNKNOWN"

    def launch_result(self, request_id: str) -> int | None:
        """The job id a finished launch request returned (managed or on the cluster). Raises
        ``LaunchFailed`` when the launch failed or was cancelled."""
        exc = self._exceptions()
        try:
            result = self.sky.get(request_id)
        except exc.ResourcesUnavailableError as e:
            raise LaunchFailed(_one_line(e), no_capacity=True) from e
        except Exception as e:
            raise LaunchFailed(_one_line(e)) from e
        job_ids = result[0] if isinstance(result, (tuple, list)) else result
        if isinstance(job_ids, (list, tuple)):  # managed: a list of job ids
            job_ids = job_ids[0] if job_ids else None
        return int(job_ids) if job_ids is not None else None

    def cancel_request(self, request_id: str) -> None:
        try:
            self._get(self.sky.api_cancel(request_id, silent=True))
        except BackendError:
            pass  # already finished or forgotten: nothing to cancel

    # --- managed jobs --------------------------------------------------------------------------
    def managed_job(self, job_id: int) -> ManagedJob | None:
        records = self._get(self.sky.jobs.queue_v2(refresh=False, job_ids=[job_id]))
        records = records[0] if isinstance(records, tuple) else records
        for r in records or []:
            get = r.get if isinstance(r, dict) else (lambda k, d=None, r=r: getattr(r, k, d))
            if get("job_id") != job_id:
                continue
            status = get("status")
            return ManagedJob(job_id=job_id, status=str(getattr(status, "value", status)),
                              recovery_count=int(get("recovery_count") or 0),
                              failure_reason=get("failure_reason") or "",
                              cluster=get("current_cluster_name") or "", region=_placed(get("region")),
                              cloud=_placed(get("cloud")))
        return None

    def managed_logs(self, job_id: int, follow: bool) -> Iterator[str]:
        try:
            chunks = self.sky.jobs.tail_logs(job_id=job_id, follow=follow, preload_content=False)
        except Exception as e:
            raise self._ours(e) from e
        yield from _lines(chunks)

    def cancel_managed(self, job_id: int) -> None:
        """Cancel and tear down; a job that already ended is left as it is."""
        self._get(self.sky.jobs.cancel(job_ids=[job_id]))

    # --- clusters ------------------------------------------------------------------------------
    def cluster_job_status(self, cluster: str, job_id: int | None) -> str | None:
        """The job's status on the cluster (sky.JobStatus value), None if it has none yet.
        Raises ``ClusterGone`` when the cluster is gone or not up."""
        statuses = self._get(self.sky.job_status(cluster, [job_id] if job_id is not None else None))
        status = (statuses or {}).get(job_id) if job_id is not None else next(iter((statuses or {}).values()), None)
        return None if status is None else str(getattr(status, "value", status))

    def cluster_location(self, cluster: str) -> tuple[str, str] | None:
        """``(cloud, region)`` the cluster was launched in, None when unknown."""
        try:
            records = self._get(self.sky.status([cluster]))
        except BackendError:
            return None
        for r in records or []:
            resources = getattr(getattr(r, "handle", None), "launched_resources", None)
            if resources is not None and resources.cloud is not None:
                return str(resources.cloud), resources.region or ""
        return None

    def cluster_logs(self, cluster: str, job_id: int | None, follow: bool) -> Iterator[str]:
        try:
            chunks = self.sky.tail_logs(cluster, job_id, follow, preload_content=False)
        except Exception as e:
            raise self._ours(e) from e
        yield from _lines(chunks)

    def down(self, cluster: str) -> None:
        """Tear the cluster down; one that does not exist counts as done."""
        try:
            self._get(self.sky.down(cluster))
        except ClusterGone:
            pass


def _placed(value: Any) -> str:
    """A location field of a managed job's record: "" while it is not placed ("-" or None)."""
    return "" if value in (None, "-") else str(value)


def _lines(chunks: Iterator[str | None]) -> Iterator[str]:
    """SkyPilot's streamed log chunks -> lines without their newline (None, a heartbeat or a
    spinner update, is skipped)."""
    buf = ""
    for chunk in chunks:
        if chunk is None:
            continue
        buf += chunk
        *lines, buf = buf.split("\n")
        for line in lines:
            yield line.rstrip("\r")
    if buf:
        yield buf.rstrip("\r")
