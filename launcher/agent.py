"""The agent: runs on the machine, around one attempt of a job.

``python -m launcher.agent ATTEMPT_DIR/spec.json`` (started detached by a backend) does, in order:

1. syncs the job's latest verified checkpoint and ``metrics.jsonl`` down from the store;
2. runs ``setup`` then ``run`` (bash) with the contract's environment, output to ``run.log``;
3. while the run goes: uploads every newly committed checkpoint (files first, manifest last),
   applies retention, and uploads the log and metrics as they grow;
4. on SIGTERM (the preemption notice), at any moment from its own start-up on, forwards it to the
   run's process group, so the trainer can write its emergency checkpoint, then uploads that
   checkpoint and exits 75 (a notice before the run started: exit 75 at once, nothing to save);
5. when the run ends: a last sync, ``DONE`` in the store if it exited 0, and the exit code in
   ``ATTEMPT_DIR/exit_code`` (written atomically, last). The agent exits with the run's code.

A fire drill at a share of the training (``spec["drill"]``, see ``launcher.chaos``) is fired by
the agent itself, from the metrics on the machine: it records ``logs/attempt-N.drill`` in the
store, then delivers the notice to itself or kills the run and itself (a machine that vanished).

A store that stops answering mid-run does not stop the training: each checkpoint is held in
``queued/`` (hard links, so the trainer's own pruning cannot drop it) until it is in the store;
while the store is unreachable the newest ``keep_last`` are held, and once it answers again they
go up newest first, each manifest last. ``store.json`` says whether the store answers, since when
not, and which steps are queued (backends pass it on to `launch status`); the log says it too. A
run that exits 0 while the store is down waits up to ``STORE_WAIT_S`` for it before giving up.

Files in ATTEMPT_DIR: ``spec.json``, ``secrets.json`` (0600, optional), ``agent.pid``,
``run.pgid``, ``run.log``, ``exit_code``, ``store.json``, ``notice``, ``checkpoints/``,
``queued/``, ``outputs/``, ``hooks/`` (pause points of ``contract.hook_point``, $LAUNCH_HOOK_DIR
for the run). A backend reads only ``exit_code``, ``agent.pid``, ``run.pgid``, ``store.json`` and
``run.log``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from launcher import chaos, contract
from launcher.watch import machine as watch

SPEC_NAME = "spec.json"
SECRETS_NAME = "secrets.json"
EXIT_CODE_NAME = "exit_code"
AGENT_PID_NAME = "agent.pid"
RUN_PGID_NAME = "run.pgid"
# Written by a backend on this machine before it sends SIGTERM: a notice given in the instant
# between the agent's fork and its exec cannot be sent as a signal, the file is read at start.
NOTICE_NAME = "notice"
LOG_NAME = "run.log"
STORE_STATUS_NAME = "store.json"
QUEUE_NAME = "queued"
# How long a run that exited 0 waits at the end for a store that does not answer.
STORE_WAIT_S = 1800.0
# The agent itself failed before or around the run (store unreachable, bad spec).
EXIT_AGENT_ERROR = 70
# How often the agent looks for a newly committed checkpoint to upload (one listing of a local
# folder). A machine lost within this time of a save, or during its upload, loses that save.
CHECKPOINT_POLL_S = 0.1


def write_atomic(path: Path, text: str, mode: int | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode or 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_attempt_files(attempt_dir: Path, spec_public: dict[str, Any], secrets: dict[str, str]) -> None:
    """Write spec.json and (mode 0600, never world-readable) secrets.json into ``attempt_dir``.
    Used by backends that prepare the attempt folder locally."""
    attempt_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(attempt_dir / SPEC_NAME, json.dumps(spec_public, indent=1))
    if secrets:
        write_atomic(attempt_dir / SECRETS_NAME, json.dumps(secrets), mode=0o600)


class Agent:
    def __init__(self, attempt_dir: Path, spec: dict[str, Any], secrets: dict[str, str],
                 notice: threading.Event | None = None):
        self.dir = attempt_dir
        self.spec = spec
        self.secrets = secrets
        self.log_path = attempt_dir / LOG_NAME
        self.ckpt_dir = attempt_dir / "checkpoints"
        self.out_dir = attempt_dir / "outputs"
        self.proc: subprocess.Popen | None = None
        self.notice = notice or threading.Event()  # set by SIGTERM (main() installs it first)
        self.hook_dir = attempt_dir / "hooks"
        self.uploaded = -1  # the highest step known to be in the store
        self.resumed_step = -1  # the step this attempt started from
        self.run_started = 0.0
        self.drill = chaos.parse_drill(spec["drill"]) if spec.get("drill") else None
        self.store = None
        self.queue_dir = attempt_dir / QUEUE_NAME
        self.queued: dict[int, Path] = {}  # committed checkpoints held here until they are in the store
        self.down_since: float | None = None  # wall time the store stopped answering
        self.down_error = ""
        self._down_said = 0.0
        # On several nodes (SKYPILOT_NODE_RANK > 0 on workers) only the head node syncs
        # checkpoints and writes DONE and the exit code; each node uploads its own log.
        self.rank = int((spec.get("envs") or {}).get("SKYPILOT_NODE_RANK") or 0)
        self._log = open(self.log_path, "ab", buffering=0)

    # --- helpers -------------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        self._log.write(f"[launch] {time.strftime('%H:%M:%S')} {msg}\n".encode())

    def _open_store(self):
        uri = self.spec.get("store_uri")
        if not uri:
            return None
        # Credentials for the store come with the secrets (e.g. AWS_*), never on a command line.
        for k, v in self.secrets.items():
            if k.startswith("AWS_"):
                os.environ[k] = v
        from launcher.store import open_store

        return open_store(uri)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.spec.get("envs") or {})
        env.update(self.secrets)
        # The Python that runs the agent comes first on PATH: `python -m trainers.x` finds the
        # project's environment even when the caller never activated it.
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        env.update({
            contract.ENV_JOB_ID: self.spec["job_id"],
            contract.ENV_ATTEMPT: str(self.spec["attempt"]),
            contract.ENV_CHECKPOINT_DIR: str(self.ckpt_dir),
            contract.ENV_OUTPUT_DIR: str(self.out_dir),
            contract.ENV_HOOK_DIR: str(self.hook_dir),
            "PYTHONUNBUFFERED": "1",
        })
        if self.spec.get("store_uri"):
            env[contract.ENV_CHECKPOINT_URI] = self.spec["store_uri"].rstrip("/") + "/" + contract.CKPT_PREFIX.rstrip("/")
        if self.spec.get("deadline"):
            env[contract.ENV_DEADLINE] = str(self.spec["deadline"])
        # torchrun forwards a notice to its workers, then kills them after this many seconds:
        # give them the grace we give the run, so an emergency checkpoint is not cut short.
        env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(int(float(self.spec.get("stop_grace", 300)))))
        return env

    # --- sync ----------------------------------------------------------------------------------
    def log_key(self) -> str:
        name = contract.log_name(int(self.spec["attempt"]))
        return name if self.rank == 0 else name.replace(".log", f".rank-{self.rank}.log")

    def sync_down(self) -> None:
        from launcher import checkpoints

        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.store is None:
            return
        got = checkpoints.download_latest(self.store, self.ckpt_dir)
        if got is None:
            self.say("no checkpoint in the store yet: starting from scratch")
        else:
            self.uploaded = self.resumed_step = got[0]
            self.say(f"resuming from checkpoint step {got[0]} ({self.spec['store_uri']})")
            contract.hook_point("download", f"step {got[0]}", self.hook_dir)
        if self.store.exists(contract.METRICS_NAME):
            self.store.get_file(contract.METRICS_NAME, str(self.out_dir / contract.METRICS_NAME))
        if self.rank == 0:
            watch.record_start(self, None if got is None else got[0])

    def sync_checkpoints(self) -> None:
        """Upload the newest committed local checkpoint if the store lacks it, and then those
        held while the store was unreachable, newest first. Older ones that were superseded
        before we got to them while the store answered are skipped: retention would delete
        them anyway. A store error leaves the checkpoints held (see the module docstring)."""
        if self.store is None or self.rank != 0:
            return
        from launcher import checkpoints

        for step, path in contract.local_checkpoints(self.ckpt_dir):  # highest first
            if step <= self.uploaded or step in self.queued:
                break
            if contract.verify_checkpoint(path, check_hash=False) is not None:  # else being written
                self._hold(step, path)
                break
        done = []
        for step in sorted(self.queued, reverse=True):
            checkpoints.upload_checkpoint(self.store, self.queued[step], before_manifest=lambda: contract.hook_point(
                "upload", f"step {step}", self.hook_dir))
            self._release(step)
            done.append(step)
            self.uploaded = max(self.uploaded, step)
            left = f" ({len(self.queued)} still queued)" if self.queued else ""
            self.say(f"checkpoint step {step} uploaded{left}")
        if done:
            self._store_answered()
            checkpoints.apply_retention(self.store, keep_last=int(self.spec.get("keep_last", 3)))

    # --- checkpoints held on the machine while the store is away -------------------------------
    def _hold(self, step: int, path: Path) -> None:
        """Keep committed checkpoint ``step`` in ``queued/`` until it is in the store; while
        the store is unreachable only the newest ``keep_last`` are kept."""
        held = self.queue_dir / path.name
        if held.exists():
            shutil.rmtree(held)
        try:
            shutil.copytree(path, held, copy_function=os.link)
        except OSError:  # no hard links here (another file system): hold the trainer's folder
            shutil.rmtree(held, ignore_errors=True)
            held = path
        self.queued[step] = held
        keep = max(1, int(self.spec.get("keep_last", 3)))
        for old in sorted(self.queued, reverse=True)[keep:]:
            self._release(old)
            self.say(f"checkpoint step {old} dropped from the queue (the newest {keep} are kept)")
        if self.down_since is not None:
            self.say(f"checkpoint step {step} queued on this machine ({len(self.queued)} queued)")
            self._write_store_status()

    def _release(self, step: int) -> None:
        path = self.queued.pop(step)
        if path.parent == self.queue_dir:
            shutil.rmtree(path, ignore_errors=True)

    def _store_failed(self, err: Exception) -> None:
        """The store did not take an upload: say so (once, then every minute), the checkpoints
        stay held."""
        now = time.time()
        if self.down_since is None:
            self.down_since, self.down_error, self._down_said = now, str(err)[:300], now
            self.say(f"store unreachable ({err}): training goes on, checkpoints stay on this machine "
                     "and go up when it answers")
            for step in sorted(self.queued):
                self.say(f"checkpoint step {step} queued on this machine ({len(self.queued)} queued)")
            self._write_store_status()
        elif now - self._down_said >= 60:
            self._down_said = now
            self.say(f"store still unreachable after {now - self.down_since:.0f} s; "
                     f"{len(self.queued)} checkpoint(s) queued")

    def _store_answered(self) -> None:
        """A store call went through: the store is back (if it was away)."""
        if self.down_since is not None:
            self.say(f"store reachable again after {time.time() - self.down_since:.0f} s; "
                     f"{len(self.queued)} checkpoint(s) still queued")
            self.down_since, self.down_error = None, ""
            self._write_store_status()

    def _write_store_status(self) -> None:
        doc = {"reachable": self.down_since is None, "since": self.down_since,
               "error": self.down_error, "queued": sorted(self.queued)}
        write_atomic(self.dir / STORE_STATUS_NAME, json.dumps(doc))

    def sync_up(self, final: bool = False) -> None:
        if self.store is None:
            return
        from launcher import checkpoints

        self.sync_checkpoints()
        logs = self.store.child(contract.LOGS_PREFIX)
        sent = checkpoints.sync_file_up(logs, str(self.log_path), self.log_key())
        metrics = self.out_dir / contract.METRICS_NAME
        if self.rank == 0 and metrics.exists():
            sent = checkpoints.sync_file_up(self.store, str(metrics), contract.METRICS_NAME) or sent
        if self.rank == 0 and (self.dir / contract.SAMPLES_NAME).exists():
            sent = checkpoints.sync_file_up(self.store, str(self.dir / contract.SAMPLES_NAME),
                                            contract.SAMPLES_NAME) or sent
        if sent:
            self._store_answered()
        if final and self.rank == 0:
            outputs = self.store.child(contract.OUTPUTS_PREFIX)
            for p in sorted(self.out_dir.rglob("*")):
                if p.is_file() and p.name != contract.METRICS_NAME:
                    checkpoints.sync_file_up(outputs, str(p), p.relative_to(self.out_dir).as_posix())

    def _sync_loop(self, stop: threading.Event) -> None:
        """Checkpoints go up as soon as they are committed (a local check every
        ``CHECKPOINT_POLL_S``); the log and metrics every ``sync_interval`` seconds."""
        interval = float(self.spec.get("sync_interval", 5.0))
        last = time.monotonic()
        while not stop.wait(CHECKPOINT_POLL_S):
            try:
                if time.monotonic() - last >= interval:
                    self.sync_up()
                    last = time.monotonic()
                else:
                    self.sync_checkpoints()
            except Exception as e:  # the store away must not stop the run; the next pass retries
                self._store_failed(e)

    def _wait_group(self, pgid: int, timeout: float) -> None:
        """Wait until every process of the run's group has exited (bash may die from the notice
        while the trainer is still writing its emergency checkpoint). Orphans are reparented to
        us (we are a subreaper), so reap them as we go."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                return
            time.sleep(0.1)
        self.say(f"processes of the run still alive after {timeout:.0f} s: killing them")
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap()

    # --- run -----------------------------------------------------------------------------------
    def _on_term(self, signum, frame) -> None:
        self.notice.set()
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _bash(self, script: str, env: dict[str, str], cwd: str) -> subprocess.Popen:
        return subprocess.Popen(["bash", "-c", script], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        _become_subreaper()
        self.hook_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / AGENT_PID_NAME, str(os.getpid()))
        self.say(f"attempt {self.spec['attempt']} of job {self.spec['job_id']} on {os.uname().nodename}")
        try:
            self.store = self._open_store()
            if self.notice.is_set():
                self.say(f"preemption notice during start-up: nothing to save yet, exiting {contract.EXIT_PREEMPTED}")
                return contract.EXIT_PREEMPTED
            self.sync_down()
        except Exception as e:
            self.say(f"cannot sync from the store: {e}")
            return EXIT_AGENT_ERROR
        stop = threading.Event()
        watcher = threading.Thread(target=self._drill_loop, args=(stop,), daemon=True)
        if self.drill is not None and self.rank == 0:
            watcher.start()
        try:
            return self._run_phases()
        finally:
            stop.set()
            for p in self.hook_dir.glob("armed-*"):  # nothing may pause once nobody watches
                p.unlink(missing_ok=True)

    def _run_phases(self) -> int:
        env = self.env()
        cwd = self.spec.get("workdir") or str(self.dir)
        if watch.preflight(self, env):
            return self._finish(contract.EXIT_PREFLIGHT, "preflight")
        sampler = watch.start_sampling(self)
        try:
            return self._phases(env, cwd)
        finally:
            sampler.stop()

    def _phases(self, env: dict[str, str], cwd: str) -> int:
        for phase in ("setup", "run"):
            script = self.spec.get(phase)
            if not script:
                continue
            if self.notice.is_set():
                self.say(f"preemption notice before {phase}: exiting {contract.EXIT_PREEMPTED}")
                return contract.EXIT_PREEMPTED
            self.say(f"{phase} started")
            (self.hook_dir / contract.STOPPED_NAME).unlink(missing_ok=True)
            self.run_started = time.time()
            self.proc = self._bash(script, env, cwd)
            write_atomic(self.dir / RUN_PGID_NAME, str(self.proc.pid))
            if self.notice.is_set():  # came while it was being started: it gets it too
                killpg(self.proc.pid, signal.SIGTERM)
            stop = threading.Event()
            syncer = threading.Thread(target=self._sync_loop, args=(stop,), daemon=True)
            syncer.start()
            rc = self.proc.wait()
            self._wait_group(self.proc.pid, float(self.spec.get("stop_grace", 300)))
            stop.set()
            syncer.join()
            rc = 128 - rc if rc < 0 else rc  # killed by signal N -> 128+N, as a shell reports it
            self.say(f"{phase} exited with code {rc}")
            if rc != 0:
                return self._finish(rc, phase)
        return self._finish(0, "run")

    # --- fire drills at a share of the training ---------------------------------------------------
    def _drill_loop(self, stop: threading.Event) -> None:
        """Watch the run's own metrics until the drill is due (``chaos.drill_due``), arm its
        pause point if it has one and wait for the run to reach it, then fire it. A drill that
        goes wrong is dropped, never left holding the run at a pause point."""
        drill, armed = self.drill, False
        metrics = self.out_dir / contract.METRICS_NAME
        try:
            while not stop.wait(0.05):
                if not armed:
                    line = chaos.last_metrics_line(metrics)
                    if not chaos.drill_due(drill, line, int(self.spec["attempt"]), self._own_metrics(line)):
                        continue
                    if drill.phase:
                        write_atomic(self.hook_dir / f"armed-{drill.phase}", str(drill))
                        armed = True
                        continue
                elif not (self.hook_dir / f"at-{drill.phase}").exists():
                    continue
                self._fire_drill(drill)
                return
        except Exception as e:
            self.say(f"fire drill {drill} dropped: {e!r}")
            killpg(self.proc.pid if self.proc is not None else None, signal.SIGCONT)  # if it froze it
            for p in (*self.hook_dir.glob("armed-*"), *self.hook_dir.glob("at-*")):
                p.unlink(missing_ok=True)

    def _own_metrics(self, line: dict[str, Any] | None) -> bool:
        """For metrics without an ``attempt`` field: written by this run, past its resume step."""
        try:
            fresh = (self.out_dir / contract.METRICS_NAME).stat().st_mtime >= self.run_started > 0
        except OSError:
            return False
        return fresh and line is not None and float(line.get("step", -1)) > self.resumed_step

    def _fire_drill(self, drill: chaos.Drill) -> None:
        """Freeze the run, make sure the training has not finished meanwhile, record the drill in
        the store, then kill everything (``kill``) or give ourselves the notice (``term``)."""
        pgid = self.proc.pid if self.proc is not None else None
        killpg(pgid, signal.SIGSTOP)
        line = chaos.last_metrics_line(self.out_dir / contract.METRICS_NAME)
        at = self.hook_dir / f"at-{drill.phase}" if drill.phase else None
        # In the middle of a save the steps are all done but the final checkpoint is not yet: a
        # machine lost there loses work, so it still counts (the metrics are not asked then).
        if chaos.training_done(None if drill.phase == "save" else line, self.ckpt_dir):
            killpg(pgid, signal.SIGCONT)
            self.say(f"fire drill {drill} not fired: the training had finished")
            if at is not None:
                at.unlink(missing_ok=True)
            return
        step = (line or {}).get("step")
        where = f" mid-{drill.phase}" if drill.phase else ""
        self.say(f"fire drill {drill}: {drill.kind} at step {step}{where}")
        try:
            if self.store is not None:
                self.store.child(contract.LOGS_PREFIX).put_bytes(
                    contract.drill_name(int(self.spec["attempt"])),
                    json.dumps({"drill": str(drill), "step": step, "phase": drill.phase}).encode())
        except Exception as e:  # the drill still fires; the supervisor just cannot name it
            self.say(f"could not record the fire drill: {e}")
        if drill.kind == "kill":  # the machine vanishes: nothing more is uploaded
            killpg(pgid, signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)
        killpg(pgid, signal.SIGCONT)
        os.kill(os.getpid(), signal.SIGTERM)  # the same way in as a real notice
        if at is not None:
            at.unlink(missing_ok=True)

    def publish_exit_code(self, rc: int) -> None:
        """Also put the exit code in the store (``logs/attempt-N.exit``), for backends that
        cannot read the machine once the session is over (a notebook that timed out)."""
        if self.store is None:
            return
        try:
            from launcher import checkpoints

            logs = self.store.child(contract.LOGS_PREFIX)
            if self.rank == 0:
                logs.put_bytes(contract.exit_name(int(self.spec["attempt"])), str(rc).encode())
            checkpoints.sync_file_up(logs, str(self.log_path), self.log_key())
        except Exception as e:
            self.say(f"could not publish the exit code: {e}")

    def _finish(self, rc: int, phase: str) -> int:
        stopped = self.hook_dir / contract.STOPPED_NAME
        if rc not in (0, contract.EXIT_PREEMPTED) and stopped.exists():
            # The trainer stopped with its state saved, under a launcher that reports any
            # worker's non-zero exit as 1 (torchrun): it asked to be resumed.
            self.say(f"{phase} exited {rc} after the trainer stopped with its state saved "
                     f"({stopped.read_text(errors='replace').strip()}): a preemption")
            rc = contract.EXIT_PREEMPTED
        if self.notice.is_set() and rc != 0 and rc != contract.EXIT_PREEMPTED:
            # The run died from the notice without saying so itself (no handler): a preemption.
            self.say(f"{phase} ended by the preemption notice (code {rc})")
            rc = contract.EXIT_PREEMPTED
        # A finished run waits for a store that is away; a preempted one has no time to.
        deadline = time.monotonic() + (float(self.spec.get("store_wait", STORE_WAIT_S)) if rc == 0 else 0.0)
        while True:
            try:
                self.sync_up(final=True)
                if rc == 0 and self.store is not None and self.rank == 0:
                    self.store.put_bytes(contract.DONE_NAME, str(time.time()).encode())
                return rc
            except Exception as e:
                if time.monotonic() >= deadline or self.notice.is_set():
                    self.say(f"final upload failed: {e}")
                    if rc == 0:  # a notice meanwhile: resume from the store; else the store stayed away
                        return contract.EXIT_PREEMPTED if self.notice.is_set() else EXIT_AGENT_ERROR
                    return rc
                self._store_failed(e)
                time.sleep(5.0)


def store_note(text: str) -> str:
    """What ``store.json`` (its text) tells `launch status`: '' while the store answers."""
    try:
        doc = json.loads(text or "{}")
    except ValueError:
        return ""
    if not isinstance(doc, dict) or doc.get("reachable", True):
        return ""
    since = doc.get("since")
    when = f" since {time.strftime('%H:%M:%S', time.localtime(since))}" if isinstance(since, (int, float)) else ""
    why = f" ({doc['error']})" if doc.get("error") else ""
    queued = [int(s) for s in doc.get("queued") or []]
    steps = f" (step {', '.join(map(str, queued))})" if queued else ""
    return (f"store unreachable{when}{why}: training goes on, {len(queued)} checkpoint(s) queued "
            f"on the machine{steps}")


def killpg(pgid: int | None, sig: int) -> None:
    """Signal a process group and every process descended from it; nothing for no group, pid 1,
    or one already gone. Descendants count because some leave the group: torchrun starts each
    worker in a session of its own, and a machine that vanishes (SIGKILL) or freezes (SIGSTOP)
    takes them along. They are listed before anything is signalled, while their parents live."""
    if not pgid or pgid <= 1:
        return
    others = _descendants(pgid)
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in others:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _descendants(pgid: int) -> list[int]:
    """Processes outside group ``pgid`` whose ancestry leads into it (from /proc; none where
    there is no /proc)."""
    parent: dict[int, int] = {}
    group: dict[int, int] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        parent[int(name)], group[int(name)] = int(fields[1]), int(fields[2])
    inside = {pid for pid, g in group.items() if g == pgid}
    found: list[int] = []
    frontier = set(inside)
    while frontier:
        frontier = {pid for pid, pp in parent.items() if pp in frontier and pid not in inside
                    and pid not in found}
        found.extend(sorted(frontier))
    return found


def _become_subreaper() -> None:
    """Orphaned processes of the run get reparented to the agent instead of PID 1 (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m launcher.agent ATTEMPT_DIR/spec.json", file=sys.stderr)
        return 2
    # The notice counts from the first instant: a backend may start us with SIGTERM blocked, so
    # one sent during the interpreter's start-up waits for this handler instead of killing us.
    notice = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: notice.set())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    spec_path = Path(argv[0]).resolve()
    attempt_dir = spec_path.parent
    if (attempt_dir / NOTICE_NAME).exists():
        notice.set()
    spec = json.loads(spec_path.read_text())
    secrets_path = attempt_dir / SECRETS_NAME
    secrets = json.loads(secrets_path.read_text()) if secrets_path.exists() else {}
    agent = Agent(attempt_dir, spec, secrets, notice=notice)
    try:
        rc = agent.run()
    except Exception as e:  # never leave without an exit code: the backend would see a lost host
        agent.say(f"agent error: {e!r}")
        rc = EXIT_AGENT_ERROR
    agent.say(f"attempt finished with exit code {rc}")
    agent.publish_exit_code(rc)
    write_atomic(attempt_dir / EXIT_CODE_NAME, str(rc))
    return rc


if __name__ == "__main__":
    sys.exit(main())
