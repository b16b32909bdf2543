"""The script a launch kernel runs on Kaggle: bootstrap one attempt of a job, then watch it.

``launcher.backends.kaggle.kernel`` fills in ``CONFIG`` below for each attempt (the job's public
spec, the store URI, the code bundles' keys, the *names* of the secrets to read, the session
limit) and pushes the result as a new kernel version. It holds no secret value. The script uses the
standard library and boto3 only (installed if the image lacks it): it runs before our code is there.

In order:

1. The session starts now: the deadline is ``now + session_limit - margin``.
2. The store credentials and the task's secrets are read by name from the user's Kaggle secrets
   (``kaggle_secrets``, attached to the notebook), or the store credentials come in ``CONFIG``
   (``LAUNCH_KAGGLE_CREDENTIALS=temporary``: short-lived, limited to the job's prefix). Their
   values go into this process's S3 client and a 0600 ``secrets.json`` for the agent, nowhere
   else. A *check* version (``check_only``) stops after reading the names.
3. The code bundles are downloaded from the store and unpacked; ``spec.json`` gets the deadline.
4. ``logs/attempt-N.started`` goes into the store (start time, deadline) for the launcher.
5. ``python -m launcher.agent spec.json`` runs the attempt (checkpoints down, run, uploads); its
   log is copied to this kernel's output. Shortly after the deadline (a quarter of the margin, at
   most a minute) the agent gets SIGTERM (the notice: the run checkpoints and exits 75), for
   trainers that do not watch ``LAUNCH_DEADLINE`` themselves.
   Every ``control_interval`` seconds ``logs/attempt-N.control`` is read: ``term`` or ``cancel``
   sends SIGTERM, ``kill`` kills everything at once and leaves no exit code (a fire drill: the
   machine vanishes).
6. Exit 0 when the attempt succeeded or stopped for a relaunch, the run's code when it failed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

CONFIG: dict = {}  # filled in by launcher.backends.kaggle.kernel

EXIT_PREEMPTED = 75
EXIT_BOOTSTRAP = 70  # the launcher's "agent error": the attempt could not be set up


class BootstrapError(Exception):
    """The session cannot run the attempt; the message says what the user must fix."""


def say(msg: str) -> None:
    print(f"[launch-kernel] {time.strftime('%H:%M:%S')} {msg}", flush=True)


def read_secrets(names: list[str], optional: list[str]) -> dict[str, str]:
    """The values of the user's Kaggle secrets ``names`` (those in ``optional`` may be missing)."""
    try:
        from kaggle_secrets import UserSecretsClient
    except ImportError:
        raise BootstrapError("kaggle_secrets is not available: this script runs in a Kaggle kernel") from None
    client = UserSecretsClient()
    out, missing = {}, []
    for name in names:
        try:
            value = client.get_secret(name)
        except Exception:
            value = None
        if value:
            out[name] = value
        elif name not in optional:
            missing.append(name)
    if missing:
        raise BootstrapError(
            f"Kaggle secrets not found for this notebook: {', '.join(missing)}. Add each under "
            "Add-ons > Secrets with the value it has where you run `launch`, and attach it to this "
            "notebook; then relaunch.")
    return out


def ensure_boto3() -> None:
    try:
        import boto3  # noqa: F401
    except ImportError:
        say("installing boto3")
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "boto3"])


class Store:
    """The job's prefix in S3: just what the bootstrap needs."""

    def __init__(self, uri: str, env: dict[str, str], secrets: dict[str, str]):
        import boto3
        from botocore.config import Config

        bucket, _, prefix = uri[len("s3://"):].partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ("us-east-1" if endpoint else None)
        self.client = boto3.client(
            "s3", endpoint_url=endpoint, region_name=region,
            aws_access_key_id=secrets.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=secrets.get("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=secrets.get("AWS_SESSION_TOKEN"),
            config=Config(request_checksum_calculation="when_required",
                          response_checksum_validation="when_required",
                          s3={"addressing_style": "path"} if endpoint else {}))

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def download(self, key: str, path: Path) -> None:
        self.client.download_file(self.bucket, self._key(key), str(path))


def unpack(store: Store, bundles: list[dict], root: Path) -> None:
    """Download each bundle and unpack it into ``root/<into>``."""
    for b in bundles:
        dest = root / b["into"]
        dest.mkdir(parents=True, exist_ok=True)
        archive = root / Path(b["key"]).name
        store.download(b["key"], archive)
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:
                tar.extractall(dest)
        archive.unlink()
        say(f"unpacked {b['key']} into {dest}")


def write_attempt(config: dict, root: Path, secrets: dict[str, str], deadline: float) -> Path:
    """spec.json (with the deadline and the workdir) and the 0600 secrets.json; returns the
    spec's path."""
    attempt_dir = root / f"attempt-{config['attempt']}"
    attempt_dir.mkdir(parents=True, exist_ok=True)
    spec = dict(config["spec"])
    spec["deadline"] = deadline
    spec["workdir"] = str(root / config["workdir"]) if config.get("workdir") else None
    (attempt_dir / "spec.json").write_text(json.dumps(spec, indent=1))
    fd = os.open(attempt_dir / "secrets.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(secrets, f)
    return attempt_dir / "spec.json"


def start_agent(spec_path: Path, pythonpath: list[str]) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*pythonpath, *filter(None, [env.get("PYTHONPATH")])])
    with open(spec_path.parent / "agent.out", "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "launcher.agent", str(spec_path)],
                                cwd=str(spec_path.parent), env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _killpg(pgid: int | None, sig: int) -> None:
    if pgid and pgid > 1:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class Watcher:
    """Supervises the agent inside the session (see step 5 of the module docstring)."""

    def __init__(self, proc: subprocess.Popen, store: Store, attempt: int, attempt_dir: Path,
                 notice_at: float, control_interval: float, clock=time.time, sleep=time.sleep):
        self.proc, self.store, self.attempt_dir = proc, store, attempt_dir
        self.control_key = f"logs/attempt-{attempt}.control"
        self.notice_at, self.control_interval = notice_at, control_interval
        self.clock, self.sleep = clock, sleep
        self.noticed = False
        self._log_pos = 0

    def notice(self, why: str) -> None:
        if not self.noticed:
            say(f"{why}: SIGTERM to the run (it checkpoints and stops)")
            self.proc.send_signal(signal.SIGTERM)
            self.noticed = True

    def kill(self) -> None:
        say("fire drill: killing the attempt without notice")
        try:
            pgid = int((self.attempt_dir / "run.pgid").read_text().strip())
        except (OSError, ValueError):
            pgid = None
        _killpg(self.proc.pid, signal.SIGKILL)
        _killpg(pgid, signal.SIGKILL)
        self.proc.wait()

    def copy_log(self) -> None:
        try:
            with open(self.attempt_dir / "run.log", "rb") as f:
                f.seek(self._log_pos)
                chunk = f.read()
        except OSError:
            return
        if chunk:
            self._log_pos += len(chunk)
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()

    def control(self) -> str:
        try:
            return (self.store.get(self.control_key) or b"").decode().strip()
        except Exception as e:  # a store hiccup: look again next time
            say(f"cannot read {self.control_key}: {type(e).__name__}")
            return ""

    def run(self) -> int | None:
        """The agent's exit code, or None when a ``kill`` drill ended it."""
        next_control = 0.0
        while self.proc.poll() is None:
            self.copy_log()
            now = self.clock()
            if now >= self.notice_at:
                self.notice("session deadline passed")
            if now >= next_control:
                next_control = now + self.control_interval
                word = self.control()
                if word == "kill":
                    self.kill()
                    return None
                if word in ("term", "cancel"):
                    self.notice(f"{word} requested by the launcher")
            self.sleep(0.2)
        self.copy_log()
        return self.proc.returncode


def fail_attempt(store: Store, attempt: int, message: str) -> None:
    """Tell the launcher through the store that this attempt could not start."""
    try:
        store.put(f"logs/attempt-{attempt}.log", f"[launch-kernel] {message}\n".encode())
        store.put(f"logs/attempt-{attempt}.exit", str(EXIT_BOOTSTRAP).encode())
    except Exception as e:
        say(f"could not report the failure to the store: {type(e).__name__}")


def check(config: dict) -> int:
    """A check version: read the secret names and say whether all are attached (exit 0 or 1)."""
    try:
        read_secrets(config["secret_names"], config.get("optional_secrets", []))
    except BootstrapError as e:
        say(str(e))
        return 1
    say(f"all {len(config['secret_names'])} secrets are attached to this notebook")
    return 0


def main(config: dict) -> int:
    if config.get("check_only"):
        return check(config)
    started = time.time()
    n = int(config["attempt"])
    deadline = started + float(config["session_limit"]) - float(config["margin"])
    root = Path(tempfile.gettempdir()) / "launch"
    say(f"attempt {n} of job {config['job_id']}: session limit {config['session_limit']:.0f} s, "
        f"the run stops by {time.strftime('%H:%M:%S', time.localtime(deadline))}")
    try:
        secrets = read_secrets(config["secret_names"], config.get("optional_secrets", []))
    except BootstrapError as e:
        say(str(e))
        return 1
    # Short-lived store credentials that the launcher put into this private kernel, when it did.
    secrets.update(config.get("store_credentials") or {})
    os.environ.update(config.get("store_env") or {})
    ensure_boto3()
    store = Store(config["store_uri"], config.get("store_env") or {}, secrets)
    try:
        unpack(store, config["bundles"], root)
        spec_path = write_attempt(config, root, secrets, deadline)
        store.put(f"logs/attempt-{n}.started", json.dumps(
            {"started": started, "deadline": deadline, "host": socket.gethostname()}).encode())
    except Exception as e:
        say(f"bootstrap failed: {type(e).__name__}: {e}")
        fail_attempt(store, n, f"kernel bootstrap failed: {type(e).__name__}: {e}")
        return 1
    proc = start_agent(spec_path, [str(root / p) for p in config["pythonpath"]])
    # A trainer that watches LAUNCH_DEADLINE stops by itself; the notice comes a little later.
    notice_at = deadline + min(0.25 * float(config["margin"]), 60.0)
    rc = Watcher(proc, store, n, spec_path.parent, notice_at, float(config["control_interval"])).run()
    if rc is None:
        return 137
    say(f"the agent exited with code {rc}")
    return 0 if rc in (0, EXIT_PREEMPTED) else rc


if __name__ == "__main__":
    sys.exit(main(CONFIG))
