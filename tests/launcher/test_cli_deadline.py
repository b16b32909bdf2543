"""`launch up --deadline/--estimate` and what `launch status` says about the deadline."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from launcher import daemon, state as st
from launcher.cli import cli
from launcher.deadline import parse_deadline
from launcher.jobs import deadline_options


def test_durations_and_times():
    now = 1_700_000_000.0
    assert parse_deadline("36h", now) == now + 36 * 3600
    assert parse_deadline("2d", now) == now + 2 * 86400
    assert parse_deadline("2100-01-01T00:00+00:00", now) == 4102444800.0
    opts = deadline_options("90m", "1.5h", now)
    assert opts == {"deadline": now + 5400, "deadline_start": now, "estimate": 5400.0}
    assert deadline_options(None, None) == {}


@pytest.mark.parametrize("args,words", [
    (["--deadline", "soon"], "--deadline 'soon': expected a duration (36h, 2d) or a time"),
    (["--deadline", "2001-01-01T00:00"], "--deadline '2001-01-01T00:00': that time has passed"),
    (["--deadline", "0h"], "--deadline '0h': expected a duration like 36h"),
    (["--deadline", "2h", "--estimate", "lots"], "--estimate 'lots': expected a duration like 36h"),
    (["--estimate", "3h"], "--estimate needs --deadline"),
])
def test_bad_deadline_is_one_line_and_no_job(tmp_path, args, words):
    t = tmp_path / "t.yaml"
    t.write_text("run: echo\n")
    r = CliRunner().invoke(cli, ["up", str(t), *args, "-d"])
    assert r.exit_code == 1 and r.output.strip().splitlines() == [f"Error: {words}" + r.output.split(words)[1].rstrip()]
    assert "Traceback" not in r.output
    assert json.loads(CliRunner().invoke(cli, ["status", "--json"]).output) == []


def test_status_shows_deadline_projection_and_why():
    state = st.State()
    now = time.time()
    job = state.create_job(name="t", task_path=None, task_yaml="run: echo\n", infra="fake", store_uri="",
                           options={"deadline": now + 7200, "deadline_start": now})
    state.set_job(job.id, options={**job.options, "deadline_status": {
        "mode": "on_demand", "reason": "no spot and behind the progress line (10 min done, line at 12 min)",
        "deadline": now + 7200, "projected_finish": now + 9000, "at": now}})
    state.transition(job.id, st.RECOVERING, "test")
    lock = daemon.acquire_lock(job.id)  # stands for its live supervisor: nothing to restart
    r = CliRunner().invoke(cli, ["status", str(job.id)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("deadline: "))
    assert "projected finish" in lines[i] and lines[i].endswith("(late)")
    assert lines[i + 1] == "  on demand: no spot and behind the progress line (10 min done, line at 12 min)"
    doc = json.loads(CliRunner().invoke(cli, ["status", str(job.id), "--json"]).output)[0]
    assert doc["deadline"]["status"]["mode"] == "on_demand"
    state.transition(job.id, st.SUCCEEDED, "test")
    lock.close()
    r = CliRunner().invoke(cli, ["status", str(job.id)])
    assert next(line for line in r.output.splitlines() if line.startswith("deadline: ")).endswith(", in time")


def test_up_with_a_deadline_runs_on_spot_and_says_so(tmp_path):
    t = tmp_path / "toy.yaml"
    t.write_text("name: toy\nrun: python -m launcher.testing toy --steps 20 --step-time 0.05\n")
    r = subprocess.run([sys.executable, "-m", "launcher.cli", "up", str(t), "--deadline", "2h",
                        "--estimate", "10m"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "Deadline: " in r.stderr
    doc = json.loads(subprocess.run([sys.executable, "-m", "launcher.cli", "status", "1", "--json"],
                                    capture_output=True, text=True, timeout=60).stdout)[0]
    assert doc["state"] == "SUCCEEDED"
    assert [(a["infra"], a["mode"]) for a in doc["attempts"]] == [("local", "spot")]
    assert doc["deadline"]["status"]["mode"] == "spot"
