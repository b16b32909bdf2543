"""The housekeeping that runs on the host, run here the way the backend runs it there."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from launcher.backends.ssh.backend import HOSTSIDE


def hostside(request: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", HOSTSIDE.read_text()], input=json.dumps(request),
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def sleeper(env_dir: str | None = None, arg_dir: str | None = None) -> subprocess.Popen:
    env = {"LAUNCH_CHECKPOINT_DIR": f"{env_dir}/checkpoints"} if env_dir else {}
    args = [sys.executable, "-c", "import time; time.sleep(300)"] + ([f"{arg_dir}/spec.json"] if arg_dir else [])
    return subprocess.Popen(args, env=env, start_new_session=True)


def test_kill_takes_every_process_of_the_attempt_and_nothing_else(tmp_path):
    att, other = tmp_path / "attempt-1", tmp_path / "attempt-10"
    by_env, by_arg, bystander = sleeper(env_dir=str(att)), sleeper(arg_dir=str(att)), sleeper(env_dir=str(other))
    time.sleep(0.2)
    try:
        out = hostside({"action": "kill", "dir": str(att)})
        assert out["left"] == [] and out["killed"] >= 2
        assert by_env.wait(5) == -9 and by_arg.wait(5) == -9
        assert bystander.poll() is None
        assert hostside({"action": "kill", "dir": str(att)}) == {"killed": 0, "left": []}
    finally:
        bystander.kill()


def test_the_lease_file_is_taken_once_and_released_only_by_its_holder(tmp_path):
    path = str(tmp_path / "root" / "lease.json")
    mine = {"owner": "me", "job_id": "job-1", "attempt": 1}
    assert hostside({"action": "take_lease", "path": path, "doc": mine})["taken"]
    again = hostside({"action": "take_lease", "path": path, "doc": {**mine, "job_id": "job-2"}})
    assert not again["taken"] and again["current"]["job_id"] == "job-1"
    assert not hostside({"action": "release_lease", "path": path, "job_id": "job-2", "attempt": 1,
                         "owner": "me"})["released"]
    assert hostside({"action": "release_lease", "path": path, **mine})["released"]
    assert not hostside({"action": "release_lease", "path": path, **mine})["released"]


def test_a_forced_take_replaces_a_stale_lease(tmp_path):
    path = str(tmp_path / "lease.json")
    hostside({"action": "take_lease", "path": path, "doc": {"job_id": "old"}})
    assert hostside({"action": "take_lease", "path": path, "doc": {"job_id": "new"}, "force": True})["taken"]
    assert json.loads((tmp_path / "lease.json").read_text()) == {"job_id": "new"}


def test_cleanup_removes_the_secrets_and_the_lease(tmp_path):
    att = tmp_path / "attempt-1"
    att.mkdir()
    (att / "secrets.json").write_text("{}")
    lease = {"path": str(tmp_path / "lease.json"), "owner": "me", "job_id": "j", "attempt": 1}
    hostside({"action": "take_lease", "path": lease["path"], "doc": {k: lease[k] for k in ("owner", "job_id", "attempt")}})
    out = hostside({"action": "cleanup", "dir": str(att), "lease": lease})
    assert out["released"] and not (att / "secrets.json").exists() and not (tmp_path / "lease.json").exists()
    assert hostside({"action": "cleanup", "dir": str(att), "lease": lease})["released"] is False
