"""The agent on its own, with the toy trainer and a file:// store."""

from __future__ import annotations

import json
import subprocess
import sys

from launcher import agent, contract
from launcher.checkpoints import list_checkpoints
from launcher.store import open_store
from launcher.testing import wait_for

TOY = f"{sys.executable} -m launcher.testing toy --steps 5 --step-time 0.01"


def run_agent(tmp_path, attempt=1, envs=None, run=TOY):
    store_uri = (tmp_path / "store").as_uri()
    d = tmp_path / f"attempt-{attempt}-{(envs or {}).get('SKYPILOT_NODE_RANK', 0)}"
    spec = {"job_id": "job-1", "attempt": attempt, "run": run, "envs": envs or {},
            "store_uri": store_uri, "sync_interval": 0.2}
    agent.write_attempt_files(d, spec, {"TOY_SECRET": "xyz"})
    # In its own process: the agent installs signal handlers and becomes a subreaper.
    rc = subprocess.run([sys.executable, "-m", "launcher.agent", str(d / agent.SPEC_NAME)], timeout=120).returncode
    return rc, d, open_store(store_uri)


def test_success_uploads_checkpoint_log_exit_code_and_done(tmp_path):
    rc, d, store = run_agent(tmp_path)
    assert rc == 0 and (d / agent.EXIT_CODE_NAME).read_text() == "0"
    assert store.exists(contract.DONE_NAME)
    assert store.get_bytes("logs/" + contract.exit_name(1)) == b"0"
    assert b"done: final digest" in store.get_bytes("logs/" + contract.log_name(1))
    assert store.exists("ckpt/step-00000005/MANIFEST.json")
    assert (d / agent.SECRETS_NAME).stat().st_mode & 0o077 == 0  # never readable by others


def test_second_attempt_resumes_from_the_store(tmp_path):
    run_agent(tmp_path, run=TOY.replace("--steps 5", "--steps 3"))
    rc, d, store = run_agent(tmp_path, attempt=2)
    log = (d / agent.LOG_NAME).read_text()
    assert rc == 0 and "resuming from checkpoint step 3" in log and "resumed at step 3" in log


def test_worker_nodes_upload_only_their_own_log(tmp_path):
    rc, d, store = run_agent(tmp_path, envs={"SKYPILOT_NODE_RANK": "1"})
    assert rc == 0
    assert store.exists("logs/attempt-1.rank-1.log")
    assert not store.exists(contract.DONE_NAME) and not store.exists("logs/attempt-1.log")
    assert not store.list("ckpt/")


def test_failed_run_reports_its_code(tmp_path):
    rc, d, store = run_agent(tmp_path, run="echo boom; exit 3")
    assert rc == 3 and not store.exists(contract.DONE_NAME)
    assert store.get_bytes("logs/" + contract.exit_name(1)) == b"3"


def test_spec_file_holds_no_secret(tmp_path):
    _, d, _ = run_agent(tmp_path)
    assert "xyz" not in (d / agent.SPEC_NAME).read_text()
    assert json.loads((d / agent.SECRETS_NAME).read_text()) == {"TOY_SECRET": "xyz"}


def test_a_store_that_is_away_holds_the_checkpoints_and_a_finished_run_waits_for_it(tmp_path):
    store_dir, away = tmp_path / "store", tmp_path / "store.away"
    toy = TOY.replace("--step-time 0.01", "--step-time 0.05")
    # Three steps with the store there, then it goes away (a file where its folder was) for three.
    run = f"{toy.replace('--steps 5', '--steps 3')} && sleep 1 && mv {store_dir} {away} && touch {store_dir} && " \
          f"{toy.replace('--steps 5', '--steps 6')}"
    d = tmp_path / "attempt-1"
    agent.write_attempt_files(d, {"job_id": "job-1", "attempt": 1, "run": run, "envs": {},
                                  "store_uri": store_dir.as_uri(), "sync_interval": 0.2}, {})
    proc = subprocess.Popen([sys.executable, "-m", "launcher.agent", str(d / agent.SPEC_NAME)])
    try:
        log = lambda: (d / agent.LOG_NAME).read_text() if (d / agent.LOG_NAME).exists() else ""  # noqa: E731
        wait_for(lambda: "run exited with code 0" in log() and "store unreachable" in log(), 60, "the run's end")
        status = json.loads((d / agent.STORE_STATUS_NAME).read_text())
        queued = status["queued"]  # a step superseded before the agent looked is skipped
        assert not status["reachable"] and queued[-1] == 6 and set(queued) <= {4, 5, 6}
        note = agent.store_note((d / agent.STORE_STATUS_NAME).read_text())
        assert "store unreachable since" in note
        assert f"{len(queued)} checkpoint(s) queued on the machine (step {', '.join(map(str, queued))})" in note
        assert proc.poll() is None  # waiting for the store, not given up
        store_dir.unlink()
        away.rename(store_dir)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    store = open_store(store_dir.as_uri())
    in_store = [c.step for c in list_checkpoints(store)]
    assert store.exists(contract.DONE_NAME) and in_store[0] == 6 and set(queued) <= set(in_store)
    assert "store reachable again" in log() and json.loads((d / agent.STORE_STATUS_NAME).read_text())["reachable"]
    assert agent.store_note((d / agent.STORE_STATUS_NAME).read_text()) == ""
    assert not list((d / agent.QUEUE_NAME).iterdir())
