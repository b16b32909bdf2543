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

from launcher import chaos, contract, daemon, state as st
from launcher.deadline import DeadlineKeeper, Mode, mode_of, with_mode
from launcher.placement import after_outbids
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
        # Options in the order they are tried (launcher.placement), each on its own infra.
        options, n = self.task.resources.options(), len(self.task.resources.options())
        tried = job.options.get("option_order") or list(range(n))
        infras = job.options.get("option_infras") or [job.infra] * n
        self.options, self.infras = [options[i] for i in tried], [infras[i] for i in tried]
        self._backend_for, self._backends = backend_for, {}
        self.backend = self._backend_of(0)  # the current attempt's backend
        self.policy = policy_for(self.task, len(self.options))
        self.drills = chaos.parse_chaos(job.options.get("chaos"))
        self.secrets = self._secrets(secrets or {})
        self._last_progress = 0.0
        self.deadline = DeadlineKeeper.for_job(state, job, clock)  # None without --deadline
        self._deadline_at = float("-inf")
        self._store = None
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
        """Drive the job to a terminal state and return it. A restarted supervisor goes on from
        where the state says the dead one was: it re-attaches to a running attempt, abandons one
        that was starting, applies the decision of one that had ended (a back-off goes on from
        that end), and on a cancel tears down whatever attempt is still up."""
        history, option = self._history()
        try:
            pending = self._pending_decision(history)
            while True:
                if pending is None:
                    self._check_cancel()
                    event = self._attempt(option)
                    action, since = after_outbids(decide(event, history, self.policy), event, history,
                                                  len(self.options)), None
                    history.events.append(event)
                else:
                    (event, action, since), pending = pending, None
                if not action.relaunch:
                    self._unfired_drills()
                    self.state.transition(self.job_id, action.final_state, action.reason)
                    return action.final_state
                self._recover(event, action, since)
                option = action.option
        except Cancelled:
            att = self._unfinished_attempt()
            if att is not None:  # a restarted supervisor that found the cancel before attaching
                daemon.kill_point("cancel:teardown", self.job_id)
                self._end_attempt(att.n, att.handle, "CANCELLED", "cancelled by launch down")
            self.state.transition(self.job_id, st.CANCELLED, "cancelled by launch down")
            return st.CANCELLED

    def _pending_decision(self, history: History) -> tuple[Event, Action, float] | None:
        """After a restart between attempts, the decision the last attempt's end asks for, with
        the time it ended; None when there is none to apply (no attempt yet, or a run to
        re-attach to). An attempt the dead supervisor was starting is ended as a preemption
        (what it may hold released); one that had ended is torn down again, as the dead one
        may have recorded the end and died before its teardown (terminate is safe twice)."""
        attempts = self.state.attempts(self.job_id)
        if not attempts or attempts[-1].state == st.RUNNING:
            return None
        last = attempts[-1]
        self.backend = self._backend_of(int(last.handle.get("option", 0)))
        if last.state == st.STARTING:
            self._check_cancel()  # the cancel path ends it as cancelled instead
            self._end_attempt(last.n, last.handle, "PREEMPTED", "supervisor restarted while starting")
            last = self.state.attempt(self.job_id, last.n)
            history.events.append(Event(Outcome.PREEMPTED, reason=last.reason,
                                        option=int(last.handle.get("option", 0))))
        else:
            self._terminate(last.n, last.handle)
        if not history.events or last.state not in {o.value.upper() for o in Outcome}:
            return None  # e.g. CANCELLED: the loop's cancel check ends the job
        event, before = history.events[-1], History(history.events[:-1])
        action = after_outbids(decide(event, before, self.policy), event, before, len(self.options))
        return event, action, last.ended or self.clock()

    def _history(self) -> tuple[History, int]:
        """Events of attempts that ended before this supervisor started (after a restart)."""
        history, option = History(), 0
        for a in self.state.attempts(self.job_id):
            option = int(a.handle.get("option", 0))
            if a.state in {o.value.upper() for o in Outcome}:
                ran_for = (a.ended or 0.0) - a.run_started if a.run_started is not None else 0.0
                history.events.append(Event(Outcome(a.state.lower()), a.exit_code, a.reason, option, ran_for,
                                            progressed=bool(a.handle.get("progressed")),
                                            drill=bool(a.handle.get("drilled"))))
        return history, option

    def _recover(self, event: Event, action: Action, since: float | None = None) -> None:
        """Wait out the action's back-off, counted from ``since`` (the attempt's end, for a
        restarted supervisor) or from now."""
        opt = f", option {action.option + 1}/{len(self.options)}" if len(self.options) > 1 else ""
        delay = action.delay if since is None else max(0.0, since + action.delay - self.clock())
        wait = f" in {delay:.0f} s" if delay else ""
        resumed = " (the back-off goes on after a supervisor restart)" if since is not None and delay else ""
        self.state.transition(self.job_id, st.RECOVERING, action.reason)
        self.state.event(self.job_id, "recovery", f"relaunching{wait}{opt} after {action.reason}{resumed}")
        if delay > 0:
            daemon.kill_point("backoff", self.job_id)
        self._sleep(delay)

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
        """Run one attempt (or re-attach to the running one) and say how it ended."""
        att = self._unfinished_attempt()
        if att is not None:  # running (one a dead supervisor was starting is ended at restart)
            handle = att.handle
            self.backend = self._backend_of(int(handle.get("option", 0)))
            self.state.event(self.job_id, "supervisor", f"re-attached to attempt {att.n}")
        else:
            # What the attempt holds before the backend returns a handle: the job's run id lets
            # the backend find what a supervisor killed during provision left (see terminate).
            self.backend = self._backend_of(option)
            mode = self._deadline_mode()
            att = self.state.add_attempt(self.job_id, handle=self._base_handle(option, mode), started=self.clock())
            handle = self._start(att.n, option, mode)
            if isinstance(handle, Event):
                return handle
        return self._watch(att.n, handle)

    def _unfinished_attempt(self) -> st.Attempt | None:
        attempts = self.state.attempts(self.job_id)
        if attempts and attempts[-1].state in (st.STARTING, st.RUNNING):
            return attempts[-1]
        return None

    def _start(self, n: int, option: int, mode: Mode | None = None) -> dict[str, Any] | Event:
        job = self.state.job(self.job_id)
        res = self.options[option] if mode is None else with_mode(self.options[option], mode)
        req = ProvisionRequest(job.run_id, n, self.infras[option], res, self.task.num_nodes)
        self.state.transition(self.job_id, st.STARTING, f"attempt {n}")
        try:
            handle = self.backend.provision(req)
        except NoCapacityError as e:
            self._end_attempt(n, self._base_handle(option, mode), "NO_CAPACITY", str(e))
            return Event(Outcome.NO_CAPACITY, reason=str(e), option=option)
        except CredentialsError as e:  # no retry can help: the job fails now, saying why
            self._end_attempt(n, self._base_handle(option, mode), "SETUP_FAILED", str(e))
            return Event(Outcome.SETUP_FAILED, reason=str(e), option=option, final=True, final_note="")
        handle.update(self._base_handle(option, mode))
        self.state.set_attempt(self.job_id, n, handle=handle, host=handle.get("host", ""),
                               price_per_hour=self.backend.cost_per_hour(handle))
        daemon.kill_point("provisioned", self.job_id)
        try:
            self._check_cancel()
            self.backend.wait_reachable(handle, self.reach_timeout)
            self.backend.bootstrap(handle)
            self._check_cancel()
            stats = self.backend.sync_workdir(handle, self.task.resolved_workdir())
            if stats.files_sent or stats.files_skipped:
                self.state.event(self.job_id, "sync", f"attempt {n}: workdir synced, {stats.files_sent}"
                                 f" files ({stats.bytes_sent} bytes) sent, {stats.files_skipped} unchanged")
            handle["ckpt_from"] = self._store_step()
            spec = self._run_spec(job, n, res)
            if spec.drill:
                handle["drill"] = spec.drill
                self.state.event(self.job_id, "chaos", f"attempt {n}: the agent fires drill {spec.drill}")
            self.backend.start_run(handle, spec)
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
                       drill=str(d) if (d := self._agent_drill(job)) else "",
                       accelerators=(res or {}).get("accelerators") if self._preflight() else None,
                       sample_interval=float(job.options.get("sample_interval", 10.0)))

    def _preflight(self) -> bool:
        """Whether the agent checks the machine's accelerators before the run: on backends that
        rent machines, unless LAUNCH_PREFLIGHT=0 (hosts whose GPUs the check cannot see)."""
        return self.backend.preflight_accelerators and os.environ.get("LAUNCH_PREFLIGHT", "1") != "0"

    def _watch(self, n: int, handle: dict[str, Any]) -> Event:
        option = int(handle.get("option", 0))
        drill_fired = store_note = ""
        run_started = self.state.attempt(self.job_id, n).run_started or self.clock()
        while True:
            try:
                self._check_cancel()
            except Cancelled:
                daemon.kill_point("cancel:teardown", self.job_id)
                self._end_attempt(n, handle, "CANCELLED", "cancelled by launch down")
                raise
            before = json.dumps(handle, sort_keys=True)
            status = self.backend.poll(handle)
            if json.dumps(handle, sort_keys=True) != before:  # e.g. a provider's recovery count, its price
                self.state.set_attempt(self.job_id, n, handle=handle,
                                       price_per_hour=self.backend.cost_per_hour(handle))
            if status.done:
                return self._finished(n, handle, status, option, drill_fired)
            store_note = self._note_store(n, handle, status.store, store_note)
            daemon.kill_point("running", self.job_id)
            drill_fired = self._fire_due_drill(n, handle) or drill_fired
            self._update_progress()
            self._deadline_check(n, handle)
            stalled = self.monitor.tick(n, run_started, self.state.job(self.job_id).progress)
            if stalled is not None:  # alive but hung: kill it; its last checkpoint is in the store
                self._end_attempt(n, handle, "STALLED", stalled.message)
                return Event(Outcome.STALLED, reason=stalled.message, option=option,
                             ran_for=self.clock() - run_started)
            self.sleep(self.poll_interval)

    def _note_store(self, n: int, handle: dict, note: str, before: str) -> str:
        """The agent's word on a store it cannot reach, in the job's reason (`launch status`)
        and, when the store goes away or comes back, in its events; returns ``note``."""
        if note != before:
            host = handle.get("host", "?")
            self.state.set_reason(self.job_id, f"attempt {n} on {host}" + (f"; {note}" if note else ""), st.RUNNING)
            if not before:
                self.state.event(self.job_id, "store", f"attempt {n}: {note}")
            elif not note:
                self.state.event(self.job_id, "store", f"attempt {n}: the store answers again; "
                                 "the queued checkpoints go up")
        return note

    def _finished(self, n: int, handle: dict, status: RunStatus, option: int, drill: str) -> Event:
        fired = self._drill_fired_on_machine(n, handle)
        drill = fired.get("drill", drill)
        reason = f"fire drill {drill}: {status.reason}" if drill and status.state is RunState.PREEMPTED else status.reason
        if status.exit_code == contract.EXIT_PREFLIGHT:  # the machine lacks the task's accelerators
            reason = f"preflight: {self.monitor.preflight_reason(n) or 'the machine lacks the accelerators'}"
            self.backend.set_aside(handle, reason)
            self._end_attempt(n, handle, "SETUP_FAILED", reason, status.exit_code)
            return Event(Outcome.SETUP_FAILED, status.exit_code, reason, option)
        step_now = self._store_step()
        started_from = handle.get("ckpt_from")
        progressed = step_now is not None and started_from is not None and step_now > started_from
        drilled = bool(drill) and status.state is RunState.PREEMPTED
        handle.update(progressed=progressed, drilled=drilled)
        self.state.set_attempt(self.job_id, n, handle=handle)
        if handle.get("deadline_stop") and status.state is RunState.PREEMPTED:
            reason = f"deadline policy: {handle['deadline_stop']} ({status.reason})"
        self._end_attempt(n, handle, status.state.value, reason, status.exit_code)
        if fired.get("step") is not None and step_now is not None and status.state is RunState.PREEMPTED:
            redo = max(0, int(fired["step"]) - max(step_now, 0))
            held = f"step {step_now}" if step_now >= 0 else "no checkpoint"
            self.state.event(self.job_id, "chaos", f"fire drill {drill} hit attempt {n} at step {fired['step']}; "
                             f"the store holds {held}: {redo} steps to redo")
        self._update_progress(force=True)
        a = self.state.attempt(self.job_id, n)
        ran_for = (a.ended or self.clock()) - (a.run_started or self.clock())
        return Event(_STATUS_OUTCOME[status.state], status.exit_code, reason, option, ran_for, status.final,
                     progressed=progressed, drill=drilled)

    def _end_attempt(self, n: int, handle: dict, state: str, reason: str, exit_code: int | None = None) -> None:
        """Record how attempt ``n`` ended, then tear its machine down: a supervisor killed in
        between leaves an ended attempt, whose machine the restarted one (or `launch down`)
        tears down again, not a finished run to re-attach to."""
        self.state.set_attempt(self.job_id, n, state=state, reason=reason, exit_code=exit_code,
                               ended=self.clock())
        self.monitor.attempt_ended(n, state, reason, exit_code)
        self.state.event(self.job_id, "attempt", f"attempt {n} {state.lower()}: {reason}")
        daemon.kill_point(f"attempt-ended:{state.lower()}", self.job_id)
        self._terminate(n, handle)

    def _terminate(self, n: int, handle: dict) -> None:
        try:
            self.backend.terminate(handle)
        except BackendError as e:
            self.state.event(self.job_id, "warning", f"attempt {n}: terminate failed: {e}")

    # --- the deadline (launcher.deadline): spot or on demand ------------------------------------
    def _backend_of(self, option: int) -> Backend:
        infra = self.infras[option]
        if infra not in self._backends:
            self._backends[infra] = self._backend_for(infra)
        return self._backends[infra]

    def _base_handle(self, option: int, mode: Mode | None) -> dict[str, Any]:
        base = {"option": option, "infra": self.infras[option], "run_id": self.state.job(self.job_id).run_id}
        return base if mode is None else {**base, "mode": mode.value}

    def _deadline_mode(self) -> Mode | None:
        """Spot or on demand for the next attempt; waits while the policy says to wait for spot."""
        if self.deadline is None:
            return None
        while True:
            attempts = self.state.attempts(self.job_id)
            choice = self.deadline.choose(mode_of(attempts[-1].handle, moving=True) if attempts else Mode.NONE)
            if choice.mode is not Mode.NONE:
                return choice.mode
            self._sleep(max(self.poll_interval, 30.0))

    def _deadline_check(self, n: int, handle: dict[str, Any]) -> None:
        """While a run goes on: when the policy moves the job (spot -> on demand near the deadline,
        on demand -> spot once ahead), give the run a preemption notice; it saves and exits."""
        if self.deadline is None or handle.get("deadline_stop") or \
                self.clock() - self._deadline_at < self.progress_interval:
            return
        self._deadline_at = self.clock()
        mode = mode_of(handle)
        choice = self.deadline.choose(mode)
        if choice.mode in (mode, Mode.NONE):
            return
        handle["deadline_stop"] = f"to {choice.mode.value.replace('_', ' ')}: {choice.reason}"
        handle["deadline_to"] = choice.mode.value
        self.state.set_attempt(self.job_id, n, handle=handle)
        self.state.event(self.job_id, "deadline", f"attempt {n}: moving {handle['deadline_stop']}")
        try:
            self.backend.signal(handle, "term")
        except (BackendError, NotImplementedError):
            self.backend.terminate(handle)

    # --- fire drills and progress --------------------------------------------------------------
    def _running_time(self) -> float:
        now = self.clock()
        return sum((a.ended or now) - a.run_started for a in self.state.attempts(self.job_id) if a.run_started)

    def _pending_drill(self, job: st.Job) -> chaos.Drill | None:
        fired = int(job.options.get("chaos_fired", 0))
        return self.drills[fired] if fired < len(self.drills) else None

    def _agent_drill(self, job: st.Job) -> chaos.Drill | None:
        """The pending drill if the agent on the machine fires it (a share of the training, on a
        backend whose agent does, one node, a store to record it in)."""
        drill = self._pending_drill(job)
        if drill is None or not drill.progress or not self.backend.agent_drills:
            return None
        return drill if self.task.num_nodes == 1 and job.store_uri else None

    def _drill_fired_on_machine(self, n: int, handle: dict) -> dict[str, Any]:
        """The drill the attempt's agent recorded in the store (``logs/attempt-N.drill``), now
        counted as fired; {} when it fired none."""
        if not handle.get("drill") or self._job_store() is None:
            return {}
        try:
            from launcher import contract

            fired = json.loads(self._job_store().child(contract.LOGS_PREFIX).get_bytes(contract.drill_name(n)))
        except Exception:  # not fired (or unreadable): it stays pending for the next attempt
            return {}
        job = self.state.job(self.job_id)
        if job.options.get("chaos_counted") != n:  # once, even if a restarted supervisor asks again
            self.state.set_job(self.job_id, options={**job.options, "chaos_counted": n,
                                                     "chaos_fired": int(job.options.get("chaos_fired", 0)) + 1})
            where = f" mid-{fired['phase']}" if fired.get("phase") else ""
            self.state.event(self.job_id, "chaos", f"fire drill {fired.get('drill')} on attempt {n}, "
                             f"at step {fired.get('step')}{where}")
        return fired

    def _unfired_drills(self) -> None:
        job = self.state.job(self.job_id)
        left = self.drills[int(job.options.get("chaos_fired", 0)):]
        if left:
            self.state.event(self.job_id, "chaos", f"fire drills not fired (the training ended first): "
                             f"{chaos.format_chaos(left)}")

    def _job_store(self):
        if self._store is None and self.state.job(self.job_id).store_uri:
            from launcher.store import open_store

            self._store = open_store(self.state.job(self.job_id).store_uri)
        return self._store

    def _store_step(self) -> int | None:
        """The newest checkpoint in the job's store (-1: none yet; None: no store or unreadable)."""
        try:
            from launcher import checkpoints

            store = self._job_store()
            if store is None:
                return None
            latest = checkpoints.latest_checkpoint(store)
            return latest.step if latest is not None else -1
        except Exception:
            return None

    def _fire_due_drill(self, n: int, handle: dict) -> str:
        job = self.state.job(self.job_id)
        fired = int(job.options.get("chaos_fired", 0))
        if handle.get("drill") or fired >= len(self.drills) or not self._drill_due(self.drills[fired], job, n):
            return ""
        drill = self.drills[fired]
        self.state.set_job(self.job_id, options={**job.options, "chaos_fired": fired + 1})
        where = f" (at its share: only the local agent pauses mid-{drill.phase})" if drill.phase else ""
        self.state.event(self.job_id, "chaos", f"fire drill {drill} on attempt {n}{where}")
        try:
            self.backend.signal(handle, drill.kind)
        except (BackendError, NotImplementedError) as e:
            self.state.event(self.job_id, "warning", f"fire drill {drill} could not be delivered: {e}")
            return ""
        return str(drill)

    def _drill_due(self, drill: chaos.Drill, job: st.Job, n: int) -> bool:
        """A drill in running time, or (where the agent does not fire it) at a share, read from
        the metrics in the store: once this attempt wrote them, before the last step."""
        if not drill.progress:
            return self._running_time() >= drill.at
        self._update_progress(every=self.poll_interval)  # fresher than for `launch status`
        line = self.state.job(self.job_id).progress or {}
        done = fraction_done(line)
        mine = line.get("attempt", n) == n
        return done is not None and mine and drill.at <= done < 1.0

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
    argv = sys.argv[1:] if argv is None else argv
    job_id = int(argv[0])
    secrets = daemon.read_secrets(sys.stdin)
    lock = daemon.acquire_lock(job_id, wait=3.0)
    if lock is None:
        return 0  # another supervisor holds the job
    daemon.arm_kill_points()
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
