"""The local backend end to end with real processes and the toy trainer (no torch): the CLI,
a detached supervisor, the agent, the file store, fire drills, a dead supervisor, launch down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import state as st
from launcher.testing import wait_for

LAUNCH = [sys.executable, "-m", "launcher.cli"]


def launch(*args, check=True, timeout=120):
    r = subprocess.run([*LAUNCH, *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"launch {' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture
def toy_task(tmp_path):
    p = tmp_path / "toy.yaml"
    p.write_text("name: toy\nenvs:\n  STEPS: '40'\n  SECRET_SHOWN: 'no'\nsecrets:\n  TOY_TOKEN: s3cr3t-v4lue\n"
                 "run: python -m launcher.testing toy --steps $STEPS --step-time 0.1\n")
    return p


def final_digest(job_id: int) -> str:
    out = launch("logs", str(job_id)).stdout
    lines = [l for l in out.splitlines() if l.startswith("done: final digest")]
    assert lines, out
    return lines[-1].split()[-1]


def status(job_id: int) -> dict:
    return json.loads(launch("status", str(job_id), "--json").stdout)[0]


def test_fire_drills_resume_to_the_same_result(toy_task):
    r = launch("up", str(toy_task), timeout=180)
    clean = final_digest(1)
    r = launch("up", str(toy_task), "--chaos", "term@1.5s,kill@3s", timeout=180)
    assert "Job 2 SUCCEEDED after 3 attempt(s) (2 preempted)" in r.stderr
    s = status(2)
    assert [a["state"] for a in s["attempts"]] == ["PREEMPTED", "PREEMPTED", "SUCCEEDED"]
    assert "fire drill term" in s["attempts"][0]["reason"]
    assert "fire drill kill" in s["attempts"][1]["reason"]
    assert final_digest(2) == clean
    logs = launch("logs", "2").stdout
    assert logs.count("===== attempt") == 3 and "resumed at step" in logs


def test_user_error_fails_the_job_with_exit_1(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("run: python -m launcher.testing toy --steps 5 --step-time 0.01 --fail-at 2\n")
    r = launch("up", str(p), check=False, timeout=120)
    assert r.returncode == 1
    s = status(1)
    assert s["state"] == "FAILED" and s["attempts"][0]["exit_code"] == 1


def test_dead_supervisor_is_restarted_and_reattaches(toy_task):
    launch("up", str(toy_task), "-d", "--env", "STEPS=60")
    state = st.State()
    wait_for(lambda: state.attempts(1) and state.attempts(1)[0].state == "RUNNING", what="attempt 1 running")
    pid = state.job(1).supervisor_pid
    os.kill(pid, signal.SIGKILL)
    r = launch("status")  # any launch command restarts it
    assert "restarted the supervisor of job 1" in r.stderr
    wait_for(lambda: state.job(1).terminal, timeout=120, what="job end")
    s = status(1)
    assert s["state"] == "SUCCEEDED"
    assert len(s["attempts"]) == 1  # re-attached to the running attempt: nothing relaunched


def test_down_stops_every_process_and_no_secret_is_stored(toy_task, launch_home):
    launch("up", str(toy_task), "-d", "--env", "STEPS=1000")
    state = st.State()
    wait_for(lambda: state.attempts(1) and state.attempts(1)[0].state == "RUNNING", what="running")
    handle = state.attempts(1)[0].handle
    r = launch("down", "1")
    assert "Job 1 CANCELLED" in r.stderr
    assert status(1)["attempts"][0]["state"] == "CANCELLED"
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    assert handle["attempt_dir"] not in ps and "launcher.testing toy --steps 1000" not in ps
    # The task's secret reached the run (through a 0600 file) but is stored nowhere.
    for path in Path(launch_home).rglob("*"):
        if path.is_file():
            assert b"s3cr3t-v4lue" not in path.read_bytes(), path
    assert "s3cr3t-v4lue" not in ps


def test_down_twice_is_quiet(toy_task):
    launch("up", str(toy_task), "-d", "--env", "STEPS=1000")
    launch("down", "1")
    r = launch("down", "1")
    assert "Job 1 CANCELLED" in r.stderr


def test_an_agent_forked_but_not_yet_execed_is_running_not_lost(tmp_path):
    """Between fork and exec the agent's process still shows its parent's command line (under
    load this lasts long enough for a poll): its start time says it is ours."""
    from launcher.backends.local import backend as local

    me = os.getpid()  # a process whose command line is not the agent's, as a child before exec
    handle = {"attempt_dir": str(tmp_path), "agent_pid": me, "agent_started": local._start_time(me)}
    assert local.LocalBackend(root=tmp_path).poll(handle).state == local.RunState.RUNNING
    handle["agent_started"] += 1  # another process that got the same pid later
    assert local.LocalBackend(root=tmp_path).poll(handle).state == local.RunState.PREEMPTED
