"""The supervisor: one detached process per job that drives attempts until the job ends.

Each attempt goes through the backend's calls (provision, wait, bootstrap, sync, start, poll,
terminate); how it ended becomes a recovery ``Event``; ``recovery.decide`` says what next. The loop
takes a clock and a sleep, so tests drive it without waiting. All progress is written to the state
database as it happens: a supervisor that dies is restarted (``launcher.daemon``) and picks the job
up where the state says it was, re-attaching to a run that is still going.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from launcher import chaos, contract, state as st
from launcher.backends import get_backend
from launcher.backends.base import (Backend, BackendError, CredentialsError, HostLostError,
                                    NoCapacityError, ProvisionRequest, RunSpec, RunState, RunStatus)
from launcher.progress import fraction_done
from launcher.recovery import Action, Event, History, Outcome, Policy, decide
from launcher.task import Task, parse_task
from launcher.watch.monitor import Monitor

_STATUS_OUTCOME = {RunState.SUCCEEDED: Outcome.SUCCEEDED, RunState.FAILED: Outcome.FAILED,
                   RunState.PREEMPTED: Outcome.PREEMPTED}
STORE_CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                         "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


class Cancelled(Exception):
    """``launch down`` asked for the job to stop."""


def policy_for(task: Task, n_options: int) -> Policy:
    jr = task.resources.recovery()
    codes = jr.recover_on_exit_codes
    codes = [codes] if isinstance(codes, int) else (codes or [])
    return Policy(max_restarts_on_errors=jr.max_restarts_on_errors,
                  recover_on_exit_codes=frozenset(codes), n_options=n_options,
                  eager_failover=(jr.strategy or "").upper() == "EAGER_NEXT_REGION")


def job_task(job: st.Job) -> Task:
    """The job's task as submitted, with its ``--env`` overrides applied."""
    task = parse_task(job.task_yaml, where=job.task_path or job.name)
    task.path = job.task_path
    task.envs.update(job.options.get("envs") or {})
    return task


class Supervisor:
    def __init__(self, state: st.State, job_id: int, *,
                 backend_for: Callable[[str], Backend] = get_backend,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 poll_interval: float = 1.0, reach_timeout: float = 900.0,
                 progress_interval: float = 10.0, secrets: dict[str, str] | None = None):
        self.state = state
        self.job_id = job_id
        self.clock, self.sleep = clock, sleep
        self.poll_interval = poll_interval
        self.reach_timeout = reach_timeout
        self.progress_interval = progress_interval
        job = state.job(job_id)
        self.task = job_task(job)
        self.backend = backend_for(job.infra)
        self.options = self.task.resources.options()
        self.policy = policy_for(self.task, len(self.options))
        self.drills = chaos.parse_chaos(job.options.get("chaos"))
        self.secrets = self._secrets(secrets or {})
        self._last_progress = 0.0
        self.monitor = Monitor.for_job(state, job, clock)

    def _secrets(self, given: dict[str, str]) -> dict[str, str]:
        """The task's secret values: as handed over, else from this process's environment."""
        out = {}
        for key in self.task.secrets:
            value = given.get(key) or os.environ.get(key)
            if value:
                out[key] = value
            else:
                self.state.event(self.job_id, "warning", f"secret {key} has no value in this "
                                 f"supervisor (restarted?): set {key} in your environment")
        return out

    # --- the loop ------------------------------------------------------------------------------
    def run(self) -> str:
        """Drive the job to a terminal state and return it."""
        history, option = self._history()
        try:
            while True:
                self._check_cancel()
                event = self._attempt(option)
                action = decide(event, history, self.policy)
                history.events.append(event)
                if not action.relaunch:
                    self.state.transition(self.job_id, action.final_state, action.reason)
                    return action.final_state
                self._recover(event, action)
                option = action.option
        except Cancelled:
            self.state.transition(self.job_id, st.CANCELLED, "cancelled by launch down")
            return st.CANCELLED

    def _history(self) -> tuple[History, int]:
        """Events of attempts that ended before this supervisor started (after a restart)."""
        history, option = History(), 0
        for a in self.state.attempts(self.job_id):
            option = int(a.handle.get("option", 0))
            if a.state in {o.value.upper() for o in Outcome}:
                ran_for = (a.ended or 0.0) - a.run_started if a.run_started is not None else 0.0
                history.events.append(Event(Outcome(a.state.lower()), a.exit_code, a.reason, option, ran_for))
        return history, option

    def _recover(self, event: Event, action: Action) -> None:
        opt = f", option {action.option + 1}/{len(self.options)}" if len(self.options) > 1 else ""
        wait = f" in {action.delay:.0f} s" if action.delay else ""
        self.state.transition(self.job_id, st.RECOVERING, action.reason)
        self.state.event(self.job_id, "recovery", f"relaunching{wait}{opt} after {action.reason}")
        self._sleep(action.delay)

    def _sleep(self, seconds: float) -> None:
        end = self.clock() + seconds
        while True:
            self._check_cancel()
            left = end - self.clock()
            if left <= 0:
                return
            self.sleep(min(left, self.poll_interval))

    def _cancel_requested(self) -> bool:
        self.state.beat(self.job_id, os.getpid())
        return self.state.job(self.job_id).state in (st.CANCELLING, st.CANCELLED)

    def _check_cancel(self) -> None:
        if self._cancel_requested():
            raise Cancelled()

    # --- one attempt ---------------------------------------------------------------------------
    def _attempt(self, option: int) -> Event:
        """Run one attempt (or re-attach to the unfinished one) and say how it ended."""
        att = self._unfinished_attempt()
        if att is not None and att.run_started:
            handle = att.handle
            self.state.event(self.job_id, "supervisor", f"re-attached to attempt {att.n}")
        else:
            if att is not None:  # died while starting it: release what it may hold, start anew
                self._end_attempt(att.n, att.handle, "PREEMPTED", "supervisor restarted while starting")
            att = self.state.add_attempt(self.job_id, handle={"option": option}, started=self.clock())
            handle = self._start(att.n, option)
            if isinstance(handle, Event):
                return handle
        return self._watch(att.n, handle)

    def _unfinished_attempt(self) -> st.Attempt | None:
        attempts = self.state.attempts(self.job_id)
        if attempts and attempts[-1].state in (st.STARTING, st.RUNNING):
            return attempts[-1]
        return None

    def _start(self, n: int, option: int) -> dict[str, Any] | Event:
        job = self.state.job(self.job_id)
        res = self.options[option]
        req = ProvisionRequest(job.run_id, n, job.infra, res, self.task.num_nodes)
        self.state.transition(self.job_id, st.STARTING, f"attempt {n}")
        try:
            handle = self.backend.provision(req)
        except NoCapacityError as e:
            self._end_attempt(n, {"option": option}, "NO_CAPACITY", str(e))
            return Event(Outcome.NO_CAPACITY, reason=str(e), option=option)
        except CredentialsError as e:  # no retry can help: the job fails now, saying why
            self._end_attempt(n, {"option": option}, "SETUP_FAILED", str(e))
            return Event(Outcome.SETUP_FAILED, reason=str(e), option=option, final=True, final_note="")
        handle["option"] = option
        self.state.set_attempt(self.job_id, n, handle=handle, host=handle.get("host", ""),
                               price_per_hour=self.backend.cost_per_hour(handle))
        try:
            self._check_cancel()
            self.backend.wait_reachable(handle, self.reach_timeout)
            self.backend.bootstrap(handle)
            self._check_cancel()
            stats = self.backend.sync_workdir(handle, self.task.resolved_workdir())
            if stats.files_sent or stats.files_skipped:
                self.state.event(self.job_id, "sync", f"attempt {n}: workdir synced, {stats.files_sent}"
                                 f" files ({stats.bytes_sent} bytes) sent, {stats.files_skipped} unchanged")
            self.backend.start_run(handle, self._run_spec(job, n, res))
        except Cancelled:
            self._end_attempt(n, handle, "CANCELLED", "cancelled while starting")
            raise
        except HostLostError as e:
            if self._cancel_requested():  # a backend may give up waiting because of the cancel
                self._end_attempt(n, handle, "CANCELLED", "cancelled while starting")
                raise Cancelled() from None
            self._end_attempt(n, handle, "PREEMPTED", str(e))
            return Event(Outcome.PREEMPTED, reason=str(e), option=option)
        except NoCapacityError as e:  # refused when starting (a Kaggle push): a wait, not a setup failure
            self._end_attempt(n, handle, "NO_CAPACITY", str(e))
            return Event(Outcome.NO_CAPACITY, reason=str(e), option=option)
        except CredentialsError as e:  # refused when starting (a Kaggle push): final, as in provision
            self._end_attempt(n, handle, "SETUP_FAILED", str(e))
            return Event(Outcome.SETUP_FAILED, reason=str(e), option=option, final=True, final_note="")
        except BackendError as e:
            self._end_attempt(n, handle, "SETUP_FAILED", str(e))
            return Event(Outcome.SETUP_FAILED, reason=str(e), option=option)
        self.state.set_attempt(self.job_id, n, handle=handle, state=st.RUNNING, run_started=self.clock())
        self.state.transition(self.job_id, st.RUNNING, f"attempt {n} on {handle.get('host', '?')}")
        return handle

    def _run_spec(self, job: st.Job, n: int, res: dict[str, Any] | None = None) -> RunSpec:
        secrets = dict(self.secrets)
        if job.store_uri.startswith("s3://"):
            secrets.update({k: os.environ[k] for k in STORE_CREDENTIAL_VARS if os.environ.get(k)})
        return RunSpec(job_id=job.run_id, attempt=n, run=self.task.run or "true", setup=self.task.setup,
                       envs=self.task.env_strings(), secrets=secrets, store_uri=job.store_uri,
                       keep_last=int(job.options.get("keep_last", 3)),
                       sync_interval=float(job.options.get("sync_interval", 5.0)),
                       accelerators=(res or {}).get("accelerators") if self.backend.preflight_accelerators else None,
                       sample_interval=float(job.options.get("sample_interval", 10.0)))

    def _watch(self, n: int, handle: dict[str, Any]) -> Event:
        option = int(handle.get("option", 0))
        drill_fired = ""
        run_started = self.state.attempt(self.job_id, n).run_started or self.clock()
        while True:
            try:
                self._check_cancel()
            except Cancelled:
                self._end_attempt(n, handle, "CANCELLED", "cancelled by launch down")
                raise
            before = json.dumps(handle, sort_keys=True)
            status = self.backend.poll(handle)
            if json.dumps(handle, sort_keys=True) != before:  # e.g. a provider's recovery count, its price
                self.state.set_attempt(self.job_id, n, handle=handle,
                                       price_per_hour=self.backend.cost_per_hour(handle))
            if status.done:
                return self._finished(n, handle, status, option, drill_fired)
            drill_fired = self._fire_due_drill(n, handle) or drill_fired
            self._update_progress()
            stalled = self.monitor.tick(n, run_started, self.state.job(self.job_id).progress)
            if stalled is not None:  # alive but hung: kill it; its last checkpoint is in the store
                self._end_attempt(n, handle, "STALLED", stalled.message)
                return Event(Outcome.STALLED, reason=stalled.message, option=option,
                             ran_for=self.clock() - run_started)
            self.sleep(self.poll_interval)

    def _finished(self, n: int, handle: dict, status: RunStatus, option: int, drill: str) -> Event:
        reason = f"fire drill {drill}: {status.reason}" if drill and status.state is RunState.PREEMPTED else status.reason
        if status.exit_code == contract.EXIT_PREFLIGHT:  # the machine lacks the task's accelerators
            reason = f"preflight: {self.monitor.preflight_reason(n) or 'the machine lacks the accelerators'}"
            self.backend.set_aside(handle, reason)
            self._end_attempt(n, handle, "SETUP_FAILED", reason, status.exit_code)
            return Event(Outcome.SETUP_FAILED, status.exit_code, reason, option)
        self._end_attempt(n, handle, status.state.value, reason, status.exit_code)
        self._update_progress(force=True)
        a = self.state.attempt(self.job_id, n)
        ran_for = (a.ended or self.clock()) - (a.run_started or self.clock())
        return Event(_STATUS_OUTCOME[status.state], status.exit_code, reason, option, ran_for, status.final)

    def _end_attempt(self, n: int, handle: dict, state: str, reason: str, exit_code: int | None = None) -> None:
        try:
            self.backend.terminate(handle)
        except BackendError as e:
            self.state.event(self.job_id, "warning", f"attempt {n}: terminate failed: {e}")
        self.state.set_attempt(self.job_id, n, state=state, reason=reason, exit_code=exit_code,
                               ended=self.clock())
        self.monitor.attempt_ended(n, state, reason, exit_code)
        self.state.event(self.job_id, "attempt", f"attempt {n} {state.lower()}: {reason}")

    # --- fire drills and progress --------------------------------------------------------------
    def _running_time(self) -> float:
        now = self.clock()
        return sum((a.ended or now) - a.run_started for a in self.state.attempts(self.job_id) if a.run_started)

    def _fire_due_drill(self, n: int, handle: dict) -> str:
        job = self.state.job(self.job_id)
        fired = int(job.options.get("chaos_fired", 0))
        if fired >= len(self.drills) or not self._drill_due(self.drills[fired], job):
            return ""
        drill = self.drills[fired]
        self.state.set_job(self.job_id, options={**job.options, "chaos_fired": fired + 1})
        self.state.event(self.job_id, "chaos", f"fire drill {drill} on attempt {n}")
        try:
            self.backend.signal(handle, drill.kind)
        except (BackendError, NotImplementedError) as e:
            self.state.event(self.job_id, "warning", f"fire drill {drill} could not be delivered: {e}")
            return ""
        return str(drill)

    def _drill_due(self, drill: chaos.Drill, job: st.Job) -> bool:
        if not drill.progress:
            return self._running_time() >= drill.at
        self._update_progress(every=self.poll_interval)  # fresher than for `launch status`
        done = fraction_done(self.state.job(self.job_id).progress or {})
        return done is not None and done >= drill.at

    def _update_progress(self, force: bool = False, every: float | None = None) -> None:
        """The last line of metrics.jsonl in the store, for `launch status` (and drills at a
        share of the training), at most once ``every`` seconds (``progress_interval``)."""
        now = self.clock()
        if not force and now - self._last_progress < (self.progress_interval if every is None else every):
            return
        self._last_progress = now
        job = self.state.job(self.job_id)
        if not job.store_uri:
            return
        try:
            from launcher.store import open_store

            store = open_store(job.store_uri)
            lines = store.get_bytes("metrics.jsonl").decode().strip().splitlines()
            if lines:
                self.state.set_job(self.job_id, progress=json.loads(lines[-1]))
        except Exception:  # progress is informative only; never let it stop the supervisor
            pass


def main(argv: list[str] | None = None) -> int:
    """``python -m launcher.supervisor JOB_ID``: run the job's supervisor unless one already is."""
    from launcher import daemon

    argv = sys.argv[1:] if argv is None else argv
    job_id = int(argv[0])
    secrets = daemon.read_secrets(sys.stdin)
    lock = daemon.acquire_lock(job_id, wait=3.0)
    if lock is None:
        return 0  # another supervisor holds the job
    state = st.State()
    job = state.job(job_id)
    if job.terminal:
        return 0
    from launcher.watch import notify

    notifier = notify.for_supervisor(state, job, secrets).start()
    try:
        sup = Supervisor(state, job_id, secrets=secrets)
        final = sup.run()
    except Exception as e:
        state.event(job_id, "error", f"supervisor crashed: {e!r}")
        raise
    finally:
        notifier.stop()
    print(f"job {job_id} {final}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
