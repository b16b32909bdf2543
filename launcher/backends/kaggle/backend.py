"""``--infra kaggle``: each attempt is one session of a private Kaggle script kernel.

An attempt pushes a new version of the job's kernel (``<user>/launch-<job id>``), which Kaggle
runs at once. The kernel's script (``kernel_script.py``) fetches the code bundles and the latest
checkpoint from the store, runs the agent, and stops the run before the session limit:
``LAUNCH_DEADLINE`` = session start + limit - margin, and SIGTERM shortly after that deadline for
trainers that ignore it. When a session ends and the job is not done, the supervisor relaunches: a new
version, a new session, and the trainer resumes from the store::

    session 1: push v1 -> running -> deadline: checkpoint at step 4100, exit 75 -> PREEMPTED
    session 2: push v2 -> running -> Kaggle ends it early, no exit code     -> PREEMPTED
    session 3: push v3 -> resumes at step 4100 (last upload) -> exit 0        -> SUCCEEDED

How a session ended is read from the store, not from Kaggle: the agent writes
``logs/attempt-N.exit`` as its last act. Kaggle's status only says *whether* the session is over;
over with an exit code -> that code's state; over without one after the kernel had started the
attempt (``logs/attempt-N.started``) -> PREEMPTED ("session ended": killed at its limit);
over before that -> FAILED when Kaggle reports an error (a missing secret), else PREEMPTED.

Credentials. The store's keys and the task's secrets reach the kernel as **Kaggle user secrets**,
read by name in the session (``kaggle_secrets.UserSecretsClient``); the kernel's source carries
only the names, its config is checked for values before it is pushed. One-time set-up: add
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (and each secret the task declares) under
Add-ons > Secrets with the values they have where ``launch`` runs, and attach them to the job's
notebook. Why not presigned URLs: a checkpoint upload writes keys that do not exist yet (new
steps, multipart parts) and retention deletes and lists, so presigned URLs cannot cover it; and a
URL that fetches a credentials file is itself a credential in the source. Kaggle secrets are the
platform's own mechanism; a key limited to the bucket's prefix (``infra/`` policy) limits the harm.
The endpoint and region are not secret and travel in the kernel's config.

Stopping. The Kaggle API cancels a session only by a session id that no public call returns for a
pushed version, so ``terminate`` writes ``cancel`` into ``logs/attempt-N.control``; the kernel reads
it every ``control_interval`` seconds and stops the run (SIGTERM: checkpoint, upload, exit), which
ends the session. A kernel that is stuck still ends at Kaggle's session limit (the push asks for
``session_limit`` as its timeout). Fire drills use the same file (``term``, ``kill``).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from launcher import contract
from launcher.backends.base import (Backend, BackendError, HostLostError, MissingDependencyError,
                                    NoCapacityError, ProvisionRequest, Quote, RunSpec, RunState,
                                    RunStatus, SyncStats)
from launcher.backends.kaggle import kernel
from launcher.backends.kaggle.client import INSTALL_HINT, KaggleAPIError, KaggleClient
from launcher.backends.kaggle.config import KaggleSettings, machine_shape
from launcher.backends.local.backend import status_from_exit_code
from launcher.errors import InfraError
from launcher.state import launch_home
from launcher.store import NotFound, ObjectStore, StoreError, open_store

RUNNING = RunStatus(RunState.RUNNING)
WEEK = 7 * 86400.0


def gpu_sessions(now: float) -> list[tuple[float, float]]:
    """``(start, end)`` of every Kaggle GPU session launch pushed from this machine in the last 7
    days (from the state; a session still running ends ``now``). Sessions of the same account run
    from elsewhere (the web editor, another machine) are not seen."""
    from launcher import state as st

    state, out = st.State(), []
    for job in state.jobs():
        if job.infra != "kaggle" and "kaggle" not in job.options.get("option_infras", []):
            continue
        for a in state.attempts(job.id):
            if a.handle.get("enable_gpu") and a.handle.get("version") is not None:
                start, end = a.handle.get("pushed_at") or a.started, a.ended or now
                if end > now - WEEK:
                    out.append((max(start, now - WEEK), min(end, now)))
    return out


def started_name(attempt: int) -> str:
    return f"attempt-{attempt}.started"


def control_name(attempt: int) -> str:
    return f"attempt-{attempt}.control"


class KaggleBackend(Backend):
    name = "kaggle"

    def __init__(self, infra: str = "kaggle", *, settings: KaggleSettings | None = None,
                 client: KaggleClient | None = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, work_dir: Path | None = None,
                 sessions: Callable[[float], list[tuple[float, float]]] = gpu_sessions):
        if infra != "kaggle":
            raise InfraError(f"infra {infra!r}: the Kaggle backend takes infra 'kaggle'")
        if client is None and importlib.util.find_spec("kaggle") is None:
            raise MissingDependencyError(f"infra 'kaggle': {INSTALL_HINT}")
        self.settings = settings or KaggleSettings.from_env()
        self.client = client or KaggleClient(self.settings)
        self.clock, self.sleep = clock, sleep
        self.sessions = sessions
        self.work_dir = work_dir or launch_home() / "kaggle"
        self._stores: dict[str, ObjectStore] = {}

    # --- attempt set-up ------------------------------------------------------------------------
    def provision(self, req: ProvisionRequest) -> dict[str, Any]:
        """Nothing to rent: the handle names the kernel and the session's limits. NoCapacityError
        for accelerators Kaggle does not have (the next ``any_of`` option may do), and while the
        weekly GPU quota has less than ``min_session`` left (the supervisor waits and asks again).
        A session gets at most what the quota has left, so its deadline comes before Kaggle's."""
        s = self.settings
        shape = machine_shape(req.resources, s)
        gpu = s.enable_gpu or bool(shape)
        limit = s.session_limit
        if gpu and s.weekly_gpu_hours > 0:
            limit = min(limit, self._quota_left())
        slug = kernel.kernel_slug(req.job_id)
        return {"backend": self.name, "host": f"kaggle:{slug}", "slug": slug, "job_id": req.job_id,
                "attempt": req.attempt, "num_nodes": req.num_nodes, "machine_shape": shape, "enable_gpu": gpu,
                "session": {"limit_s": limit, "margin_s": s.margin, "usable_s": max(0.0, limit - s.margin)},
                "price_per_hour": 0.0}

    def quote(self, resources: dict[str, Any], num_nodes: int = 1) -> Quote:
        """Free while the weekly GPU quota lasts; not usable for accelerators Kaggle lacks, for
        several nodes, or with the quota used up."""
        if num_nodes > 1:
            return Quote(0.0, False, f"Kaggle runs one machine per session; the task asks for {num_nodes}")
        try:
            shape = machine_shape(resources, self.settings)
            left = self._quota_left() if (self.settings.enable_gpu or shape) and self.settings.weekly_gpu_hours > 0 else None
        except NoCapacityError as e:
            return Quote(0.0, False, str(e))
        return Quote(0.0, True, "free" + (f"; {left / 3600:.1f} h of weekly GPU quota left" if left is not None else ""))

    def _quota_left(self) -> float:
        """Seconds of the weekly GPU quota left; NoCapacityError below ``min_session``."""
        now = self.clock()
        sessions = self.sessions(now)
        quota = self.settings.weekly_gpu_hours * 3600.0
        used = sum(end - start for start, end in sessions)
        left = quota - used
        shortest = max(self.settings.min_session, self.settings.margin + 60.0)  # worth pushing
        if left >= shortest:
            return left
        # Quota comes back as old sessions leave the 7-day window, oldest first.
        need, frees_at = shortest - left, now
        for start, end in sorted(sessions):
            frees_at = start + WEEK + min(need, end - start)
            need -= end - start
            if need <= 0:
                break
        when = time.strftime("%a %H:%M UTC", time.gmtime(frees_at))
        raise NoCapacityError(f"Kaggle weekly GPU quota: {used / 3600:.1f} of {quota / 3600:.0f} h used by "
                              f"launch's sessions in the last 7 days; enough frees up by {when} "
                              "(LAUNCH_KAGGLE_WEEKLY_GPU_HOURS)")

    def bootstrap(self, handle: dict[str, Any]) -> None:
        """Check the task fits a session and the Kaggle credentials exist; name the kernel
        ``<user>/<slug>``."""
        if handle.get("num_nodes", 1) > 1:
            raise BackendError(f"Kaggle runs one machine per session; the task asks for {handle['num_nodes']}")
        user = self.client.username
        if not user:
            raise BackendError("the Kaggle credentials name no user (KAGGLE_USERNAME)")
        handle["kernel"] = f"{user}/{handle['slug']}"
        handle["host"] = f"kaggle:{handle['kernel']}"

    def sync_workdir(self, handle: dict[str, Any], workdir: str | None) -> SyncStats:
        """Pack the workdir (and the launcher unless the workdir has it) into bundles; they go to
        the store in ``start_run``, which knows the job's prefix."""
        bundles = kernel.make_bundles(workdir, self.work_dir / handle["job_id"] / "bundles")
        handle["bundles"] = [{"kind": b.kind, "key": b.key, "path": str(b.path)} for b in bundles]
        return SyncStats(files_sent=sum(b.files for b in bundles), bytes_sent=sum(b.bytes for b in bundles))

    def start_run(self, handle: dict[str, Any], spec: RunSpec) -> None:
        """Upload the bundles, write the kernel (metadata + script) and push it as a new version."""
        if not spec.store_uri.startswith("s3://"):
            raise BackendError(f"store {spec.store_uri or '(none)'}: a Kaggle session reaches only an "
                               "s3:// store; pass --store s3://bucket/prefix")
        if "kernel" not in handle:
            self.bootstrap(handle)
        if "bundles" not in handle:
            self.sync_workdir(handle, None)
        store = self._store(spec.store_uri)
        try:
            for b in handle["bundles"]:
                if not store.exists(b["key"]):
                    store.put_file(b["path"], b["key"])
        except StoreError as e:
            raise BackendError(f"cannot upload the code bundle: {e}") from None
        unpack, pythonpath, workdir = kernel.layout(handle["bundles"])
        config = kernel.kernel_config(spec, bundles=unpack, pythonpath=pythonpath, workdir=workdir,
                                      session_limit=self._limit(handle), margin=self.settings.margin,
                                      control_interval=self.settings.control_interval)
        meta = kernel.kernel_metadata(handle["kernel"], enable_gpu=handle["enable_gpu"],
                                      enable_internet=self.settings.enable_internet,
                                      machine_shape=handle.get("machine_shape"))
        folder = kernel.write_kernel(self.work_dir / handle["job_id"] / f"attempt-{handle['attempt']}",
                                     meta, kernel.kernel_source(config))
        handle["store_uri"] = spec.store_uri
        result = self.client.push(folder, timeout=int(self._limit(handle)))
        handle.update(version=result.version, url=result.url, pushed_at=self.clock())
        handle["host"] = f"kaggle:{handle['kernel']} v{result.version}"

    # --- watching ------------------------------------------------------------------------------
    def poll(self, handle: dict[str, Any]) -> RunStatus:
        """Kaggle's status at most every ``poll_interval`` seconds; the ending from the store."""
        if handle.get("final"):
            return RunStatus(RunState(handle["final"][0]), handle["final"][1], handle["final"][2])
        now = self.clock()
        if now - handle.get("polled_at", 0.0) < self.settings.poll_interval:
            return RUNNING
        handle["polled_at"] = now
        try:
            ks = self.client.status(handle["kernel"])
        except KaggleAPIError as e:  # cannot tell: a published exit code is still an answer
            handle["api_error"] = str(e)
            code = self._read_int(handle, contract.exit_name(handle["attempt"]))
            return self._final(handle, status_from_exit_code(code)) if code is not None else RUNNING
        handle["kaggle_status"] = ks.state
        if not ks.terminal:
            return RUNNING
        try:
            code = self._read_int(handle, contract.exit_name(handle["attempt"]), strict=True)
            started = code is not None or self._logs(handle).exists(started_name(handle["attempt"]))
        except StoreError:
            return RUNNING  # the store will answer at the next poll
        said = f"Kaggle: {ks.state}" + (f", {ks.message}" if ks.message else "")
        if code is not None:
            return self._final(handle, status_from_exit_code(code))
        if started:
            return self._final(handle, RunStatus(RunState.PREEMPTED, None, f"session ended ({said})"))
        if now - handle.get("pushed_at", now) < self.settings.start_grace:
            return RUNNING  # a status this fresh may still describe the previous version
        if ks.state == "error":
            return self._final(handle, RunStatus(RunState.FAILED, None, (
                f"the kernel failed before the attempt started ({said}); see its log: "
                f"kaggle kernels output {handle['kernel']} -p ./kaggle-log")))
        return self._final(handle, RunStatus(RunState.PREEMPTED, None, f"session ended before it started ({said})"))

    def stream_logs(self, handle: dict[str, Any], follow: bool = False) -> Iterator[str]:
        """The attempt's log as the agent uploads it to the store (every few seconds)."""
        if not handle.get("store_uri"):
            raise HostLostError("the attempt's kernel was never pushed")
        name, sent, buf = contract.log_name(handle["attempt"]), 0, b""
        while True:
            try:
                data = self._logs(handle).get_bytes(name)
            except NotFound:
                data = b""
            except StoreError as e:
                raise BackendError(f"cannot read the log from the store: {e}") from None
            buf += data[sent:]
            sent = max(sent, len(data))
            *lines, buf = buf.split(b"\n")
            yield from (line.decode(errors="replace") for line in lines)
            if not follow:
                break
            if self.poll(handle).done:
                follow = False  # one more read: the last upload comes before the exit code
                continue
            self.sleep(self.settings.log_interval)
        if buf:
            yield buf.decode(errors="replace")

    def signal(self, handle: dict[str, Any], kind: str) -> None:
        """Fire drills through the control file: the kernel sends SIGTERM (``term``) or kills
        the attempt with no exit code (``kill``) within ``control_interval`` seconds."""
        if kind not in ("term", "kill"):
            raise ValueError(f"unknown fire drill {kind!r}")
        self._control(handle, kind)

    def terminate(self, handle: dict[str, Any]) -> None:
        """Ask the kernel to stop (``cancel`` in the control file; see the module docstring).
        Quiet for a session already over or never pushed; safe to call twice."""
        if handle.get("final") or not handle.get("store_uri"):
            return
        self._control(handle, "cancel")

    # --- helpers -------------------------------------------------------------------------------
    def _limit(self, handle: dict[str, Any]) -> float:
        return float((handle.get("session") or {}).get("limit_s") or self.settings.session_limit)

    def _store(self, uri: str) -> ObjectStore:
        if uri not in self._stores:
            self._stores[uri] = open_store(uri)
        return self._stores[uri]

    def _logs(self, handle: dict[str, Any]) -> ObjectStore:
        return self._store(handle["store_uri"]).child(contract.LOGS_PREFIX)

    def _read_int(self, handle: dict[str, Any], name: str, strict: bool = False) -> int | None:
        try:
            return int(self._logs(handle).get_bytes(name).decode().strip())
        except NotFound:
            return None
        except ValueError:
            return None
        except StoreError:
            if strict:
                raise
            return None

    def _control(self, handle: dict[str, Any], word: str) -> None:
        try:
            self._logs(handle).put_bytes(control_name(handle["attempt"]), word.encode())
        except StoreError as e:
            raise BackendError(f"cannot reach the kernel through the store: {e}") from None

    @staticmethod
    def _final(handle: dict[str, Any], status: RunStatus) -> RunStatus:
        handle["final"] = [status.state.value, status.exit_code, status.reason]
        return status
