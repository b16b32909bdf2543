"""The quickstart trainer on the fake Kaggle (see ``fake_kaggle.py``): sessions of 40 s,
the first stopped by the trainer's harness at ``LAUNCH_DEADLINE`` with a checkpoint, the second cut
by the platform with no notice; three or more carry the job, and the final ``state.pt`` equals an
uninterrupted run's, tensor for tensor."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from launcher import contract
from launcher.testing import load_by_path, run_uninterrupted
from trainers.common.testing import assert_states_equal

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# 40 steps of a tiny CNN, each padded to >= 1.2 s by --step-sleep (numerics unchanged): more than
# the first two sessions can do however fast the machine (the first session's run stops 35 s after
# it starts, the second is cut by the platform at 10 s: at most 29 + 8 steps; with 30 steps a quiet
# machine finished in the second session). A session is long next to the trainer's
# start-up (torch's import: 3 s idle, 10-15 s on a loaded machine), so that a slow machine still
# needs only a few sessions: from the third one on, each short preemption doubles the supervisor's
# back-off (5, 10, 20, 40 s ...): 25-s sessions took 5 on a loaded machine, and at 8 the back-off
# alone is 5 min. Here a loaded machine needs 3 to 5, one at load 14 on 2 cores 7.
FLAGS = ("--epochs 4 --num-samples 800 --batch-size 64 --width 8 --image-size 16 --ckpt-every 2 "
         "--no-plot --log-every 2")  # progress (the wait's bound) moves every 2 steps


fake_kaggle = load_by_path(HERE / "fake_kaggle.py")
# The wait is bounded by progress, not by a total time (which the back-off above makes grow fast
# with the load): the job fails the test when its step stops moving for longer than the longest
# back-off (300 s) and a session, or when it takes more sessions than a loaded machine needs.
STALL, MAX_SESSIONS = 360, 8


def launch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "launcher.cli", *args], env=env, text=True,
                       capture_output=True, timeout=120)
    assert r.returncode == 0, f"launch {args} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def uninterrupted_state(tmp_path: Path) -> dict:
    ckpt, _ = run_uninterrupted([sys.executable, "-m", "trainers.quickstart", *FLAGS.split()], tmp_path / "ref",
                                cwd=REPO, timeout=300)
    _, path, _ = contract.latest_checkpoint(ckpt)
    return torch.load(path / "state.pt", map_location="cpu", weights_only=True)


def test_quickstart_resumes_bit_exactly_across_sessions(tmp_path, s3_server):
    bucket = s3_server.make_bucket()
    secrets = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    task = tmp_path / "qs.yaml"
    task.write_text(f"""\
name: qs
workdir: {REPO}
run: |
  python -m trainers.quickstart {FLAGS} --step-sleep 1.2
""")
    # The first session is the check that the secrets are attached, then the runs' sessions.
    with fake_kaggle.FakeKaggle(tmp_path / "kaggle", secrets=secrets, limits=[40, 40, 10, 40],
                                attached={"launchuser/launch-qs": list(secrets)}) as kaggle:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAGGLE_", "LAUNCH_", "AWS_"))}
        env.update({**s3_server.env(), **kaggle.env(), "LAUNCH_HOME": str(tmp_path / "home"),
                    "LAUNCH_KAGGLE_SESSION_LIMIT": "40", "LAUNCH_KAGGLE_MARGIN": "5",
                    "LAUNCH_KAGGLE_POLL_INTERVAL": "0.5", "LAUNCH_KAGGLE_CONTROL_INTERVAL": "0.5",
                    "LAUNCH_KAGGLE_START_GRACE": "3"})
        t0 = time.monotonic()
        launch(env, "up", str(task), "--infra", "kaggle", "--store", f"s3://{bucket}/runs", "-d")
        step, moved = -1, t0
        try:
            while True:
                job = json.loads(launch(env, "status", "1", "--json").stdout)[0]
                if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
                    break
                now = time.monotonic()
                if (job["progress"] or {}).get("step", 0) > step:
                    step, moved = (job["progress"] or {}).get("step", 0), now
                assert now - moved < STALL and len(job["attempts"]) <= MAX_SESSIONS, \
                    ([(a["number"], a["state"], a["reason"]) for a in job["attempts"]], step)
                time.sleep(2)
        finally:
            launch(env, "down", "1")  # quiet once the job ended; else no supervisor is left behind
        kaggle.wait_idle(timeout=30)
        summary = [(a["number"], a["state"], a["exit_code"], a["reason"]) for a in job["attempts"]]
        assert job["state"] == "SUCCEEDED", (summary, kaggle.session_logs()[-4000:])
        assert len(job["attempts"]) >= 3 and not kaggle.overlaps, summary
        assert job["attempts"][0]["exit_code"] == contract.EXIT_PREEMPTED, summary
        assert job["attempts"][1]["exit_code"] is None, summary  # cut with no notice
        assert "deadline: checkpoint of step" in kaggle.session_logs()  # the harness stopped itself
        print(f"\n{len(summary)} sessions in {time.monotonic() - t0:.0f} s: {summary}")

    client = s3_server.client()
    prefix = f"runs/{job['run_id']}/"
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix + "ckpt/")["Contents"]]
    final = max(k for k in keys if k.endswith("/state.pt"))
    got = torch.load(io.BytesIO(client.get_object(Bucket=bucket, Key=final)["Body"].read()),
                     map_location="cpu", weights_only=True)
    want = uninterrupted_state(tmp_path)
    assert_states_equal(want["model"], got["model"], "model")
    assert_states_equal(want["optimizer"], got["optimizer"], "optimizer")
    assert_states_equal(want, got)
