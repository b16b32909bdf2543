"""The agent on its own, with the toy trainer and a file:// store."""

from __future__ import annotations

import json
import signal
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


def start_agent(tmp_path, attempt=1, run=TOY, drill="", arm=()):
    """The agent in its own process, not waited for; ``arm`` names pause points to arm first."""
    store_uri = (tmp_path / "store").as_uri()
    d = tmp_path / f"attempt-{attempt}"
    spec = {"job_id": "job-1", "attempt": attempt, "run": run, "envs": {}, "store_uri": store_uri,
            "sync_interval": 0.2, "drill": drill}
    agent.write_attempt_files(d, spec, {})
    (d / "hooks").mkdir(parents=True, exist_ok=True)
    for phase in arm:
        (d / "hooks" / f"armed-{phase}").write_text("test")
    proc = subprocess.Popen([sys.executable, "-m", "launcher.agent", str(d / agent.SPEC_NAME)])
    return proc, d, open_store(store_uri)


def notice_at(proc, d, phase):
    """Wait until the agent pauses at ``phase``, give it the notice there, then let it go on."""
    at = d / "hooks" / f"at-{phase}"
    wait_for(at.exists, timeout=120, what=f"the agent to reach {phase}")
    proc.send_signal(signal.SIGTERM)
    at.unlink()
    return proc.wait(timeout=120)


def test_a_notice_during_the_download_ends_in_exit_75_before_the_run(tmp_path):
    run_agent(tmp_path, run=TOY.replace("--steps 5", "--steps 2"))
    proc, d, store = start_agent(tmp_path, attempt=2, arm=("download",))
    assert notice_at(proc, d, "download") == contract.EXIT_PREEMPTED
    assert (d / agent.EXIT_CODE_NAME).read_text() == "75"
    assert "run started" not in (d / agent.LOG_NAME).read_text()


def test_a_notice_during_an_upload_ends_in_a_save_and_exit_75(tmp_path):
    proc, d, store = start_agent(tmp_path, run=TOY.replace("--steps 5 --step-time 0.01", "--steps 200 --step-time 0.02"),
                                 arm=("upload",))
    wait_for(lambda: (d / "hooks" / "at-upload").exists(), timeout=120, what="an upload")
    paused_at = int((d / "hooks" / "at-upload").read_text().split()[-1])
    assert notice_at(proc, d, "upload") == contract.EXIT_PREEMPTED
    log = (d / agent.LOG_NAME).read_text()
    saved = int(log.split("notice: saved step ")[1].split(",")[0])
    assert saved > paused_at and store.exists(f"ckpt/{contract.step_dirname(saved)}/MANIFEST.json")
    assert not store.exists(contract.DONE_NAME)


def test_a_notice_during_the_interpreters_start_up_is_not_lost(tmp_path):
    from launcher.backends.base import ProvisionRequest, RunSpec
    from launcher.backends.local.backend import LocalBackend

    backend = LocalBackend(root=tmp_path / "runs")
    handle = backend.provision(ProvisionRequest("job-1", 1, "local"))
    backend.start_run(handle, RunSpec(job_id="job-1", attempt=1, run=TOY, store_uri=(tmp_path / "store").as_uri()))
    backend.signal(handle, "term")  # at once: the agent's interpreter is still starting
    status = wait_for(lambda: (s := backend.poll(handle)).done and s, timeout=120, what="the attempt to end")
    assert status.exit_code == contract.EXIT_PREEMPTED, status


def test_the_agent_fires_a_share_drill_inside_the_training_and_records_it(tmp_path):
    proc, d, store = start_agent(tmp_path, run=TOY.replace("--steps 5 --step-time 0.01", "--steps 40 --step-time 0.05"),
                                 drill="kill@50%")
    assert proc.wait(timeout=120) == -signal.SIGKILL  # a machine that vanished: no exit code
    assert not (d / agent.EXIT_CODE_NAME).exists()
    fired = json.loads(store.get_bytes("logs/" + contract.drill_name(1)))
    assert fired["drill"] == "kill@50%" and 20 <= fired["step"] < 40
    assert not store.exists(contract.DONE_NAME)


def test_a_term_drill_mid_upload_saves_and_exits_75(tmp_path):
    proc, d, store = start_agent(tmp_path, run=TOY.replace("--steps 5 --step-time 0.01", "--steps 40 --step-time 0.05"),
                                 drill="term@25%:upload")
    assert proc.wait(timeout=120) == contract.EXIT_PREEMPTED
    fired = json.loads(store.get_bytes("logs/" + contract.drill_name(1)))
    assert fired["phase"] == "upload" and 10 <= fired["step"] < 40
    assert "notice: saved step" in (d / agent.LOG_NAME).read_text()


def test_a_drill_that_comes_due_only_at_the_end_never_fires(tmp_path):
    proc, d, store = start_agent(tmp_path, run=TOY.replace("--steps 5 --step-time 0.01", "--steps 10 --step-time 0.05"),
                                 drill="kill@99%")
    assert proc.wait(timeout=120) == 0 and store.exists(contract.DONE_NAME)
    assert not store.exists("logs/" + contract.drill_name(1))


def test_a_drill_that_goes_wrong_is_dropped_and_the_run_goes_on(tmp_path):
    bad = """echo '{"step": "x", "total_steps": 10}' > "$LAUNCH_OUTPUT_DIR/metrics.jsonl"; sleep 1"""
    proc, d, store = start_agent(tmp_path, run=bad, drill="kill@10%:save")
    assert proc.wait(timeout=120) == 0 and store.exists(contract.DONE_NAME)
    assert "fire drill kill@10%:save dropped: ValueError(" in (d / agent.LOG_NAME).read_text()
    assert not list((d / "hooks").iterdir())


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
        status_file = d / agent.STORE_STATUS_NAME  # written atomically, once the store is found away
        status_doc = lambda: json.loads(status_file.read_text()) if status_file.exists() else {}  # noqa: E731
        # "run exited" is said before the final sync holds the last step: wait for the status.
        wait_for(lambda: "run exited with code 0" in log() and 6 in status_doc().get("queued", []),
                 60, "the run's end with step 6 queued")
        assert "store unreachable" in log()
        status = status_doc()
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


def test_killpg_reaches_processes_that_left_the_group(tmp_path):
    """torchrun starts its workers in sessions of their own: a kill of the run's group (a machine
    lost in a drill) must take them along."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from launcher.agent import killpg

    pidfile = tmp_path / "child.pid"
    script = (f"{sys.executable} -c \"import os, time; os.setsid(); open('{pidfile}', 'w').write(str(os.getpid())); "
              f"time.sleep(60)\" & wait")
    run = subprocess.Popen(["bash", "-c", script], start_new_session=True)
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pidfile.read_text())
    assert os.getpgid(child) != run.pid  # it left the group
    killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{child}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    break  # dead, not yet reaped by its new parent
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"process {child} outside the group survived the kill")
