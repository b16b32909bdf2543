"""What the CLI's job commands do, as a library: submit, cancel, describe.

Precedence everywhere: command-line flag > environment > task YAML > default.
- infra: ``--infra`` > ``LAUNCH_INFRA`` > ``resources.infra`` > ``local``
- store: ``--store`` > ``LAUNCH_STORE`` > the task's ``/checkpoints`` storage mount > ``file://$LAUNCH_HOME/store``
- envs:  ``--env KEY=VALUE`` > the task's ``envs``
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher import chaos, daemon, placement, state as st, task_rules
from launcher.contract import CHECKPOINT_MOUNT
from launcher.errors import InfraError, LaunchError, TaskError
from launcher.watch.monitor import read_summary

if TYPE_CHECKING:
    from launcher.task import Task
# launcher.task (pydantic) and task_checks are imported where a task is read, so that
# `launch status` (describe) starts without them.


@dataclass
class Submission:
    task: Task
    infra: str
    store_root: str
    envs: dict[str, str]
    chaos: str
    name: str
    secrets: dict[str, str]
    option_infras: list[str] | None = None  # the infra of each resources option, in the YAML's order


def resolve_secrets(task: Task, flags: tuple[str, ...] = ()) -> dict[str, str]:
    """Secret values: ``--secret KEY=VALUE`` > the environment's KEY > the YAML's value.
    They are handed to the supervisor in memory and never written to the state."""
    from launcher.task import parse_env_overrides

    given = parse_env_overrides(flags, what="--secret")
    unknown = sorted(set(given) - set(task.secrets))
    if unknown:
        raise TaskError(f"--secret {unknown[0]}: the task declares no such secret "
                        f"(declared: {', '.join(task.secrets) or 'none'})")
    out = {}
    for key, value in task.secret_strings().items():
        v = given.get(key) or os.environ.get(key) or value
        if not v:
            raise TaskError(f"secret {key} has no value: pass --secret {key}=VALUE or set {key} "
                            "in your environment")
        out[key] = v
    return out


def redacted_yaml(task: Task) -> str:
    """The task as YAML with every secret value removed: what the state keeps."""
    import yaml

    doc = task.model_dump(exclude_none=True, exclude_defaults=False)
    doc["secrets"] = {k: None for k in task.secrets}
    return yaml.safe_dump(doc, sort_keys=False)


def resolve_infra(task: Task, flag: str | None) -> str:
    if flag:
        return flag
    if os.environ.get("LAUNCH_INFRA"):
        return os.environ["LAUNCH_INFRA"]
    if task.resources.infra:
        return task.resources.infra
    infras = dict.fromkeys(placement.option_infras(task, placement.default_infra(task)))
    return ",".join(infras)  # several: each option runs on its own (launcher.placement)


def default_store() -> str:
    return (st.launch_home() / "store").resolve().as_uri()


def resolve_store(task: Task, flag: str | None) -> str:
    origin = "store"
    if flag:
        uri = flag
    elif os.environ.get("LAUNCH_STORE"):
        uri = os.environ["LAUNCH_STORE"]
    elif (m := task.checkpoint_mount()) is not None and isinstance(m.source, str):
        uri, origin = m.source, f"{task.path}: file_mounts.{CHECKPOINT_MOUNT}.source"
    else:
        return default_store()
    if uri.startswith("/") or uri.startswith("~"):
        uri = Path(uri).expanduser().resolve().as_uri()
    if not (uri.startswith("file://") or uri.startswith("s3://")):
        raise TaskError(f"{origin} {uri!r}: expected s3://bucket/prefix or file:///path")
    return uri.rstrip("/")


def check_store(uri: str) -> None:
    """Fail early, before anything is rented, if the store cannot be written."""
    if uri.startswith("file://"):
        path = Path(uri[len("file://"):])
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LaunchError(f"store {uri}: cannot create {path}: {e.strerror}") from None
        if not os.access(path, os.W_OK):
            raise LaunchError(f"store {uri}: {path} is not writable")
        return
    from launcher.store import check_writable

    check_writable(uri)


def _checked_infra(infra: str | None) -> str | None:
    """An infra given on the command line or in LAUNCH_INFRA, held to the YAML's rule."""
    if infra:
        try:
            task_rules.infra(infra)
        except ValueError as e:
            raise TaskError(f"infra: {e}") from None
    return infra


def prepare(task_path: str, *, infra: str | None = None, store: str | None = None,
            envs: tuple[str, ...] = (), chaos_spec: str | None = None, name: str | None = None,
            secrets: tuple[str, ...] = ()) -> Submission:
    from launcher.task import load_task, parse_env_overrides
    from launcher.task_checks import check_local_paths, check_placement

    overrides = parse_env_overrides(envs)
    task = load_task(task_path, env_overrides=overrides)
    if not task.run:
        raise TaskError(f"{task_path}: the task has no 'run' command")
    check_local_paths(task)
    if task.workdir:  # relative to where `launch up` runs, as in SkyPilot; fixed now for later
        task.workdir = task.resolved_workdir()
    drills = chaos.parse_chaos(chaos_spec)
    resolved_infra = resolve_infra(task, infra)
    forced = _checked_infra(infra or os.environ.get("LAUNCH_INFRA"))
    check_placement(task, forced)
    if resolved_infra == "local" and task.num_nodes > 1:
        raise InfraError(f"{task_path}: num_nodes={task.num_nodes} needs several machines; "
                         "use --infra ssh/<pool> or a cloud")
    if name is not None and not name.replace("-", "").replace("_", "").isalnum():
        raise TaskError(f"--name {name!r}: use letters, digits, '-' and '_'")
    return Submission(task=task, infra=resolved_infra, store_root=resolve_store(task, store),
                      envs=overrides, chaos=chaos.format_chaos(drills),
                      name=name or task.display_name, secrets=resolve_secrets(task, secrets),
                      option_infras=placement.option_infras(task, placement.default_infra(task), forced))


def deadline_options(deadline: str | None, estimate: str | None, now: float | None = None) -> dict[str, Any]:
    """``--deadline``/``--estimate`` as job options (epoch seconds, seconds); TaskError when bad."""
    from launcher.deadline import parse_deadline, parse_duration

    if deadline is None:
        if estimate is not None:
            raise TaskError("--estimate needs --deadline (it is the running time the deadline policy starts from)")
        return {}
    now = time.time() if now is None else now
    out: dict[str, Any] = {"deadline": parse_deadline(deadline, now), "deadline_start": now}
    if estimate is not None:
        out["estimate"] = parse_duration(estimate, "--estimate")
    return out


def submit(sub: Submission, state: st.State, *, options: dict[str, Any] | None = None) -> st.Job:
    """Record the job and start its supervisor; returns at once."""
    from launcher.backends import get_backend

    infras = sub.option_infras or [sub.infra]
    for infra in dict.fromkeys(infras):
        get_backend(infra)  # unknown infra or missing SDK: fail now, not in the background
    check_store(sub.store_root)
    opts = {"envs": sub.envs, "chaos": sub.chaos, **(options or {})}
    if len(set(infras)) > 1:
        opts["option_infras"] = infras
    if sub.task.resources.any_of and len(infras) > 1:  # cheapest first, fixed for the job's life
        quotes = placement.quote_options(sub.task, infras)
        opts["option_order"] = placement.order(sub.task, quotes)
        opts["option_quotes"] = [q.to_dict() for q in quotes]
    job = state.create_job(name=sub.name, task_path=sub.task.path and str(Path(sub.task.path).resolve()),
                           task_yaml=redacted_yaml(sub.task), infra=sub.infra,
                           store_uri=sub.store_root, options=opts)
    daemon.spawn_supervisor(job.id, sub.secrets)
    return job


def cancel(state: st.State, job_id: int | str, timeout: float = 120.0) -> st.Job:
    """Ask the job's supervisor to stop and tear down; without a live supervisor, do it here.
    Returns once the job is CANCELLED (or had already ended)."""
    job = state.job(job_id)
    if job.terminal:
        return job
    state.transition(job.id, st.CANCELLING, "launch down")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = state.job(job.id)
        if job.terminal:
            return job
        if not daemon.is_supervised(job.id):
            return _cancel_here(state, job)
        time.sleep(0.2)
    raise LaunchError(f"job {job.id}: the supervisor did not finish tearing down in {timeout:.0f} s; "
                      f"run `launch down {job.id}` again")


def _cancel_here(state: st.State, job: st.Job) -> st.Job:
    from launcher.backends import get_backend

    lock = daemon.acquire_lock(job.id, wait=3.0)
    if lock is None:  # a supervisor came back meanwhile; it will see CANCELLING
        return state.job(job.id)
    try:
        attempts = state.attempts(job.id)
        for a in attempts:
            if a.state in (st.STARTING, st.RUNNING):
                get_backend(a.handle.get("infra") or job.infra).terminate(a.handle)
                state.set_attempt(job.id, a.n, state=st.CANCELLED, reason="cancelled by launch down",
                                  ended=time.time())
            elif a is attempts[-1]:  # its end recorded by a supervisor that died before the teardown
                get_backend(a.handle.get("infra") or job.infra).terminate(a.handle)  # safe twice
        state.transition(job.id, st.CANCELLED, "cancelled by launch down")
    finally:
        lock.close()
    return state.job(job.id)


def estimate(job: st.Job, attempts: list[st.Attempt], now: float | None = None) -> dict[str, Any] | None:
    """Fraction done and what is left, from the job's progress and its running time so far;
    with sessions of a fixed length (a handle's ``session.usable_s``), the sessions still needed."""
    from launcher.progress import estimate_left

    now = now or time.time()
    run_s = sum((a.ended or now) - a.run_started for a in attempts if a.run_started is not None)
    usable = next((a.handle["session"].get("usable_s") for a in reversed(attempts)
                   if isinstance(a.handle.get("session"), dict)), None)
    est = estimate_left(job.progress, run_seconds=run_s, usable_s=float(usable or 1e12))
    if est is not None:
        est["run_hours"] = round(run_s / 3600.0, 3)
        if usable:
            est["session_hours"] = round(float(usable) / 3600.0, 2)
            est["sessions_used"] = sum(1 for a in attempts if a.run_started is not None)
        else:
            est.pop("sessions_left", None)
    return est


def describe(state: st.State, job: st.Job) -> dict[str, Any]:
    attempts = state.attempts(job.id)
    return {
        "id": job.id, "run_id": job.run_id, "name": job.name, "state": job.state, "reason": job.reason,
        "infra": job.infra, "store": job.store_uri, "task": job.task_path, "created": job.created,
        "ended": job.ended, "progress": job.progress,
        "estimate": None if job.terminal else estimate(job, attempts),
        "cost": round(sum(a.cost() for a in attempts), 6),
        "deadline": ({"deadline": job.options["deadline"], "status": job.options.get("deadline_status")}
                     if job.options.get("deadline") else None),
        "attempts": [{**a.to_dict(), "infra": a.handle.get("infra", job.infra), "mode": a.handle.get("mode")}
                     for a in attempts],
        # The supervisor's last look (launcher.watch.monitor): GPU sample, steps/s, alerts.
        "watch": read_summary(job.id),
    }
