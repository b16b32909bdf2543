"""Watching a job end to end through `launch up` on the local default: a trainer that hangs
(alive, no new step) is found within the stall time, killed, relaunched, resumes from its
checkpoint and ends SUCCEEDED; a JSON webhook (apprise's json://, to an HTTP server started
here) receives the alert and the success, each naming the job, the attempt and the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import contract
from launcher.testing import load_by_path

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
Webhook = load_by_path(REPO / "tests" / "launcher" / "watch" / "webhook.py", "watch_webhook").Webhook
SECRET = "hook-tok-81c2e7"


def launch(*args, env=None, timeout=600, ok=True):
    r = subprocess.run([sys.executable, "-m", "launcher.cli", *args], capture_output=True, text=True,
                       timeout=timeout, env=env)
    if ok:
        assert r.returncode == 0, f"launch {args} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_a_hung_run_is_relaunched_and_resumes(tmp_path):
    task = tmp_path / "hang.yaml"
    task.write_text(f"""\
name: hang
workdir: {REPO}
run: python -m launcher.testing toy --steps 16 --step-time 0.3 --hang-at 8
""")
    with Webhook() as hook:
        r = launch("up", str(task), "--stall-after", "15s", "--notify", hook.url(SECRET),
                   "--notify-on", "alert,recovered,succeeded")
        got = hook.wait_for(lambda rs: any(m["title"].endswith("succeeded") for m in rs))
    (job,) = json.loads(launch("status", "--json").stdout)
    assert job["state"] == "SUCCEEDED", r.stderr[-2000:]
    first, second = job["attempts"]
    assert first["state"] == "STALLED" and "no training progress for" in first["reason"], first
    assert second["state"] == "SUCCEEDED"
    # Found within the stall time plus the store's sync and the progress read (5 s + 10 s).
    assert first["ended"] - first["started"] < 8 * 0.3 + 15 + 5 + 10 + 15, first
    logs = launch("logs", str(job["id"])).stdout
    assert "hanging at step 8 on purpose" in logs and "resumed at step 8" in logs
    prefix = Path(job["store"][len("file://"):])
    assert (prefix / contract.DONE_NAME).exists()
    end = json.loads((prefix / "logs" / "attempt-1.end.json").read_text())
    assert end["state"] == "STALLED"
    # The webhook got the alert and the success, each naming the job, the attempt and the reason.
    by_event = {m["title"].split()[-1]: m for m in got}
    assert set(by_event) == {"alert", "recovered", "succeeded"}, got
    alert, done = by_event["alert"]["message"], by_event["succeeded"]["message"]
    assert f"job hang ({job['run_id']}), attempt 1" in alert and "reason: no training progress for" in alert
    assert f"job hang ({job['run_id']}), attempt 2" in done and "reason: run exited 0" in done
    # The URL is a secret: not in the state, the store, the supervisor's log or status --json.
    home = Path(os.environ["LAUNCH_HOME"])
    for p in [*home.rglob("*"), *prefix.rglob("*")]:
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p
    assert SECRET not in launch("status", "--json").stdout + r.stderr + r.stdout
    # `launch plot` tells the same story from the store alone.
    plot = json.loads(launch("plot", job["store"], "--json").stdout)
    assert [a["ended_as"] for a in plot["attempts"]] == ["stalled", "succeeded"]
    assert plot["attempts"][1]["resumed_step"] == 8 and plot["done"]
    launch("plot", str(job["id"]), "-o", str(tmp_path / "hang.png"))
    assert (tmp_path / "hang.png").stat().st_size > 10_000
