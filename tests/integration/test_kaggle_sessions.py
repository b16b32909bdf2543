"""Kaggle, end to end through `launch up --infra kaggle`: the real kaggle SDK against an HTTP fake
of the Kaggle API (``fake_kaggle.py``) that runs each pushed kernel as a local "session" and ends
it at a limit of a few seconds; checkpoints go through a real S3 server (SeaweedFS).

- A toy job needs three or more sessions: the first stops at its deadline (checkpoint, exit 75),
  the second is killed by the platform with no exit code, later ones resume; the final digest
  equals an uninterrupted run's, with no hand action and no two sessions at once.
- No credential (the S3 secret key, the Kaggle key) shows in a pushed kernel, a session's log,
  the store, the launcher's state folder or the process list.
- `launch down` mid-session stops the kernel through the store.

The user attached the store's keys to the task's kernel (``launchuser/launch-toy``) in an earlier
run; ``test_kaggle_service.py`` starts from a kernel with nothing attached.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from launcher import contract
from launcher.testing import load_by_path, toy_digest

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent


fake_kaggle = load_by_path(HERE / "fake_kaggle.py")

LIMIT, MARGIN = 12, 4  # seconds: the run stops 8 s into a session
KERNEL = "launchuser/launch-toy"
STORE_KEYS = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]


class Launch:
    """`python -m launcher.cli` in a subprocess with one environment, its outputs kept."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.outputs: list[str] = []

    def __enter__(self) -> Launch:
        return self

    def __exit__(self, *exc) -> None:
        """A test that failed half-way leaves no supervisor behind (down is quiet on ended jobs)."""
        self("down", "1", check=False)

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, "-m", "launcher.cli", *args], env=self.env, text=True,
                           capture_output=True, timeout=timeout)
        self.outputs.append(r.stdout + r.stderr)
        if check:
            assert r.returncode == 0, f"launch {args} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        return r

    def job(self, job_id: str = "1") -> dict:
        return json.loads(self("status", job_id, "--json").stdout)[0]

    def wait(self, job_id: str = "1", timeout: float = 240, until=None) -> dict:
        until = until or (lambda d: d["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"))
        end = time.monotonic() + timeout
        while True:
            d = self.job(job_id)
            if until(d) or time.monotonic() > end:
                return d
            time.sleep(1.0)


class PsSampler(threading.Thread):
    """Every command line on the machine, sampled every 0.3 s while the job runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            self.seen.update(out.splitlines())
            self.stop.wait(0.3)


def launch_env(tmp_path: Path, s3_server, kaggle, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAGGLE_", "LAUNCH_", "AWS_"))}
    env.update(s3_server.env())
    env.update(kaggle.env())
    env.update({"LAUNCH_HOME": str(tmp_path / "launch-home"),
                "LAUNCH_KAGGLE_SESSION_LIMIT": str(LIMIT), "LAUNCH_KAGGLE_MARGIN": str(MARGIN),
                "LAUNCH_KAGGLE_POLL_INTERVAL": "0.5", "LAUNCH_KAGGLE_CONTROL_INTERVAL": "0.5",
                "LAUNCH_KAGGLE_START_GRACE": "3", "LAUNCH_KAGGLE_LOG_INTERVAL": "1", **extra})
    return env


def toy_task(tmp_path: Path, steps: int, step_time: float = 0.2) -> Path:
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    (workdir / "notes.txt").write_text("the workdir travels as a bundle through the store\n")
    task = tmp_path / "toy.yaml"
    task.write_text(f"""\
name: toy
workdir: {workdir}
run: |
  test -f notes.txt
  python -m launcher.testing toy --steps {steps} --step-time {step_time}
""")
    return task


def store_objects(s3_server, bucket: str) -> dict[str, bytes]:
    client = s3_server.client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_toy_job_completes_across_three_sessions(tmp_path, s3_server):
    # 80 steps of 0.2 s: more than two sessions can do however fast the machine (the first runs
    # at most 9 s, until the notice; the second is cut by the platform at 6 s, before its
    # deadline, so it leaves no exit code).
    steps = 80
    bucket = s3_server.make_bucket()
    secrets = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    # The first session is the check that the secrets are attached, then the runs' sessions.
    with fake_kaggle.FakeKaggle(tmp_path / "kaggle", secrets=secrets, limits=[LIMIT, LIMIT, 6, LIMIT],
                                attached={KERNEL: STORE_KEYS}) as kaggle, \
            Launch(launch_env(tmp_path, s3_server, kaggle)) as launch:
        ps = PsSampler()
        ps.start()
        t0 = time.monotonic()
        try:
            launch("up", str(toy_task(tmp_path, steps)), "--infra", "kaggle", "--store", f"s3://{bucket}/runs", "-d")
            job = launch.wait(timeout=300)
            kaggle.wait_idle(timeout=30)
        finally:
            ps.stop.set()
            ps.join()
        elapsed = time.monotonic() - t0
        logs = launch("logs", "1").stdout

        attempts = job["attempts"]
        summary = [(a["number"], a["state"], a["exit_code"], a["reason"]) for a in attempts]
        assert job["state"] == "SUCCEEDED", (summary, logs[-3000:], kaggle.session_logs()[-3000:])
        assert len(attempts) >= 3, summary
        assert [a["state"] for a in attempts[:-1]] == ["PREEMPTED"] * (len(attempts) - 1), summary
        assert attempts[0]["exit_code"] == contract.EXIT_PREEMPTED, summary  # stopped at its deadline
        assert attempts[1]["exit_code"] is None and "session ended" in attempts[1]["reason"], summary
        assert attempts[-1]["state"] == "SUCCEEDED"
        # First a CPU check that the secrets are attached (this machine had not seen them), then
        # one GPU session per attempt: versions of the one kernel of the task.
        check, *runs = kaggle.sessions
        assert check.accelerator == "cpu" and check.status == "complete" and not kaggle.overlaps
        assert len(runs) == len(attempts) and all(s.accelerator == "gpu" for s in runs)
        assert all(b["isPrivate"] and b["enableInternet"] for b in kaggle.pushes)
        assert [s.version for s in kaggle.sessions] == list(range(1, len(attempts) + 2))
        assert {s.kernel for s in kaggle.sessions} == {KERNEL}
        for s in kaggle.sessions:  # the store keys came from the user's Kaggle secrets, by name
            assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(s.secrets_read)
        assert "resuming from checkpoint" in logs and "done: final digest" in logs

        objects = store_objects(s3_server, bucket)
        prefix = f"runs/{job['run_id']}/"
        assert prefix + contract.DONE_NAME in objects
        assert any(k.startswith(prefix + "code/workdir-") for k in objects)
        assert any(k.startswith(prefix + "code/launcher-") for k in objects)
        final = max(k for k in objects if k.startswith(prefix + "ckpt/") and k.endswith("/state.json"))
        assert json.loads(objects[final]) == {"step": steps, "digest": toy_digest(steps, tmp_path / "ref")}

        # No credential anywhere it could leak.
        creds = {"S3 secret key": s3_server.secret_key, "Kaggle key": kaggle.key}
        places = {"pushed kernel sources": "\n".join(b["text"] for b in kaggle.pushes),
                  "Kaggle API requests": b"\n".join(body for _, body in kaggle.requests).decode(errors="replace"),
                  "session logs": kaggle.session_logs(),
                  "process list": "\n".join(ps.seen),
                  "launch outputs": "\n".join(launch.outputs)}
        places.update({f"store {k}": v.decode(errors="replace") for k, v in objects.items()})
        places.update({f"state {k}": v.decode(errors="replace") for k, v in files_under(tmp_path / "launch-home").items()})
        for what, secret in creds.items():
            leaks = [where for where, text in places.items() if secret in text]
            assert not leaks, f"{what} found in {leaks}"
        assert len(ps.seen) > 10 and any("launcher.agent" in line for line in ps.seen)
        print(f"\n{len(attempts)} sessions in {elapsed:.0f} s: {summary}")


def test_launch_down_stops_the_running_kernel(tmp_path, s3_server):
    bucket = s3_server.make_bucket()
    secrets = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    with fake_kaggle.FakeKaggle(tmp_path / "kaggle", secrets=secrets, limits=60, attached={KERNEL: STORE_KEYS}) as kaggle, \
            Launch(launch_env(tmp_path, s3_server, kaggle, LAUNCH_KAGGLE_SESSION_LIMIT="60")) as launch:
        launch("up", str(toy_task(tmp_path, steps=1000)), "--infra", "kaggle", "--store", f"s3://{bucket}/runs", "-d")
        launch.wait(timeout=120, until=lambda d: (d["progress"] or {}).get("step", 0) >= 3)
        launch("down", "1")
        assert launch.job()["state"] == "CANCELLED"
        kaggle.wait_idle(timeout=30)  # the kernel saw "cancel" in the store and stopped the run
        assert [(s.accelerator, s.status) for s in kaggle.sessions] == [("cpu", "complete"), ("gpu", "complete")]
        objects = store_objects(s3_server, bucket)
        run_id = launch.job()["run_id"]
        assert objects[f"runs/{run_id}/logs/attempt-1.exit"] == str(contract.EXIT_PREEMPTED).encode()
        launch("down", "1")  # twice is quiet
