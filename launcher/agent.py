"""The agent: runs on the machine, around one attempt of a job.

``python -m launcher.agent ATTEMPT_DIR/spec.json`` (started detached by a backend) does, in order:

1. syncs the job's latest verified checkpoint and ``metrics.jsonl`` down from the store;
2. runs ``setup`` then ``run`` (bash) with the contract's environment, output to ``run.log``;
3. while the run goes: uploads every newly committed checkpoint (files first, manifest last),
   applies retention, and uploads the log and metrics as they grow;
4. on SIGTERM (the preemption notice) forwards it to the run's process group, so the trainer can
   write its emergency checkpoint, then uploads that checkpoint;
5. when the run ends: a last sync, ``DONE`` in the store if it exited 0, and the exit code in
   ``ATTEMPT_DIR/exit_code`` (written atomically, last). The agent exits with the run's code.

Files in ATTEMPT_DIR: ``spec.json``, ``secrets.json`` (0600, optional), ``agent.pid``,
``run.pgid``, ``run.log``, ``exit_code``, ``checkpoints/``, ``outputs/``. A backend reads only
``exit_code``, ``agent.pid``, ``run.pgid`` and ``run.log``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from launcher import contract
from launcher.watch import machine as watch

SPEC_NAME = "spec.json"
SECRETS_NAME = "secrets.json"
EXIT_CODE_NAME = "exit_code"
AGENT_PID_NAME = "agent.pid"
RUN_PGID_NAME = "run.pgid"
LOG_NAME = "run.log"
# The agent itself failed before or around the run (store unreachable, bad spec).
EXIT_AGENT_ERROR = 70


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
    def __init__(self, attempt_dir: Path, spec: dict[str, Any], secrets: dict[str, str]):
        self.dir = attempt_dir
        self.spec = spec
        self.secrets = secrets
        self.log_path = attempt_dir / LOG_NAME
        self.ckpt_dir = attempt_dir / "checkpoints"
        self.out_dir = attempt_dir / "outputs"
        self.proc: subprocess.Popen | None = None
        self.notice = threading.Event()
        self.uploaded = -1  # the highest step known to be in the store
        self.store = None
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
            "PYTHONUNBUFFERED": "1",
        })
        if self.spec.get("store_uri"):
            env[contract.ENV_CHECKPOINT_URI] = self.spec["store_uri"].rstrip("/") + "/" + contract.CKPT_PREFIX.rstrip("/")
        if self.spec.get("deadline"):
            env[contract.ENV_DEADLINE] = str(self.spec["deadline"])
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
            self.uploaded = got[0]
            self.say(f"resuming from checkpoint step {got[0]} ({self.spec['store_uri']})")
        if self.store.exists(contract.METRICS_NAME):
            self.store.get_file(contract.METRICS_NAME, str(self.out_dir / contract.METRICS_NAME))
        if self.rank == 0:
            watch.record_start(self, None if got is None else got[0])

    def sync_checkpoints(self) -> None:
        """Upload the newest committed local checkpoint if the store lacks it. Older ones that
        were superseded before we got to them are skipped: retention would delete them anyway."""
        if self.store is None or self.rank != 0:
            return
        from launcher import checkpoints

        for step, path in contract.local_checkpoints(self.ckpt_dir):  # highest first
            if step <= self.uploaded:
                return
            if contract.verify_checkpoint(path, check_hash=False) is None:
                continue  # still being written
            checkpoints.upload_checkpoint(self.store, path)
            self.uploaded = step
            self.say(f"checkpoint step {step} uploaded")
            checkpoints.apply_retention(self.store, keep_last=int(self.spec.get("keep_last", 3)))
            return

    def sync_up(self, final: bool = False) -> None:
        if self.store is None:
            return
        from launcher import checkpoints

        self.sync_checkpoints()
        logs = self.store.child(contract.LOGS_PREFIX)
        checkpoints.sync_file_up(logs, str(self.log_path), self.log_key())
        metrics = self.out_dir / contract.METRICS_NAME
        if self.rank == 0 and metrics.exists():
            checkpoints.sync_file_up(self.store, str(metrics), contract.METRICS_NAME)
        if self.rank == 0 and (self.dir / contract.SAMPLES_NAME).exists():
            checkpoints.sync_file_up(self.store, str(self.dir / contract.SAMPLES_NAME), contract.SAMPLES_NAME)
        if final and self.rank == 0:
            outputs = self.store.child(contract.OUTPUTS_PREFIX)
            for p in sorted(self.out_dir.rglob("*")):
                if p.is_file() and p.name != contract.METRICS_NAME:
                    checkpoints.sync_file_up(outputs, str(p), p.relative_to(self.out_dir).as_posix())

    def _sync_loop(self, stop: threading.Event) -> None:
        """Checkpoints go up as soon as they are committed (a local check every 0.5 s); the log
        and metrics every ``sync_interval`` seconds."""
        interval = float(self.spec.get("sync_interval", 5.0))
        last = time.monotonic()
        while not stop.wait(0.5):
            try:
                if time.monotonic() - last >= interval:
                    self.sync_up()
                    last = time.monotonic()
                else:
                    self.sync_checkpoints()
            except Exception as e:  # a store hiccup must not kill the run; the next pass retries
                self.say(f"upload failed, will retry: {e}")

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
        write_atomic(self.dir / AGENT_PID_NAME, str(os.getpid()))
        self.say(f"attempt {self.spec['attempt']} of job {self.spec['job_id']} on {os.uname().nodename}")
        try:
            self.store = self._open_store()
            self.sync_down()
        except Exception as e:
            self.say(f"cannot sync from the store: {e}")
            return EXIT_AGENT_ERROR
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
                return contract.EXIT_PREEMPTED
            self.say(f"{phase} started")
            self.proc = self._bash(script, env, cwd)
            write_atomic(self.dir / RUN_PGID_NAME, str(self.proc.pid))
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
        if self.notice.is_set() and rc != 0 and rc != contract.EXIT_PREEMPTED:
            # The run died from the notice without saying so itself (no handler): a preemption.
            self.say(f"{phase} ended by the preemption notice (code {rc})")
            rc = contract.EXIT_PREEMPTED
        try:
            self.sync_up(final=True)
            if rc == 0 and self.store is not None and self.rank == 0:
                self.store.put_bytes(contract.DONE_NAME, str(time.time()).encode())
        except Exception as e:
            self.say(f"final upload failed: {e}")
            if rc == 0:
                rc = EXIT_AGENT_ERROR
        return rc


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
    spec_path = Path(argv[0]).resolve()
    attempt_dir = spec_path.parent
    spec = json.loads(spec_path.read_text())
    secrets_path = attempt_dir / SECRETS_NAME
    secrets = json.loads(secrets_path.read_text()) if secrets_path.exists() else {}
    agent = Agent(attempt_dir, spec, secrets)
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
