"""``--infra kaggle``: each attempt is one session of a private Kaggle script kernel.

One kernel per task name and user (``<user>/launch-<task name>``); an attempt pushes a new
version of it, which Kaggle runs at once. The kernel's script (``kernel_script.py``) fetches the
code bundles and the latest checkpoint from the store, runs the agent, and stops the run before
the session limit: ``LAUNCH_DEADLINE`` = session start + limit - margin, and SIGTERM shortly after
that deadline for trainers that ignore it. When a session ends and the job is not done, the
supervisor relaunches: a new version, a new session, and the trainer resumes from the store::

    session 1: push v1 -> running -> deadline: checkpoint at step 4100, exit 75 -> PREEMPTED
    session 2: push v2 -> running -> Kaggle ends it early, no exit code     -> PREEMPTED
    session 3: push v3 -> resumes at step 4100 (last upload) -> exit 0        -> SUCCEEDED

How a session ended is read from the store, not from Kaggle: the agent writes
``logs/attempt-N.exit`` as its last act. Kaggle's status (of the exact version pushed: the latest
may be another job's) only says *whether* the session is over; over with an exit code -> that
code's state; over without one after the kernel had started the attempt
(``logs/attempt-N.started``) -> PREEMPTED ("session ended": killed at its limit); over before that
-> FAILED when Kaggle reports an error before the session's limit (the kernel itself failed),
else PREEMPTED (a slow bootstrap cut by the limit, a session that ended quietly). When the store has the exit code but
Kaggle still says running ``end_grace`` seconds later, the store is believed.

Credentials. Either (``LAUNCH_KAGGLE_CREDENTIALS=secrets``, the default) the store's keys and the
task's secrets are **Kaggle user secrets**, read by name in the session; a secret is readable only
by a notebook it was attached to in the web editor, and no API attaches it, so before the first
GPU session of a kernel launch pushes a CPU *check* version, tells the user once which secrets to
attach (with the kernel's URL) and waits (see ``attachments``). Or (``temporary``) the kernel
carries short-lived STS credentials limited to the job's prefix (``launcher.store.temporary``):
nothing to do in the web UI, at the price of credentials written into the (private) kernel's
source for their lifetime. The endpoint and region are not secret and travel in the config.

Refusals. A push that Kaggle refuses for capacity (the GPU session limit, 429, 503, a machine
shape the account may not use, the quota) is ``NoCapacityError``: the supervisor waits with
back-off or tries the next option; it never counts as a setup failure.

Stopping. No SDK call returns the session id that ``CancelKernelSession`` takes, and one version
cannot be deleted, so ``terminate`` writes ``cancel`` into ``logs/attempt-N.control``; the kernel
reads it every ``control_interval`` seconds and stops the run (SIGTERM: checkpoint, upload, exit),
which ends the session. If the version still runs ``stop_wait`` seconds later, the kernel is
deleted (which stops its sessions; attached secrets must then be attached again, and launch will
say so). Fire drills use the same file (``term``, ``kill``).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from launcher import contract
from launcher.backends.base import (Backend, BackendError, CredentialsError, HostLostError, MissingDependencyError,
                                    NoCapacityError, ProvisionRequest, Quote, RunSpec, RunState, RunStatus,
                                    SyncStats)
from launcher.backends.kaggle import kernel, quota
from launcher.backends.kaggle.attachments import Attachments, instructions
from launcher.backends.kaggle.client import INSTALL_HINT, KaggleAPIError, KaggleCapacityError, KaggleClient
from launcher.backends.kaggle.config import KaggleSettings, accelerator_kind, machine_shape, session_limit
from launcher.backends.local.backend import status_from_exit_code
from launcher.errors import InfraError
from launcher.state import launch_home
from launcher.store import NotFound, ObjectStore, StoreError, open_store

RUNNING = RunStatus(RunState.RUNNING)
gpu_sessions = quota.gpu_sessions  # the fallback count of the weekly quota
CHECK_TIMEOUT = 600


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
        self.attachments = Attachments(self.work_dir / "kernels.json")

    # --- attempt set-up ------------------------------------------------------------------------
    def provision(self, req: ProvisionRequest) -> dict[str, Any]:
        """Nothing to rent: the handle names the kernel and the session's limits. NoCapacityError
        for accelerators this account cannot have (the next ``any_of`` option may do), and while
        the weekly quota has less than ``min_session`` left (the supervisor waits and asks again).
        A session asks for less than the service's maximum and at most what the quota has left,
        so its deadline comes before Kaggle's."""
        s = self.settings
        shape = machine_shape(req.resources, s)
        kind = accelerator_kind(shape, s.enable_gpu)
        limit = session_limit(s, kind)
        if kind != "cpu" and s.weekly_gpu_hours > 0:
            limit = min(limit, quota.budget(self.client, s, kind, self.clock(), self.sessions))
        slug = kernel.kernel_slug(req.job_id)
        return {"backend": self.name, "host": f"kaggle:{slug}", "slug": slug, "job_id": req.job_id,
                "attempt": req.attempt, "num_nodes": req.num_nodes, "machine_shape": shape,
                "kind": kind, "enable_gpu": kind == "gpu",
                "session": {"limit_s": limit, "margin_s": s.margin, "usable_s": max(0.0, limit - s.margin)},
                "price_per_hour": 0.0}

    def quote(self, resources: dict[str, Any], num_nodes: int = 1) -> Quote:
        """Free while the weekly quota lasts; not usable for accelerators Kaggle lacks, for
        several nodes, or with the quota used up (Kaggle's quota view, else launch's count)."""
        if num_nodes > 1:
            return Quote(0.0, False, f"Kaggle runs one machine per session; the task asks for {num_nodes}")
        s = self.settings
        try:
            kind = accelerator_kind(machine_shape(resources, s), s.enable_gpu)
            left = (quota.budget(self.client, s, kind, self.clock(), self.sessions)
                    if kind != "cpu" and s.weekly_gpu_hours > 0 else None)
        except (NoCapacityError, CredentialsError) as e:
            return Quote(0.0, False, str(e))
        note = f"; {left / 3600:.1f} h of weekly {kind.upper()} quota left" if left not in (None, float("inf")) else ""
        return Quote(0.0, True, "free" + note)

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
        """Upload the bundles, write the kernel (metadata + script) and push it as a new version;
        first a CPU check version when the secrets it reads were not seen attached (``poll``
        pushes the run once the check passed). NoCapacityError while waiting for the user to
        attach them, and when Kaggle refuses the push for capacity."""
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
        folder = self.work_dir / handle["job_id"] / f"attempt-{handle['attempt']}"
        config = self._config(handle, spec)
        kind = handle.get("kind") or ("gpu" if handle.get("enable_gpu") else "cpu")
        meta = kernel.kernel_metadata(handle["kernel"], enable_gpu=kind == "gpu", enable_tpu=kind == "tpu",
                                      enable_internet=self.settings.enable_internet,
                                      machine_shape=handle.get("machine_shape"))
        handle["run_folder"] = str(kernel.write_kernel(folder / "run", meta, kernel.kernel_source(config)))
        handle["store_uri"] = spec.store_uri
        names = handle["secret_names"] = config["secret_names"]
        if names and not self.attachments.covers(handle["kernel"], names):
            waiting = self.attachments.waiting(handle["kernel"], self.clock(), self.settings.secrets_recheck)
            if waiting:
                raise NoCapacityError(waiting)
            self._push_check(handle, spec, folder / "check")
            return
        self._push_run(handle)

    def _config(self, handle: dict[str, Any], spec: RunSpec) -> dict[str, Any]:
        """The run's kernel config; with temporary credentials, fresh ones for this session."""
        creds = None
        if self.settings.credentials == "temporary":
            from launcher.store.temporary import scoped_credentials

            if not self.settings.role_arn:
                raise BackendError("LAUNCH_KAGGLE_CREDENTIALS=temporary needs LAUNCH_KAGGLE_ROLE_ARN: the role "
                                   "whose credentials, limited to the job's prefix, the kernel carries")
            try:
                creds = scoped_credentials(spec.store_uri, self.settings.role_arn,
                                           self._limit(handle) + self.settings.margin, f"launch-{spec.job_id}",
                                           endpoint_url=spec.secrets.get("AWS_ENDPOINT_URL_STS"))
            except StoreError as e:
                raise BackendError(str(e)) from None
            handle["credentials_expire_at"] = creds.pop("expires_at")
        unpack, pythonpath, workdir = kernel.layout(handle["bundles"])
        return kernel.kernel_config(spec, bundles=unpack, pythonpath=pythonpath, workdir=workdir,
                                    session_limit=self._limit(handle), margin=self.settings.margin,
                                    control_interval=self.settings.control_interval, store_credentials=creds)

    def _push_check(self, handle: dict[str, Any], spec: RunSpec, folder: Path) -> None:
        meta = kernel.kernel_metadata(handle["kernel"], enable_gpu=False, enable_internet=self.settings.enable_internet)
        config = kernel.check_config(handle["secret_names"], spec.job_id, spec.attempt)
        folder = kernel.write_kernel(folder, meta, kernel.kernel_source(config))
        result = self.client.push(folder, timeout=CHECK_TIMEOUT)
        handle["check"] = {"version": result.version, "pushed_at": self.clock()}
        handle["url"] = result.url
        handle["host"] = f"kaggle:{handle['kernel']} v{result.version} (secrets check)"

    def _push_run(self, handle: dict[str, Any]) -> None:
        result = self.client.push(Path(handle["run_folder"]), timeout=int(self._limit(handle)))
        handle.update(version=result.version, url=result.url, pushed_at=self.clock())
        handle["host"] = f"kaggle:{handle['kernel']} v{result.version}"

    # --- watching ------------------------------------------------------------------------------
    def poll(self, handle: dict[str, Any]) -> RunStatus:
        """Kaggle's status of the version pushed, at most every ``poll_interval`` seconds; the
        ending from the store."""
        if handle.get("final"):
            return RunStatus(RunState(handle["final"][0]), handle["final"][1], handle["final"][2])
        now = self.clock()
        if now - handle.get("polled_at", 0.0) < self.settings.poll_interval:
            return RUNNING
        handle["polled_at"] = now
        if handle.get("version") is None and handle.get("check"):
            return self._poll_check(handle, now)
        try:
            ks = self.client.status(handle["kernel"], handle.get("version"))
        except (KaggleAPIError, CredentialsError) as e:  # cannot tell: a published exit code is still an answer
            handle["api_error"] = str(e)
            code = self._read_int(handle, contract.exit_name(handle["attempt"]))
            return self._final(handle, status_from_exit_code(code)) if code is not None else RUNNING
        handle["kaggle_status"] = ks.state
        if not ks.terminal:
            return self._store_says_ended(handle, now, ks.state)
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
            return RUNNING  # the version may not have started yet
        if now - handle.get("pushed_at", now) >= self._limit(handle):  # its limit ended it, whatever Kaggle says
            return self._final(handle, RunStatus(RunState.PREEMPTED, None, (
                f"session ended at its limit before the attempt started ({said})")))
        if ks.state == "error":
            return self._final(handle, RunStatus(RunState.FAILED, None, (
                f"the kernel failed before the attempt started ({said}); see its log: "
                f"kaggle kernels output {handle['kernel']} -p ./kaggle-log")))
        return self._final(handle, RunStatus(RunState.PREEMPTED, None, f"session ended before it started ({said})"))

    def _poll_check(self, handle: dict[str, Any], now: float) -> RunStatus:
        """A secrets check is running: when it passed, push the run; when it failed, tell the user
        (once in full) and end the attempt, which waits in ``start_run`` until ``secrets_recheck``."""
        kernel_id, names = handle["kernel"], handle["secret_names"]
        try:
            ks = self.client.status(kernel_id, handle["check"]["version"])
        except (KaggleAPIError, CredentialsError) as e:
            handle["api_error"] = str(e)
            return RUNNING
        if not ks.terminal:
            return RUNNING
        if ks.state == "complete":
            self.attachments.passed(kernel_id, names, now)
            try:
                self._push_run(handle)
            except BackendError as e:  # NoCapacityError too: relaunch; the check is not repeated
                return self._final(handle, RunStatus(RunState.PREEMPTED, None, f"secrets attached; then: {e}"))
            return RUNNING
        url = handle.get("url") or kernel_id
        first = self.attachments.failed(kernel_id, names, now, url)
        said = instructions(kernel_id, url, names) if first else \
            self.attachments.waiting(kernel_id, now, self.settings.secrets_recheck) or "secrets still not attached"
        return self._final(handle, RunStatus(RunState.PREEMPTED, None, said))

    def _store_says_ended(self, handle: dict[str, Any], now: float, kaggle_state: str) -> RunStatus:
        """Kaggle says running: believe the store's exit code once it has stood ``end_grace``."""
        code = self._read_int(handle, contract.exit_name(handle["attempt"]))
        if code is None:
            return RUNNING
        seen = handle.setdefault("store_ended_at", now)
        if now - seen < self.settings.end_grace:
            return RUNNING
        handle["stuck"] = True  # terminate makes sure the session stops
        st = status_from_exit_code(code)
        why = f"the store has exit code {code}; Kaggle still said {kaggle_state} {self.settings.end_grace:.0f} s later"
        return self._final(handle, RunStatus(st.state, st.exit_code, f"{st.reason}; {why}" if st.reason else why))

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
        """Stop the version's session: ``cancel`` in the control file (the kernel stops the run),
        then, if Kaggle still runs it ``stop_wait`` seconds later, delete the kernel (see the
        module docstring). Quiet for a session already over or never pushed; safe to call twice."""
        if handle.get("version") is None or not handle.get("store_uri") or handle.get("stopped"):
            return
        if handle.get("final") and not handle.get("stuck"):
            return
        try:
            self._control(handle, "cancel")
        except BackendError:
            pass  # the store is out of reach; Kaggle can still stop it
        if not self._ended_within(handle, self.settings.stop_wait):
            self._delete(handle["kernel"])
        handle["stopped"] = True

    def _delete(self, kernel_id: str, tries: int = 4) -> None:
        """Delete the kernel; a refusal Kaggle may lift (429, 5xx) is tried again after 5, 10, 20 s,
        since a session left running keeps using the quota until its limit."""
        for n in range(tries):
            try:
                self.client.delete(kernel_id)
                break
            except KaggleCapacityError:
                if n == tries - 1:
                    raise
                self.sleep(5.0 * 2 ** n)
        self.attachments.forget(kernel_id)

    def _ended_within(self, handle: dict[str, Any], wait: float) -> bool:
        """Whether Kaggle says the version is over within ``wait`` seconds."""
        deadline = self.clock() + wait
        while True:
            try:
                if self.client.status(handle["kernel"], handle["version"]).terminal:
                    return True
            except (KaggleAPIError, CredentialsError):
                pass
            if self.clock() >= deadline:
                return False
            self.sleep(min(self.settings.poll_interval, 5.0))

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
