"""`launch status` with what the supervisor watched: the last GPU sample, steps/s, alerts; the live
table; and none of the watching libraries imported by `launch --help` or `launch status`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from launcher import daemon, state as st
from launcher.cli import cli
from launcher.watch.monitor import summary_path

HEAVY = ("apprise", "matplotlib", "pynvml", "rich", "psutil")


@pytest.fixture
def held():
    """Supervisor locks held by the test, so `launch status` restarts no supervisor."""
    locks = []
    yield locks
    for f in locks:
        f.close()


def job_with_summary(held):
    state = st.State()
    job = state.create_job(name="qs", task_path=None, task_yaml="run: x", infra="local", store_uri="", options={})
    held.append(daemon.acquire_lock(job.id))
    state.add_attempt(job.id, host="h1")
    state.transition(job.id, st.RUNNING, "attempt 1 on h1")
    sample = {"ts": time.time() - 12, "attempt": 1, "cpu_percent": 99.0, "rss_mb": 2048.0,
              "gpus": [{"index": 0, "name": "NVIDIA A100-SXM4-80GB", "util": 97, "mem_used_mb": 30720.0,
                        "mem_total_mb": 81920.0, "temp_c": 71, "power_w": 301.2}]}
    path = summary_path(job.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"attempt": 1, "steps_per_s": 2.5, "gpu": sample, "alerts": ["hot:0"],
                                "stall_after_s": 300.0}))
    return state, job


def test_status_of_a_job_shows_its_gpu_and_throughput(held):
    state, job = job_with_summary(held)
    r = CliRunner().invoke(cli, ["status", str(job.id)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "throughput: 2.50 steps/s" in r.output
    assert "machine: GPU0 A100-SXM4-80GB 97% 30.0/80.0 GiB 71°C 301W; CPU 99%; RSS 2.0 GiB (1" in r.output
    assert "alerts: hot:0" in r.output
    (doc,) = json.loads(CliRunner().invoke(cli, ["status", "--json"]).output)
    assert doc["watch"]["steps_per_s"] == 2.5


def test_live_table_ends_when_the_jobs_end(held):
    state, job = job_with_summary(held)
    state.transition(job.id, st.SUCCEEDED, "run exited 0")
    r = CliRunner().invoke(cli, ["status", "-w"], catch_exceptions=False, env={"COLUMNS": "200"})
    assert r.exit_code == 0
    assert "SUCCEEDED" in r.output and "qs" in r.output and "RATE" in r.output


@pytest.mark.parametrize("argv", [["--help"], ["status"], ["status", "1"], ["status", "--json"], ["up", "--help"]])
def test_help_and_status_import_no_watching_library(argv, tmp_path, held):
    job_with_summary(held)
    out = tmp_path / "modules.json"
    code = ("import atexit, json, sys; path = sys.argv[1]; atexit.register(lambda: open(path, 'w').write("
            "json.dumps(sorted(sys.modules)))); from launcher.cli import main; "
            "sys.argv = ['launch'] + sys.argv[2:]; main()")
    r = subprocess.run([sys.executable, "-c", code, str(out), *argv], capture_output=True, text=True,
                       env=os.environ.copy(), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    loaded = {m.split(".")[0] for m in json.loads(out.read_text())}
    assert "launcher" in loaded and "click" in loaded  # the check itself sees imports
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
